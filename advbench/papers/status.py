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
    # a block that does not measure some columns of its rows (gradient-reg's ImageNet-1k block: top-5 attack cells)
    unmeasured = {b.name: [c for c, v in b.column_recipes.items() if isinstance(v, str)] for b in blocks}
    if any(unmeasured.values()):
        why = sorted({v for b in blocks for v in b.column_recipes.values() if isinstance(v, str)})
        return "partial", ("; ".join(f"block {name}: {len(cols)} columns not measured" for name, cols in
                                     unmeasured.items() if cols)
                           + f" ({'; '.join(why)}); blocks: {', '.join(b.name for b in blocks)}")
    return "reproducible", "every row and column" + (
        f" (blocks: {', '.join(b.name for b in blocks)})" if len(blocks) > 1 else "")

def all_tables() -> list[tuple[str, str, str, str]]:
    """(paper, table, status, detail) for every published numeric table."""
    listed = [(p, t) for p, t in published_tables()]
    listed += [(p, t) for p, t in unpublished_tables() if (p, t) not in listed]
    return [(p, t, *table_status(p, t)) for p, t in listed]


# --- the generated parts of docs/reproducing.md (kept true by tests/test_docs_reproducing.py) ------------------

DOC_MARKERS = {"status": ("<!-- status:begin (generated: python -m advbench.papers.status docs/reproducing.md) -->",
                          "<!-- status:end -->"),
               "recipes": ("<!-- recipes:begin (generated: python -m advbench.papers.status docs/reproducing.md) -->",
                           "<!-- recipes:end -->")}


def status_markdown() -> str:
    """``reproduce --list`` as a markdown table and a counts line."""
    tables = all_tables()
    lines = ["| paper | table | status | detail |", "|---|---|---|---|"]
    lines += [f"| {p} | {t} | {s} | {d.replace('|', '/')} |" for p, t, s, d in tables]
    counts: dict[str, int] = {}
    for _, _, s, _ in tables:
        counts[s] = counts.get(s, 0) + 1
    lines += ["", f"{len(tables)} tables: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    return "\n".join(lines)


def _settings(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def _row_settings(row: RowRecipe) -> list[str]:
    return [x for x in (row.model and f"model {row.model}", row.norm and f"{row.norm} {row.eps}",
                        row.from_standard and "fine-tuned from the standard run",
                        row.sweep and f"sweep: {row.sweep.text()}", not row.smoke and "paper scale only",
                        row.seeds and f"seeds {list(row.seeds)}") if x]


def recipe_markdown(recipe: TableRecipe) -> str:
    """One recipe's section: the command, its settings, blocks, sources, sweeps and the documented differences."""
    from advbench.papers.planned import suites_text

    out = [f"### {recipe.paper} Table {recipe.table}", "",
           f"`advbench reproduce {recipe.paper} --table {table_id(recipe.table)} --scale paper --dry-run`", "",
           f"- dataset {recipe.dataset}, model {recipe.model}, threat {recipe.norm} {recipe.eps}; train: "
           f"{_settings(recipe.train)}",
           f"- seeds {list(recipe.seeds)}, n-eval {recipe.n_eval}"
           + (f" drawn at random with sample seed {recipe.sample_seed}" if recipe.sample_seed is not None else "")
           + f"; suites: {suites_text(recipe.suites)}",
           f"- split: {recipe.split.text(recipe.dataset)}"]
    rows = {k: v for k, v in recipe.rows.items() if isinstance(v, RowRecipe)}
    for k, v in rows.items():
        if v.split is not None:
            out.append(f"- split of {k}: {v.split.text(recipe.dataset)}")
    for b in blocks_of(recipe)[1:]:
        if b.split is not None and b.split != recipe.split:
            out.append(f"- split of block `{b.name}`: {b.split.text(b.dataset or recipe.dataset)}")
    if recipe.caption_note:
        out.append(f"- caption: {recipe.caption_note}")
    special = [f"{k} ({'; '.join(_row_settings(v))})" for k, v in rows.items()
               if v.model or v.norm or v.from_standard or v.sweep or not v.smoke or v.seeds]
    if special:
        out.append("- rows with settings of their own: " + "; ".join(special))
    for b in blocks_of(recipe)[1:]:
        extra = [x for x in (b.train and f"train: {_settings(b.train)}",
                             b.row_options and f"row options {b.row_options}", b.note) if x]
        out.append(f"- block `{b.name}`: {b.dataset}, {b.model}, {b.norm} {b.eps}; rows {', '.join(b.rows)}"
                   + (f"; {'; '.join(extra)}" if extra else ""))
    if recipe.source:
        out.append(f"- transfer source: {recipe.source} (an independently trained run, seed + 1000)")
    for suite, src in recipe.sources.items():
        what = f"row {src.row}" if src.row else f"an independent {src.defense} run" + (
            f" ({src.model})" if src.model else "")
        out.append(f"- suite {suite}: transfer from {what}")
    if recipe.checkpoint_epochs:
        out.append(f"- `--paper-checkpoints`: epochs {list(recipe.checkpoint_epochs)}, each column's best over them")
    skipped = {k: v for k, v in [*recipe.rows.items(), *recipe.columns.items()] if isinstance(v, str)}
    for k, v in skipped.items():
        out.append(f"- not measured: {k}: {v}")
    if recipe.compute:
        out.append(f"- expected compute: {recipe.compute}")
    out += [f"- discrepancy: {d}" for d in recipe.discrepancies]
    out += [f"- claim (checked by `report --grid --paper`): {c.text}" for c in recipe.claims]
    return "\n".join(out)


def recipes_markdown() -> str:
    """Every recipe's section, in ``reproduce --list`` order."""
    parts = []
    for p, t, _, _ in all_tables():
        recipe = get_recipe(p, table_id(t))
        if recipe is not None:
            parts.append(recipe_markdown(recipe))
    return "\n\n".join(parts)


def doc_sections() -> dict[str, str]:
    """Marker name -> generated text."""
    return {"status": status_markdown(), "recipes": recipes_markdown()}


def replace_sections(text: str) -> str:
    """``text`` with every marked section replaced by its generated content."""
    for name, body in doc_sections().items():
        begin, end = DOC_MARKERS[name]
        i, j = text.index(begin), text.index(end)
        text = text[:i + len(begin)] + "\n" + body + "\n" + text[j:]
    return text


if __name__ == "__main__":  # python -m advbench.papers.status docs/reproducing.md
    import sys
    from pathlib import Path

    path = Path(sys.argv[1])
    path.write_text(replace_sections(path.read_text()))
