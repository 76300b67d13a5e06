"""Typed recipes of the seed papers' tables: which runs a table needs and which attack fills each column.

A :class:`TableRecipe` maps the printed row labels of a table (from :func:`~advbench.papers.published.table_layout`)
to a defense with options (:class:`RowRecipe`) and the printed column labels to a suite entry
(:class:`ColumnRecipe`). ``paper`` scale keeps the paper's dataset, model, schedule, epochs, seeds and
test-set size; ``smoke`` scale shrinks them (see :data:`SMOKE`) so a whole grid runs in minutes on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from advbench.papers.published import published_tables, table_id, table_layout

Transform = Literal["acc", "error", "sum"]

#: what smoke scale changes (recorded in every run's paper.json and printed in the caption)
SMOKE: dict[str, Any] = {
    "model": "small-cnn", "epochs": 1, "n_train": 256, "batch_size": 64, "val_n": 32, "val_attack_steps": 3,
    "schedule": "constant", "n_eval": 32, "seeds": (0,), "synthetic_options": {"n_train": 600, "n_test": 64},
}


@dataclass(frozen=True)
class RowRecipe:
    """How to train one printed row: a registered defense, its options, and optional overrides."""

    defense: str
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # paper-scale model when the row's block differs from the table's
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides for this row
    smoke: bool = True  # reproduced at smoke scale (False: paper scale only, e.g. a WRN block)


@dataclass(frozen=True)
class ColumnRecipe:
    """Which stored result fills one printed column.

    ``attack`` is the suite entry's label (``Clean`` for clean accuracy, ``Worst case`` for the
    per-sample worst case); ``transform``: ``acc`` (accuracy %), ``error`` (100 - accuracy) or ``sum``
    (sum of the columns named in ``parts``, SAT's Clean + Adv).
    """

    suite: str | None
    attack: str
    eps: str | None = None
    transform: Transform = "acc"
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableRecipe:
    """Everything needed to reproduce one published table."""

    paper: str
    table: str
    dataset: str
    model: str
    norm: str
    eps: str
    train: dict[str, Any]
    rows: dict[str, RowRecipe | str]  # printed row label -> recipe, or the reason it is not trainable
    columns: dict[str, ColumnRecipe | str]  # printed column label -> recipe, or the reason it is not measured
    suites: tuple[tuple[str, str | None], ...]  # (suite, eps list or None = the run's eps)
    seeds: tuple[int, ...] = (0,)
    n_eval: int = 10000
    threat_text: str = ""
    attack_versions: str = ""
    compute: str = ""
    discrepancies: tuple[str, ...] = ()
    source: str | None = None  # row label whose run is the transfer source (black-box tables)

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"


_RECIPES: dict[tuple[str, str], TableRecipe] = {}
#: tables with no recipe: why (diagnostics, quoted literature, timing, certification ...)
_NO_RECIPE: dict[tuple[str, str], str] = {}


def register(recipe: TableRecipe) -> TableRecipe:
    """Add a recipe; its row and column labels must be exactly the printed ones."""
    layout = table_layout(recipe.paper, recipe.table)
    bad_rows = set(recipe.rows) - set(layout.rows)
    bad_cols = set(recipe.columns) - set(layout.columns)
    if bad_rows or bad_cols:
        raise ValueError(f"{recipe.key}: labels not in the published layout: {sorted(bad_rows | bad_cols)}")
    _RECIPES[(recipe.paper, recipe.table)] = recipe
    return recipe


def no_recipe(paper: str, table: str, reason: str) -> None:
    """Record why a table has no recipe (shown by ``reproduce --list``)."""
    _NO_RECIPE[(paper, table_id(table))] = reason


def _load_all() -> None:
    from advbench.papers import gradient_reg, randomized_at, sat, scorpio, soar  # noqa: F401


def get_recipe(paper: str, table: str) -> TableRecipe | None:
    """The recipe of ``paper`` table ``table``, or None when none is written."""
    _load_all()
    return _RECIPES.get((paper, table_id(table)))


def missing_parts(recipe: TableRecipe) -> list[str]:
    """Defenses, suites or attacks the recipe needs that are not registered (empty: reproducible now)."""
    from advbench.attacks import SUITES
    from advbench.defenses import DEFENSES

    missing: list[str] = []
    for r in recipe.rows.values():
        if isinstance(r, RowRecipe) and r.defense not in DEFENSES.names():
            missing.append(f"defense {r.defense}")
    suites = {s for s, _ in recipe.suites}
    for s in sorted(suites):
        if s not in SUITES.names():
            missing.append(f"suite {s}")
    for c in recipe.columns.values():
        if isinstance(c, ColumnRecipe) and c.suite and c.suite in SUITES.names() and c.attack not in (
                "Clean", "Worst case") and c.attack not in [e.label for e in SUITES.get(c.suite).entries]:
            missing.append(f"attack {c.attack} in suite {c.suite}")
    return list(dict.fromkeys(missing))


def table_status(paper: str, table: str) -> tuple[str, str]:
    """(status, detail) of a table: ``reproducible``, ``partial``, ``needs`` or ``no recipe``."""
    _load_all()
    tid = table_id(table)
    recipe = _RECIPES.get((paper, tid))
    if recipe is None:
        return "no recipe", _NO_RECIPE.get((paper, tid), "no recipe written yet")
    missing = missing_parts(recipe)
    if missing:
        return "needs", "needs " + ", ".join(missing)
    skipped_rows = [k for k, v in recipe.rows.items() if isinstance(v, str)]
    skipped_cols = [k for k, v in recipe.columns.items() if isinstance(v, str)]
    layout = table_layout(paper, tid)
    unmapped = [r for r in layout.rows if r not in recipe.rows] + [c for c in layout.columns if c not in recipe.columns]
    if skipped_rows or skipped_cols or unmapped:
        why = sorted({v for v in [*recipe.rows.values(), *recipe.columns.values()] if isinstance(v, str)})
        return "partial", (f"{len(skipped_rows) + len(skipped_cols) + len(unmapped)} rows/columns not measured"
                           + (f" ({'; '.join(why)})" if why else ""))
    return "reproducible", "every row and column"


def all_tables() -> list[tuple[str, str, str, str]]:
    """(paper, table, status, detail) for every published numeric table."""
    return [(p, t, *table_status(p, t)) for p, t in published_tables()]
