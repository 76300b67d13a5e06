"""Which tables can be reproduced now: every published table's status (``reproduce --list``), from its recipe and
the defenses, suites and attacks registered."""

from __future__ import annotations

from advbench.attacks import SUITES
from advbench.defenses import DEFENSES
from advbench.papers.published import published_tables, table_id, table_layout
from advbench.papers.recipes import (
    ColumnRecipe,
    RowRecipe,
    TableRecipe,
    blocks_of,
    get_recipe,
    no_recipe_kind,
    no_recipe_reason,
    unpublished_tables,
)
from advbench.papers.suites import register_paper_suites


def missing_parts(recipe: TableRecipe) -> list[str]:
    """Defenses, suites or attacks the recipe needs that are not registered (empty: reproducible now)."""
    register_paper_suites()
    missing: list[str] = []
    for r in recipe.rows.values():
        if isinstance(r, RowRecipe) and r.defense not in DEFENSES.names():
            missing.append(f"defense {r.defense}")
    suites = {s[0] for s in recipe.suites} | {s[0] for b in recipe.blocks for s in (b.suites or ())}
    for s in sorted(suites):
        if s not in SUITES.names():
            missing.append(f"suite {s}")
    for c in recipe.columns.values():
        if isinstance(c, ColumnRecipe) and c.suite and c.suite in SUITES.names() and c.attack not in (
                "Clean", "Worst case") and c.attack not in [e.label for e in SUITES.get(c.suite).entries]:
            missing.append(f"attack {c.attack} in suite {c.suite}")
    return list(dict.fromkeys(missing))

def table_status(paper: str, table: str) -> tuple[str, str]:
    """(status, detail) of a table: ``reproducible``, ``partial``, ``needs``, or for a table without a recipe why:
    ``quoted`` (literature numbers), ``waiting`` (on methods not built yet), ``not numeric`` or ``no recipe``."""
    tid = table_id(table)
    recipe = get_recipe(paper, tid)
    if recipe is None:
        return no_recipe_kind(paper, tid), no_recipe_reason(paper, tid)
    missing = missing_parts(recipe)
    if missing:
        return "needs", "needs " + ", ".join(missing)
    skipped_rows = [k for k, v in recipe.rows.items() if isinstance(v, str)]
    skipped_cols = [k for k, v in recipe.columns.items() if isinstance(v, str)]
    layout = table_layout(paper, tid)
    unmapped = [r for r in layout.rows if r not in recipe.rows] + [c for c in layout.columns if c not in recipe.columns]
    if skipped_rows or skipped_cols or unmapped:
        why = sorted({v for v in [*recipe.rows.values(), *recipe.columns.values()] if isinstance(v, str)})
        blocks = blocks_of(recipe)
        return "partial", (f"{len(skipped_rows) + len(skipped_cols) + len(unmapped)} rows/columns not measured"
                           + (f" ({'; '.join(why)})" if why else "")
                           + (f"; blocks: {', '.join(b.name for b in blocks)}" if len(blocks) > 1 else ""))
    blocks = blocks_of(recipe)
    return "reproducible", "every row and column" + (
        f" (blocks: {', '.join(b.name for b in blocks)})" if len(blocks) > 1 else "")

def all_tables() -> list[tuple[str, str, str, str]]:
    """(paper, table, status, detail) for every published numeric table."""
    listed = [(p, t) for p, t in published_tables()]
    listed += [(p, t) for p, t in unpublished_tables() if (p, t) not in listed]
    return [(p, t, *table_status(p, t)) for p, t in listed]
