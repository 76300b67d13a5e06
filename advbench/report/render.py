"""Render a grid as markdown, csv, latex (booktabs) or json."""

from __future__ import annotations

import json

import pandas as pd

FORMATS = ("markdown", "csv", "latex", "json")


def _latex_escape(text: str) -> str:
    out = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        out = out.replace(a, b)
    return out.replace("±", r"$\pm$").replace("—", "--")


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular, ready to paste."""
    cols = [table.index.name or "", *map(str, table.columns)]
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
              " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for idx, row in table.iterrows():
        lines.append(" & ".join(_latex_escape(v) for v in [idx, *row.tolist()]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render(table: pd.DataFrame, fmt: str, caption: str = "", frame: pd.DataFrame | None = None) -> str:
    """Render ``table`` (and, for json, the tidy ``frame`` too) in ``fmt``."""
    if fmt == "markdown":
        body = table.to_markdown() if not table.empty else "(no attack results found)"
        return (f"{caption}\n\n" if caption else "") + body + "\n"
    if fmt == "csv":
        return table.to_csv()
    if fmt == "latex":
        return to_latex(table, caption)
    if fmt == "json":
        payload = {"caption": caption, "grid": json.loads(table.to_json(orient="split")) if not table.empty else {},
                   "rows": [] if frame is None else json.loads(frame.to_json(orient="records"))}
        return json.dumps(payload, indent=2) + "\n"
    raise ValueError(fmt)
