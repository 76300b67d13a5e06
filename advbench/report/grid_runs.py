"""Which runs fill which cells of a paper grid: a run's block and printed row, and its value in each column.

A run fills the cells of one block of a table (:func:`~advbench.papers.recipes.blocks_of`): the block its
``paper.json`` names for the table (``reproduce`` records it), else the first block whose settings it has (its
dataset and model for a block that has its own, its training threat model). Within the block it fills the printed
row its ``paper.json`` names, else the first row whose defense and options it has. A column's value is an
attack's accuracy (%), a key of an attack's stored ``summary`` (RayS's ADBD, a diagnostic's statistic), or a
measurement of the training run itself (seconds per epoch, peak memory, passes per step).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from advbench import runs
from advbench.errors import UserError
from advbench.papers.recipes import (
    Block,
    ColumnRecipe,
    RowRecipe,
    TableRecipe,
    block_recipe,
    blocks_of,
    smoke_suite_parent,
)
from advbench.report.frame import CERTIFY_SUITE

#: (block, row, seed, swept value) -> (mtime, run, its results, its config, its block)
Chosen = dict[tuple[str, str, Any, Any], tuple[float, str, pd.DataFrame, dict[str, Any], Block]]


def stored_options(record: dict[str, Any]) -> dict[str, Any]:
    """Every option of a run's defense as resolved when it trained (config.json ``defense.options``; runs
    written before that record existed: the options given)."""
    described = record.get("defense")
    if isinstance(described, dict) and isinstance(described.get("options"), dict):
        return described["options"]
    return record["config"].get("defense_options") or {}


def same_option(have: Any, want: Any) -> bool:
    """True when a stored (typed) option value is the recipe's value as written: equal text, the same number
    (``2/255`` is stored as 0.00784...), the same choice in any case, or sequences of such values."""
    if isinstance(have, list | tuple) and isinstance(want, list | tuple):
        return len(have) == len(want) and all(same_option(h, w) for h, w in zip(have, want, strict=True))
    if str(have) == str(want):
        return True
    if isinstance(have, bool) or isinstance(want, bool) or have is None or want is None:
        return False
    try:
        return math.isclose(number(have), number(want), rel_tol=1e-9, abs_tol=1e-12)
    except (UserError, TypeError, ValueError):
        return str(have).strip().lower() == str(want).strip().lower()


def number(value: Any) -> float:
    from advbench.threat import parse_eps

    return parse_eps(value)[0]


def row_matches(row: RowRecipe, record: dict[str, Any], ignore: set[str] = frozenset()) -> bool:
    """True when the run's defense and options are the row's (``ignore``: options smoke scale changed)."""
    if record["config"].get("defense") != row.defense:
        return False
    have = stored_options(record)
    return all(same_option(have.get(k), v) for k, v in row.options.items() if k not in ignore)


def eps_equal(a: Any, b: Any) -> bool:
    from advbench.threat import parse_eps

    try:
        return abs(parse_eps(str(a))[0] - parse_eps(str(b))[0]) < 1e-6
    except Exception:  # noqa: BLE001 - unparsable eps never matches
        return str(a) == str(b)


def paper_meta(run: Path) -> dict[str, Any]:
    meta_file = run / "paper.json"
    try:
        return runs.read_json(meta_file) if meta_file.is_file() else {}
    except (OSError, ValueError):
        return {}


def choose_runs(frame: pd.DataFrame, recipe: TableRecipe) -> tuple[Chosen, int]:
    """(block, row, seed) -> the newest run filling that row of that block with that seed, and how many older
    runs of a row and seed were passed over."""
    chosen: Chosen = {}
    superseded = 0
    blocks = blocks_of(recipe)
    views = {b.name: block_recipe(recipe, b) for b in blocks}
    groups = list(frame.groupby("run", sort=False)) if not frame.empty else []
    seen = {str(run) for run, _ in groups}
    # runs with no attack results still fill measurement columns (seconds per epoch, memory)
    groups += [(run, frame.iloc[0:0]) for run in frame.attrs.get("runs", []) if run not in seen]
    for run, sub in groups:
        if not (Path(run) / "config.json").is_file():
            continue
        record = runs.read_json(Path(run) / "config.json")
        cfg = record["config"]
        hit = _block_and_row(recipe, blocks, views, record, paper_meta(Path(run)))
        if hit is None:
            continue
        block, label = hit
        # several runs of one row and seed (e.g. an older smoke setting): the newest one counts; the runs of a
        # swept row count per value (:func:`pick_sweeps` keeps one)
        when = (Path(run) / "config.json").stat().st_mtime
        row = views[block.name].rows[label]
        value = stored_options(record).get(row.sweep.option) if isinstance(row, RowRecipe) and row.sweep else None
        slot = (block.name, label, cfg.get("seed"), value)
        if slot in chosen:
            superseded += 1
            if chosen[slot][0] >= when:
                continue
        chosen[slot] = (when, str(run), sub, cfg, block)
    return chosen, superseded


def _clean(sub: pd.DataFrame) -> float | None:
    hit = sub[sub["kind"] == "clean"] if not sub.empty else sub
    return None if hit.empty else 100.0 * float(hit["accuracy"].iloc[0])


def pick_sweeps(chosen: Chosen, recipe: TableRecipe) -> list[str]:
    """Keep one run per (block, swept row, seed): the one its :class:`~advbench.papers.recipes.Sweep` picks (the
    largest value whose clean accuracy is within the tolerance of the reference row's); returns notes saying
    which value each row kept and why."""
    notes: list[str] = []
    groups: dict[tuple[str, str, Any], list[tuple[Any, float | None]]] = {}
    for (block, label, seed, value), (_w, _run, sub, _cfg, _b) in chosen.items():
        if value is not None:
            groups.setdefault((block, label, seed), []).append((value, _clean(sub)))
    for (block, label, seed), candidates in groups.items():
        row = recipe.rows[label]
        assert isinstance(row, RowRecipe) and row.sweep is not None
        ref = [_clean(v[2]) for k, v in chosen.items() if k[:3] == (block, row.sweep.reference, seed)]
        ref_clean = ref[0] if ref else None
        ok = [(float(v), c) for v, c in candidates if c is not None and ref_clean is not None
              and c >= ref_clean - row.sweep.tolerance]
        keep = max(ok)[0] if ok else min(float(v) for v, _ in candidates)
        for value, _c in candidates:
            if float(value) != keep:
                del chosen[(block, label, seed, value)]
        tried = ", ".join(f"{v:g}: {c:.1f}" if c is not None else f"{v:g}: -" for v, c in sorted(
            (float(v), c) for v, c in candidates))
        why = (f"within {row.sweep.tolerance:g} points of {row.sweep.reference!r} ({ref_clean:.1f})" if ok else
               "none within the tolerance (or no reference run): the smallest value")
        notes.append(f"{label}: {row.sweep.option} = {keep:g} kept ({why}; clean accuracy per value: {tried})")
    return notes


def _block_and_row(recipe: TableRecipe, blocks: list[Block], views: dict[str, TableRecipe], record: dict[str, Any],
                   meta: dict[str, Any]) -> tuple[Block, str] | None:
    """The block and printed row a run fills (None: none)."""
    cfg = record["config"]
    declared = (meta.get("blocks") or {}).get(recipe.key)
    reproduced = recipe.key in (meta.get("rows") or {})
    main = blocks[0]
    if declared is not None:
        candidates = [b for b in blocks if b.name == declared]
    elif reproduced:
        candidates = [main]
    else:  # a run made by hand: the blocks with settings of their own first, then the main block
        candidates = [b for b in blocks[1:] if cfg.get("dataset") == b.dataset and cfg.get("model") == b.model]
        candidates.append(main)
    for block in candidates:
        label = row_of(views[block.name], record, meta, block)
        if label is not None:
            return block, label
    return None


def row_of(recipe: TableRecipe, record: dict[str, Any], meta: dict[str, Any], block: Block | None = None) -> str | None:
    """The printed row of ``recipe`` (a block's view) a run fills: the one its paper.json names for this table,
    else the first whose defense, options and training threat model it has."""
    declared = (meta.get("rows") or {}).get(recipe.key)
    ignore = set(meta.get("smoke_overrides") or {})
    cfg = record["config"]
    for label, row in recipe.rows.items():
        if not isinstance(row, RowRecipe):
            continue
        if declared in recipe.rows and declared != label:
            continue
        norm, eps = row.norm or recipe.norm, row.eps or recipe.eps
        if cfg.get("norm") != norm or not eps_equal(cfg.get("eps"), eps):
            continue
        if declared == label:
            return label
        # a row with a model of its own (SOAR's WideResNet rows) takes a run made by hand only on that model
        if row.model is not None and cfg.get("model") != row.model:
            continue
        if row_matches(row, record, ignore):
            return label
    return None


def _is_epoch(checkpoint: Any) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith("epoch-")


def column_value(run: str, sub: pd.DataFrame, spec: ColumnRecipe, train_eps: str, rule: str | None = None
                 ) -> float | None:
    """The value of one column for one run (None: not measured). ``rule`` ``max-per-column``: the best value over
    the run's kept epoch checkpoints and its selected one (RAT: "the highest robustness that ever achieved at
    different checkpoints"); otherwise the selected checkpoint's value only."""
    if spec.measure is not None:
        return run_measure(Path(run), spec.measure)
    if "checkpoint" in sub.columns and not sub.empty:
        epochs = [_is_epoch(c) for c in sub["checkpoint"]]
        if rule == "max-per-column" and any(epochs):
            values = [v for _, g in sub.groupby(sub["checkpoint"].fillna("best"), sort=False)
                      if (v := _one_value(run, g, spec, train_eps)) is not None]
            if not values:
                return None
            return min(values) if spec.transform in ERRORS else max(values)
        sub = sub[[not e for e in epochs]]
    return _one_value(run, sub, spec, train_eps)


def _one_value(run: str, sub: pd.DataFrame, spec: ColumnRecipe, train_eps: str) -> float | None:
    """The value of one column from one checkpoint's results."""
    hit = _hit(sub, spec, train_eps)
    if hit.empty:
        return None
    if spec.value is not None:
        return _summary_value(run, hit.iloc[0], spec.value)
    if spec.transform == "top5-error":
        top5 = _clean_top5(run, hit.iloc[0]) if spec.attack == "Clean" else None
        return None if top5 is None else 100.0 - 100.0 * top5
    acc = 100.0 * float(hit["accuracy"].iloc[0])
    return 100.0 - acc if spec.transform == "error" else acc


def column_n(sub: pd.DataFrame, spec: ColumnRecipe, train_eps: str) -> int | None:
    """How many test images the value of one (accuracy or error) column was measured on; None for a measurement
    or a summary statistic, or when the run has no such result. Kept epoch checkpoints are attacked on the same
    images as the selected one, so the selected checkpoint's count stands for them."""
    if spec.measure is not None or spec.value is not None or spec.transform == "sum":
        return None
    if "checkpoint" in sub.columns and not sub.empty:
        sub = sub[[not _is_epoch(c) for c in sub["checkpoint"]]]
    hit = _hit(sub, spec, train_eps)
    if hit.empty or "n" not in hit.columns or pd.isna(hit["n"].iloc[0]):
        return None
    return int(hit["n"].iloc[0])


def _hit(sub: pd.DataFrame, spec: ColumnRecipe, train_eps: str) -> pd.DataFrame:
    """The result rows of ``sub`` that fill column ``spec`` (the first one counts)."""
    if sub.empty:  # a run with no results yet (an empty frame may not even have the result columns)
        return sub
    df = sub if spec.suite is None else sub[[smoke_suite_parent(str(x)) == spec.suite for x in sub["suite"]]]
    if spec.attack == "Clean":
        hit = df[df["kind"] == "clean"]
        if hit.empty:
            hit = sub[sub["kind"] == "clean"]
    else:
        hit = df[(df["attack"] == spec.attack) & (df["kind"] != "clean")]
        want = spec.eps
        if want is not None:
            hit = hit[[eps_equal(e, want) for e in hit["eps"]]]
        elif hit["eps"].nunique() > 1:
            same = hit[[eps_equal(e, train_eps) for e in hit["eps"]]]
            hit = same if not same.empty else hit
    return hit


#: the transforms whose value is an error (lower is better)
ERRORS = ("error", "top5-error")


def _clean_top5(run: str, result: pd.Series) -> float | None:
    """The clean top-5 accuracy (a fraction) the attack result file of the frame row ``result`` stores
    (``clean_top5_acc``); None when the file has none (a model of 5 classes or fewer, an older result)."""
    try:
        stored = runs.read_json(Path(run) / "attacks" / f"{result['suite']}.json")
    except (OSError, ValueError):
        return None
    value = stored.get("clean_top5_acc") if isinstance(stored, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _summary_value(run: str, result: pd.Series, key: str) -> float | None:
    """``key`` of the stored summary of the attack or certification result ``result`` (a row of the frame);
    ``name@eps`` picks the entry at ``eps`` of a per-eps list of the summary (a certification's ``omega@0.5``)."""
    suite = str(result["suite"])
    certified = suite.startswith(CERTIFY_SUITE)
    where = (Path(run) / "certify" / f"{suite.removeprefix(CERTIFY_SUITE)}.json" if certified
             else Path(run) / "attacks" / f"{suite}.json")
    try:
        stored = runs.read_json(where)
    except (OSError, ValueError):
        return None
    if certified:  # a certification's summary is one for all radii
        summary = stored.get("summary") or {}
    else:
        summary = next(((r.get("summary") or {}) for r in stored.get("results", [])
                        if r.get("label") == result["attack"] and eps_equal(r.get("eps"), result["eps"])), None)
        if summary is None:
            return None
    if "@" in key:
        name, at = key.split("@", 1)
        value = next((e.get(name) for e in summary.get(name) or []
                      if isinstance(e, dict) and eps_equal(e.get("eps"), at)), None)
    else:
        value = summary.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


#: run measurements a column may show (:attr:`ColumnRecipe.measure`)
MEASURES = {"seconds_per_epoch": "seconds per training epoch (mean over epochs)",
            "peak_memory_mb": "peak memory of training (MB; the kind the run recorded: GPU or CPU RSS)",
            "passes_per_step": "forward + backward passes per training step",
            "training_hours": "hours of training (sum of the epochs' training seconds / 3600)"}


def run_measure(run: Path, name: str) -> float | None:
    """A measurement of the training run ``run`` (:data:`MEASURES`), from its summary and metrics."""
    try:
        summary = runs.read_json(run / "summary.json")
    except (OSError, ValueError):
        return None
    if name == "passes_per_step":
        passes = summary.get("passes_per_step") or {}
        return float(passes.get("forward", 0) + passes.get("backward", 0)) if passes else None
    if name == "peak_memory_mb":
        peak = summary.get("peak_mem_bytes")
        return float(peak) / 2**20 if isinstance(peak, int | float) else None
    if name in ("training_hours", "seconds_per_epoch"):
        seconds = [float(m["train_seconds"]) for m in _metrics(run) if isinstance(m.get("train_seconds"), int | float)]
        if not seconds:
            return None
        return sum(seconds) / 3600 if name == "training_hours" else sum(seconds) / len(seconds)
    raise UserError(f"unknown run measure {name!r}; one of {', '.join(MEASURES)}")


def _metrics(run: Path) -> list[dict[str, Any]]:
    import json

    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run_counts(recipe: TableRecipe, block: Block, sub: pd.DataFrame, train_eps: str) -> dict[str, int]:
    """Column -> the number of test images behind one run's value (accuracy and error columns only)."""
    out: dict[str, int] = {}
    for col in block.columns:
        spec = block.column_recipes.get(col) or recipe.columns.get(col)
        if isinstance(spec, ColumnRecipe) and (n := column_n(sub, spec, train_eps)) is not None:
            out[col] = n
    return out


def run_values(run: str, recipe: TableRecipe, block: Block, sub: pd.DataFrame, train_eps: str) -> dict[str, float]:
    """Column -> value of one run's results in its block's columns; ``sum`` columns once their parts are in (the
    run's ``paper.json`` names the checkpoint rule reproduce used, see :func:`column_value`)."""
    per_col: dict[str, float] = {}
    rule = paper_meta(Path(run)).get("checkpoint_rule")
    for col in block.columns:
        spec = block.column_recipes.get(col) or recipe.columns.get(col)
        if isinstance(spec, ColumnRecipe) and spec.transform != "sum":
            v = column_value(run, sub, spec, train_eps, rule)
            if v is not None and not math.isnan(v):
                per_col[col] = v
    for col in block.columns:
        spec = recipe.columns.get(col)
        if isinstance(spec, ColumnRecipe) and spec.transform == "sum" and all(p in per_col for p in spec.parts):
            per_col[col] = sum(per_col[p] for p in spec.parts)
    return per_col
