"""Render a grid as markdown, csv, latex (booktabs) or json."""

from __future__ import annotations

import json

import pandas as pd

from advbench.report.latex import latex_table

FORMATS = ("markdown", "csv", "latex", "json")


def render(table: pd.DataFrame, fmt: str, caption: str = "", frame: pd.DataFrame | None = None) -> str:
    """Render ``table`` (and, for json, the tidy ``frame`` too) in ``fmt``."""
    if fmt == "markdown":
        body = table.to_markdown() if not table.empty else "(no attack results found)"
        return (f"{caption}\n\n" if caption else "") + body + "\n"
    if fmt == "csv":
        return table.to_csv()
    if fmt == "latex":
        return latex_table(table, caption)
    if fmt == "json":
        payload = {"caption": caption, "grid": json.loads(table.to_json(orient="split")) if not table.empty else {},
                   "rows": [] if frame is None else json.loads(frame.to_json(orient="records"))}
        return json.dumps(payload, indent=2) + "\n"
    raise ValueError(fmt)
