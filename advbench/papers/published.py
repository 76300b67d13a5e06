"""Published numbers of the seed papers (package data) and the printed layout of each table.

Every numeric CSV has the schema ``paper,table,dataset,architecture,norm,eps,defense,variant,metric,value,
unit,std,notes`` (see ``published/README`` in the specs). :func:`table_layout` turns one table into the
grid the paper printed: row labels, column labels (in print order) and the published cell at each place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import pandas as pd

from advbench.errors import UserError
from advbench.papers import paper_names

#: the discovered papers (see :mod:`advbench.papers`), sorted by name
PAPERS = paper_names()
_FIELDS = ("dataset", "architecture", "norm", "eps", "defense", "variant", "metric")
_ROW_FIELDS = ("dataset", "architecture", "defense", "variant")
_COL_FIELDS = ("metric", "eps", "norm")

#: tables whose printed column groups are datasets / architectures / radii rather than row blocks
_LAYOUT_OVERRIDES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("sat", "1"): (("defense", "variant"), ("dataset", "architecture", "metric", "eps")),
    ("sat", "2"): (("defense", "variant"), ("eps", "metric")),
    ("sat", "3"): (("defense", "variant"), ("dataset", "architecture", "eps", "metric")),
    ("randomized-at", "3"): (("defense", "variant"), ("dataset", "metric", "eps")),
    ("randomized-at", "4"): (("defense", "variant"), ("dataset", "metric", "eps")),
    ("randomized-at", "5"): (("defense", "variant"), ("architecture", "metric", "eps")),
}
#: fields dropped from a label when the remaining fields already determine it (e.g. eps fixed per metric)
_DROPPABLE = ("variant", "eps", "norm", "architecture")


def _data_dir():
    return resources.files("advbench.papers") / "published"


def table_id(name: str) -> str:
    """Normalise a table name: ``1``, ``table1``, ``2a``, ``2(a)`` -> ``1``, ``1``, ``2(a)``, ``2(a)``; an unnumbered
    table is named by a word (``roles``: SCORPIO's table of explanation roles)."""
    text = str(name).strip().lower().removeprefix("table").strip()
    if re.fullmatch(r"[a-z]{3,}", text):
        return text
    m = re.fullmatch(r"(\d+)\s*\(?([a-z])?\)?", text)
    if not m:
        raise UserError(f"invalid table '{name}'; write a number such as 1 or 2a")
    return m.group(1) + (f"({m.group(2)})" if m.group(2) else "")


def _file_stem(paper: str, table: str) -> str:
    return f"{paper}-table{table.replace('(', '').replace(')', '')}"


@cache
def published_tables() -> tuple[tuple[str, str], ...]:
    """Every numeric published table as (paper, table id), papers in :data:`PAPERS` order, tables numerically."""
    found = []
    for entry in _data_dir().iterdir():
        m = re.fullmatch(r"(.+)-table(\d+)([a-z]?)\.csv", entry.name)
        if not m or m.group(1) not in PAPERS:
            continue
        head = entry.read_text(encoding="utf-8").splitlines()[0]
        if "metric" not in head.split(","):
            continue  # non-numeric tables (SAT T4, SCORPIO roles)
        tid = m.group(2) + (f"({m.group(3)})" if m.group(3) else "")
        found.append((m.group(1), tid))
    return tuple(sorted(found, key=lambda pt: (PAPERS.index(pt[0]), int(re.match(r"\d+", pt[1]).group()), pt[1])))


@cache
def load_published(paper: str, table: str) -> pd.DataFrame:
    """The published CSV of one table (all columns as text; ``value``/``std`` also parsed into floats)."""
    tid = table_id(table)
    path = _data_dir() / f"{_file_stem(paper, tid)}.csv"
    if not path.is_file():
        known = ", ".join(f"{p}:{t}" for p, t in published_tables() if p == paper) or ", ".join(PAPERS)
        raise UserError(f"no published table {paper}:{table}; known: {known}")
    with path.open(encoding="utf-8") as fh:
        df = pd.read_csv(fh, dtype=str, keep_default_na=False)
    df["value_num"] = pd.to_numeric(df["value"], errors="coerce")
    df["std_num"] = pd.to_numeric(df["std"], errors="coerce")
    return df


@dataclass
class PublishedCell:
    """One printed cell: value (None when the paper prints a dash), std, unit and notes."""

    value: float | None
    std: float | None
    unit: str
    notes: str


@dataclass
class TableLayout:
    """Rows and columns of a table as printed, and the published cell at each (row, column)."""

    paper: str
    table: str
    rows: list[str]
    columns: list[str]
    row_fields: tuple[str, ...]
    col_fields: tuple[str, ...]
    cells: dict[tuple[str, str], PublishedCell] = field(default_factory=dict)
    row_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> {field: value}
    col_keys: dict[str, dict[str, str]] = field(default_factory=dict)


def _label(values: list[str]) -> str:
    return " / ".join(v for v in values if v)


def _reduce(df: pd.DataFrame, fields: tuple[str, ...], other: tuple[str, ...]) -> tuple[str, ...]:
    """Keep fields that vary; drop droppable ones that the others already determine."""
    kept = [f for f in fields if df[f].nunique() > 1]
    for f in _DROPPABLE:
        if f in kept and len(kept) > 1:
            trial = [k for k in kept if k != f]
            if df.groupby(trial).ngroups == df.groupby(kept).ngroups:
                kept = trial
    return tuple(kept)


@cache
def table_layout(paper: str, table: str) -> TableLayout:
    """The printed layout of ``paper`` table ``table`` from its published CSV."""
    tid = table_id(table)
    df = load_published(paper, tid)
    rf, cf = _LAYOUT_OVERRIDES.get((paper, tid), (_ROW_FIELDS, _COL_FIELDS))
    rf = _reduce(df, rf, cf) or ("defense",)
    cf = _reduce(df, cf, rf) or ("metric",)
    layout = TableLayout(paper, tid, [], [], rf, cf)
    for _, rec in df.iterrows():
        r = _label([rec[f] for f in rf])
        c = _label([rec[f] for f in cf])
        if r not in layout.row_keys:
            layout.rows.append(r)
            layout.row_keys[r] = {f: rec[f] for f in _FIELDS if f not in cf}
        if c not in layout.col_keys:
            layout.columns.append(c)
            layout.col_keys[c] = {f: rec[f] for f in cf}
        if (r, c) in layout.cells:
            raise ValueError(f"{paper}:{tid}: two published values for ({r}, {c})")
        val = rec["value_num"]
        std = rec["std_num"]
        layout.cells[(r, c)] = PublishedCell(None if pd.isna(val) else float(val),
                                             None if pd.isna(std) else float(std), rec["unit"], rec["notes"])
    return layout

