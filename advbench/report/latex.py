"""LaTeX output shared by the comparison grid and the paper grids: one escape, one booktabs table writer (and
its reader, for tests)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

#: characters LaTeX treats specially, and the Unicode symbols reports print (±, Δ, ℓ∞ ...) as math
_SPECIAL = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("{", r"\{"),
            ("}", r"\}"))
_SYMBOLS = (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("—", "--"), ("ℓ", r"$\ell$"), ("∞", r"$\infty$"),
            ("‖", r"$\|$"), ("∇", r"$\nabla$"), ("ω", r"$\omega$"), ("δ", r"$\delta$"))


def latex_escape(text: object) -> str:
    """``text`` safe inside a LaTeX table cell or caption (specials escaped first, then symbols as math)."""
    out = str(text)
    for a, b in _SPECIAL + _SYMBOLS:
        out = out.replace(a, b)
    return out


def latex_table(table: pd.DataFrame, caption: str = "", *, bold: dict[str, set[str]] | None = None,
                comments: Iterable[str] = ()) -> str:
    """A booktabs table of ``table`` (index = first column), ready to paste.

    ``bold``: column -> rows whose cell is set in ``\\textbf`` (only the text before `` / ``, the measured
    value of a paper grid cell); ``comments``: ``%`` lines after the table (a paper grid's notes).
    """
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in [table.index.name or "", *table.columns]) + r" \\", r"\midrule"]
    for idx, row in table.iterrows():
        cells = []
        for col, value in row.items():
            text = latex_escape(value)
            if bold and idx in bold.get(col, ()):
                head, sep, tail = text.partition(" / ")
                text = rf"\textbf{{{head}}}" + sep + tail
            cells.append(text)
        lines.append(" & ".join([latex_escape(idx), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += ["% " + c.replace("\n", " ") for c in comments]
    return "\n".join(lines) + "\n"


def parse_latex_numbers(text: str) -> list[list[float | None]]:
    """The first number of each body cell of :func:`latex_table` output, row by row (None for ``--``): the measured
    means of a paper grid (tests read a table back with it)."""
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    out = []
    for line in body.strip().splitlines():
        cells = line.rstrip().removesuffix(r"\\").split(" & ")[1:]
        row = []
        for cell in cells:
            head = cell.split(" / ")[0]
            m = re.search(r"-?\d+\.\d+", head)
            row.append(float(m.group()) if m else None)
        out.append(row)
    return out
