"""A defense's own recipe for ``advbench train --defense NAME`` when no schedule is given.

The recipe is a row of a paper table that trains this defense (``advbench/papers``), so a user gets what the
paper did rather than a generic schedule:

- on the paper's own dataset: the row at **paper** scale (the paper's model, optimizer, schedule, epochs);
- on any other dataset (the embedded ``synthetic`` one by default): the row at **smoke** scale, i.e. a standard
  base run (content-hashed, shared, reused) and a short fine-tune of the defense from it with the defense's
  curricula compressed in proportion, which learns in minutes on a CPU.

The user's dataset, model (when given), threat model and seed replace the table's. The runs are planned by
:func:`advbench.papers.plan.make_plan` and trained by the reproduce executor, without the table's attacks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.api.reproduce import execute
from advbench.papers.plan import make_plan
from advbench.papers.recipes import RowRecipe, get_recipe
from advbench.papers.status import all_tables


@dataclasses.dataclass(frozen=True)
class RecipeRow:
    """A paper table row that trains a defense: where it is printed and on which dataset the paper ran it."""

    paper: str
    table: str
    row: str
    dataset: str


def recipe_rows(defense: str) -> list[RecipeRow]:
    """Every row of a reproducible table that trains ``defense`` (tables in ``reproduce --list`` order)."""
    out: list[RecipeRow] = []
    for paper, table, status, _detail in all_tables():
        recipe = get_recipe(paper, table) if status in ("reproducible", "partial") else None
        for label, row in (recipe.rows.items() if recipe else ()):
            if isinstance(row, RowRecipe) and row.defense == defense:
                out.append(RecipeRow(paper, recipe.table, label, recipe.dataset))
    return out


def choose_row(defense: str, dataset: str) -> tuple[RecipeRow, str] | None:
    """(row, scale): a row of ``defense`` on ``dataset`` at paper scale if a paper ran it there, else the first
    row at smoke scale (rows trained only at paper scale, e.g. WideResNet blocks, are skipped by the planner)."""
    rows = recipe_rows(defense)
    for r in rows:
        if r.dataset == dataset:
            return r, "paper"
    smoke = [r for r in rows if getattr(get_recipe(r.paper, r.table).rows[r.row], "smoke", True)]
    return (smoke[0], "smoke") if smoke else None


def train_with_recipe(*, defense: str, dataset: str, model: str | None, eps: str, norm: str, seed: int,
                      out: str | Path, device: str, quiet: bool, command: list[str] | None,
                      smoke: dict[str, Any] | None = None, data_dir: str | None = None,
                      download: bool | None = None) -> tuple[Path, dict[str, Any]] | None:
    """Train ``defense`` with its paper recipe (see the module doc); None when no paper row trains it. ``smoke``
    overrides entries of the smoke scale (tests)."""
    chosen = choose_row(defense, dataset)
    if chosen is None:
        return None
    row, scale = chosen
    plan = make_plan(row.paper, row.table, scale=scale, out=out, dataset=dataset, model=model, seeds=[seed],
                     rows=[row.row], device=device, eps=eps, norm=norm, smoke=smoke)
    where = {k: v for k, v in (("data_dir", data_dir), ("download", download)) if v is not None}  # not hashed
    planned = [dataclasses.replace(p, suites=(), options={**p.options, **where}) for p in plan.runs]  # no attacks
    if not planned:
        return None
    what = "the standard base run it fine-tunes from, then " if len(planned) > 1 else ""
    text = (f"{row.paper} table {row.table}, row '{row.row}', {scale} scale ({what}the row; "
            f"'advbench reproduce {row.paper} --table {row.table} --dry-run' shows it)")
    dirs = execute(planned, out=Path(out), n_eval=0, meta=None, quiet=quiet, device=device, command=command,
                   recipe=text)
    run_dir = dirs[-1]
    return run_dir, {**runs.read_object(run_dir / "summary.json"), "recipe": text}
