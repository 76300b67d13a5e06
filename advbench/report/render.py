"""Render a grid as markdown, csv, latex (booktabs) or json: cells are text formatted once by the grid
(``9.00``, ``9.00 ± 0.50``), so every format prints the same digits."""

from __future__ import annotations

import json
import re

import pandas as pd

from advbench.report.latex import latex_table

FORMATS = ("markdown", "csv", "latex", "json")


def _align(column: pd.Series) -> str:
    """``right`` for a column of numbers (``85.60``, ``9.00 ± 0.50``, ``—``), else ``left``."""
    return "right" if all(re.match(r"^(-?\d|—$)", str(v)) for v in column) else "left"


def render(table: pd.DataFrame, fmt: str, caption: str = "", frame: pd.DataFrame | None = None) -> str:
    """Render ``table`` (and, for json, the tidy ``frame`` too) in ``fmt``."""
    if fmt == "markdown":
        # cells are already formatted text ("9.00"): tabulate must not parse them back into numbers ("9")
        body = (table.to_markdown(disable_numparse=True, colalign=("left", *map(_align, table.columns.map(table.get))))
                if not table.empty else "(no attack results found)")
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
