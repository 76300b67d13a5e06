"""Plan the runs of a paper table: which runs it needs, and which of them already exist (content hash).

A planned run is identified by the SHA-256 of its resolved TrainConfig (minus fields that do not change
the model: device, data_dir, download; ``init_from`` counts as the hash of the run it names, not its
path). A run directory with the same hash and a completed summary is reused (``done``); an interrupted one is
resumed (``resume``); anything else is trained (``train``). The api executes a plan
(:mod:`advbench.api.reproduce`); this module only reads run folders.

A table is planned block by block (:func:`~advbench.papers.recipes.blocks_of`): the main block with the table's
own dataset, model and threat model, then every other block the paper prints (another dataset, model or
budget) with its own settings; ``blocks`` restricts the plan to some of them. One block is planned by
:class:`~advbench.papers.planner.Planner`; the blocks' plans are merged into one (a run two blocks share is
planned once).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advbench.defenses import DEFENSES
from advbench.errors import UserError
from advbench.papers import paper_names
from advbench.papers.planned import (  # noqa: F401  (the plan's public names live here)
    _NOT_HASHED,
    BASE_ROW,
    SCALES,
    Plan,
    PlannedRun,
    config_hash,
    dataset_available,
    existing_runs,
    run_action,
    run_hash,
    suites_text,
)
from advbench.papers.planner import Planner, cpu_recipe, skip_reason
from advbench.papers.published import table_id
from advbench.papers.recipes import (
    SMOKE,
    SMOKE_BY_DATASET,
    Block,
    RowRecipe,
    Split,
    TableRecipe,
    block_recipe,
    blocks_of,
    get_recipe,
)
from advbench.papers.status import table_status
from advbench.registry import unknown_name_message


def _checked_recipe(paper: str, table: str, scale: str, rows: list[str] | None,
                    blocks: list[str] | None = None) -> TableRecipe:
    """The recipe of ``paper`` table ``table``; a UserError for an unknown scale, table, row or source."""
    if scale not in SCALES:
        raise UserError(f"unknown --scale '{scale}'; choose smoke, cpu or paper")
    if paper not in paper_names():
        raise UserError(unknown_name_message("paper", paper, list(paper_names())))
    tid = table_id(table)
    recipe = get_recipe(paper, tid)
    if recipe is None:
        status, detail = table_status(paper, tid)
        raise UserError(f"{paper} table {tid} cannot be reproduced ({detail}); see 'advbench reproduce --list'")
    if rows:
        unknown = [r for r in rows if r not in recipe.rows]
        if unknown:
            raise UserError(f"{paper} table {tid} has no row {unknown[0]!r}; rows: {', '.join(recipe.rows)}")
    if blocks:
        names = [b.name for b in blocks_of(recipe)]
        unknown = [b for b in blocks if b not in names]
        if unknown:
            raise UserError(f"{paper} table {tid} has no block {unknown[0]!r}; blocks: {', '.join(names)}")
    if recipe.source not in (None, "standard"):
        raise UserError(f"{recipe.key}: unknown transfer source {recipe.source!r} (only 'standard' is planned)")
    return recipe


def _block_skip(block: Block, main: Block, smoke_scale: bool, sm: dict[str, Any],
                data_dir: str | Path | None = None) -> str | None:
    """Why a block other than the main one is not planned at smoke scale (None: it is)."""
    if not smoke_scale or block is main:
        return None
    if block.dataset != main.dataset:
        return None if dataset_available(block.dataset, data_dir) else (
            f"smoke scale: {block.dataset} is not on disk (its runs would repeat the main block's on synthetic data)")
    if (block.norm, block.eps) != (main.norm, main.eps):
        return None
    return (f"smoke scale: differs from block {main.name!r} only by the model ({block.model}), which smoke scale "
            f"replaces by {sm['model']}")


def _block_text(block: Block) -> str:
    text = f"{block.dataset}, {block.model}, {block.norm} {block.eps}"
    if block.train:
        text += ", " + ", ".join(f"{k} {v}" for k, v in block.train.items())
    return text + (f" ({block.note})" if block.note else "")


def make_plan(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, device: str = "auto", smoke: dict[str, Any] | None = None,
              eps: str | None = None, norm: str | None = None, blocks: list[str] | None = None,
              paper_checkpoints: bool = False, data_dir: str | Path | None = None) -> Plan:
    """Plan the runs of ``paper`` table ``table``; ``smoke`` overrides entries of :data:`SMOKE` (tests); ``eps`` and
    ``norm`` replace the table's threat model (a user's own budget for a recipe's rows); ``blocks``: plan only these
    blocks. ``dataset``/``model``/``eps``/``norm`` apply to the main block, and then only it is planned unless
    ``blocks`` names others. ``paper_checkpoints``: keep the checkpoints the paper evaluates (``checkpoint_epochs``;
    at smoke scale every epoch) and fill each column with its best over them, the paper's rule. ``data_dir``: the
    dataset root the runs load from (and where smoke scale looks for the paper's dataset); not hashed."""
    recipe = _checked_recipe(paper, table, scale, rows, blocks)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder; give the folder that holds the datasets "
                        "(e.g. DIR/MNIST/raw for MNIST)")
    if paper_checkpoints and not recipe.checkpoint_epochs:
        raise UserError(f"{recipe.key} does not evaluate several checkpoints in the paper; drop --paper-checkpoints")
    if eps is not None or norm is not None:
        recipe = dataclasses.replace(recipe, eps=eps or recipe.eps, norm=norm or recipe.norm)
    if scale == "cpu":
        if not recipe.cpu:
            with_cpu = [f"{p} {t}" for p, t in cpu_tables()]
            raise UserError(f"{recipe.key} has no cpu scale (tables with one: {', '.join(with_cpu)}); use --scale "
                            "smoke or paper")
        recipe = cpu_recipe(recipe)
    # the smoke settings of the data the main block trains on (the paper's when on disk), then the caller's
    smoke_data = dataset or (recipe.dataset if scale == "smoke" and dataset_available(recipe.dataset, data_dir)
                             else "synthetic")
    sm = {**SMOKE, **SMOKE_BY_DATASET.get(smoke_data, {}), **(smoke or {})}
    if paper_checkpoints and scale == "paper":  # the paper's rule needs no held-out split: the full training set
        recipe = dataclasses.replace(recipe, split=_FULL_SET, blocks=tuple(
            dataclasses.replace(b, split=None) for b in recipe.blocks))
    all_blocks = blocks_of(recipe)
    hinted = any(v is not None for v in (dataset, model, eps, norm))
    chosen = blocks or ([all_blocks[0].name] if hinted else [b.name for b in all_blocks])
    plans, skipped_blocks = [], {}
    for block in all_blocks:
        if block.name not in chosen:
            continue
        main = block is all_blocks[0]
        why = _block_skip(block, all_blocks[0], scale == "smoke", sm, data_dir)
        if why:
            skipped_blocks[block.name] = why
            continue
        planner = Planner(block_recipe(recipe, block), scale, Path(out), dataset if main else None,
                          model if main else None, device, sm, block=None if main else block.name,
                          data_dir=None if data_dir is None else str(data_dir))
        if paper_checkpoints:
            planner.save_epochs = list(range(1, int(sm["epochs"]) + 1)) if scale == "smoke" else list(
                recipe.checkpoint_epochs)
        plans.append((block, _plan_block(planner, seeds, rows)))
    plan = _merged(recipe, plans, skipped_blocks, scale, Path(out), sm)
    if scale == "paper":
        plan.notes[:0] = _split_notes(recipe, [b for b, _ in plans], rows)
        if recipe.sample_seed is not None:
            plan.notes.insert(0, f"evaluation: {recipe.n_eval} test images drawn at random with sample seed "
                                 f"{recipe.sample_seed} (recorded in every result)")
    if paper_checkpoints:
        kept = list(range(1, int(sm["epochs"]) + 1)) if scale == "smoke" else list(recipe.checkpoint_epochs)
        plan.notes.append(f"checkpoints: epochs {kept} are kept and attacked besides the selected one; each column "
                          "shows its best over them (the paper's rule)")
    elif recipe.checkpoint_epochs:
        plan.notes.append("checkpoints: the one selected on a held-out validation split (the paper takes each "
                          "column's best over its checkpoints: --paper-checkpoints)")
    return plan


def cpu_tables() -> list[tuple[str, str]]:
    """(paper, table) of the recipes with a cpu scale."""
    from advbench.papers.published import published_tables

    return [(p, t) for p, t in published_tables() if (r := get_recipe(p, t)) is not None and r.cpu]


_FULL_SET = Split(0, "last", "each column's best over the checkpoints the paper lists (--paper-checkpoints): the "
                            "full training set, every listed checkpoint kept")


def _split_notes(recipe: TableRecipe, blocks: list[Block], rows: list[str] | None) -> list[str]:
    """The paper-scale split of each planned block (and of each row with its own), one line each."""
    notes, texts = [], set()
    for block in blocks:
        text = (block.split or recipe.split).text(block.dataset or recipe.dataset)
        if text not in texts:  # a block with the same split as one printed already is not repeated
            texts.add(text)
            prefix = "split" if not notes else f"{block.name}: split"
            notes.append(f"{prefix}: {text}")
        for label in block.rows:
            row = recipe.rows.get(label)
            if isinstance(row, RowRecipe) and row.split is not None and (not rows or label in rows):
                notes.append(f"{label}: split: {row.split.text(block.dataset or recipe.dataset)}")
    return list(dict.fromkeys(notes))


def _plan_block(planner: Planner, seeds: list[int] | None, rows: list[str] | None) -> Plan:
    """The plan of one block: every printed row it trains, for every seed."""
    recipe = planner.recipe
    the_seeds = list(seeds) if seeds else list(planner.sm["seeds"] if planner.smoke_scale else recipe.seeds)
    for label, row in recipe.rows.items():
        if rows and label not in rows:
            continue
        why = skip_reason(row, planner.smoke_scale)
        if why is not None:
            planner.plan.skipped_rows[label] = why
            continue
        row_seeds = the_seeds if seeds or planner.smoke_scale or not isinstance(row, RowRecipe) or not row.seeds \
            else list(row.seeds)
        for seed in row_seeds:
            if isinstance(row, RowRecipe) and row.sweep is not None:
                _plan_sweep(planner, label, row, seed)
            else:
                planner.row_run(label, seed)
    return planner.finish([p for p in [*planner.rows.values(), *planner.sweeps] if p is not None])


def _plan_sweep(planner: Planner, label: str, row: RowRecipe, seed: int) -> None:
    """One run per value of the row's sweep (the grid keeps the one the sweep's rule picks)."""
    sweep = row.sweep
    assert sweep is not None
    values = sweep.smoke_values if planner.smoke_scale and sweep.smoke_values else sweep.values
    defaults = {f.name: f.default for f in dataclasses.fields(DEFENSES.get(row.defense).Options)}
    for value in values:
        # the default value is left implicit: the run is then the row's run without a sweep (same hash, reused)
        extra = {} if defaults.get(sweep.option) == value else {sweep.option: value}
        one = dataclasses.replace(row, options={**row.options, **extra}, sweep=None)
        run = planner.plan_row(label, one, seed)
        if run is not None:
            planner.sweeps.append(run)
    note = f"{label}: {len(values)} runs ({sweep.option} sweep); the grid keeps {sweep.text()}"
    if note not in planner.plan.notes:
        planner.plan.notes.append(note)


def _merged(recipe: TableRecipe, plans: list[tuple[Block, Plan]], skipped_blocks: dict[str, str], scale: str,
            out: Path, sm: dict[str, Any]) -> Plan:
    """One plan of the blocks' plans: every base run first, then the others; a run two blocks share, once."""
    if not plans:
        first = blocks_of(recipe)[0]
        plan = Plan(recipe, scale, out, first.dataset, first.model, first.n_eval or recipe.n_eval, None, smoke=sm)
        plan.skipped_blocks = skipped_blocks
        return plan
    main_block, main = plans[0]
    merged = dataclasses.replace(main, recipe=recipe, runs=[], skipped_rows={}, blocks={},
                                 skipped_blocks=skipped_blocks, notes=[])
    seen: set[tuple[str, str]] = set()
    for base_first in (True, False):
        for _block, plan in plans:
            for p in plan.runs:
                if p.base == base_first and (p.hash, p.name) not in seen:
                    seen.add((p.hash, p.name))
                    merged.runs.append(p)
    for block, plan in plans:
        if len(blocks_of(recipe)) > 1:
            merged.blocks[block.name] = _block_text(block)
        prefix = "" if block is main_block else f"{block.name}: "
        merged.skipped_rows.update({prefix + row: why for row, why in plan.skipped_rows.items()})
        merged.notes += [prefix + n for n in plan.notes if prefix + n not in merged.notes]
    return merged
