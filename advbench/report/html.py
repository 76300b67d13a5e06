"""A standalone HTML page: caption, the table and the plots (PNG embedded as base64)."""

from __future__ import annotations

import base64
import html as _html
from pathlib import Path

import pandas as pd

_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "th,td{border-bottom:1px solid #ccc;padding:4px 8px;text-align:right}"
          "th:first-child,td:first-child{text-align:left}caption{caption-side:top;text-align:left;padding:6px}"
          "img{max-width:100%;display:block;margin:1em 0}")


def html_page(caption: str, table: pd.DataFrame, notes: list[str] | None = None,
              plots: list[Path] | None = None, title: str = "advbench report") -> str:
    """Standalone page; cells may contain ``<b>`` marks for the best value, everything else is escaped."""
    head = "".join(f"<th>{_html.escape(str(c))}</th>" for c in [table.index.name or "", *table.columns])
    rows = []
    for idx, row in table.iterrows():
        cells = "".join(f"<td>{_cell(v)}</td>" for v in row.tolist())
        rows.append(f"<tr><td>{_html.escape(str(idx))}</td>{cells}</tr>")
    notes_html = "".join(f"<li>{_html.escape(n)}</li>" for n in notes or [])
    imgs = "".join(f'<img alt="{_html.escape(p.stem)}" src="data:image/png;base64,'
                   f'{base64.b64encode(Path(p).read_bytes()).decode()}">' for p in plots or [])
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{_html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<table><caption>{_html.escape(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n"
            + (f"<ul>{notes_html}</ul>\n" if notes_html else "") + imgs + "\n</body></html>\n")


def _cell(value: object) -> str:
    text = _html.escape(str(value))
    return text.replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")
