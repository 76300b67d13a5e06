"""Plan and run the runs of a paper table: skip what exists (content hash), train/resume the rest, attack.

A planned run is identified by the SHA-256 of its resolved TrainConfig (minus fields that do not change
the model: device, data_dir, download). A run directory with the same hash and a completed summary is
reused; an interrupted one is resumed; attacks already stored with the same job fingerprint are skipped
by :func:`advbench.api.attack` itself. Each run gets a ``paper.json`` (paper, table, row, scale).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.errors import UserError
from advbench.papers.published import table_id
from advbench.papers.recipes import SMOKE, RowRecipe, TableRecipe, get_recipe, table_status

SCALES = ("smoke", "paper")
_NOT_HASHED = {"device", "data_dir", "download"}


def config_hash(config: dict[str, Any]) -> str:
    """Content hash of a resolved config dict (``config.json``'s ``config``), 12 hex digits."""
    body = {k: v for k, v in config.items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dataset_available(name: str, data_dir: str | None = None) -> bool:
    """True when ``name`` loads from disk without downloading (the synthetic dataset always does)."""
    if name == "synthetic":
        return True
    from advbench.data import load_splits

    try:
        load_splits(name, data_dir=data_dir, download=False, n_test=1)
    except (UserError, OSError, RuntimeError):
        return False
    return True


@dataclass
class PlannedRun:
    """One training run of the plan, with its attack jobs and what will happen to it."""

    row: str
    seed: int
    options: dict[str, Any]
    settings: dict[str, Any]
    hash: str
    name: str
    action: str  # done / resume / train
    existing: str | None = None
    suites: tuple[tuple[str, str | None], ...] = ()


@dataclass
class Plan:
    """The runs of one table at one scale."""

    recipe: TableRecipe
    scale: str
    out: Path
    dataset: str
    model: str
    n_eval: int
    substituted: str | None
    runs: list[PlannedRun] = field(default_factory=list)
    skipped_rows: dict[str, str] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)  # the effective smoke settings (recorded per run)

    def describe(self) -> str:
        """Human-readable plan (``--dry-run``)."""
        r = self.recipe
        lines = [f"plan for {r.paper} table {r.table} at {self.scale} scale: {len(self.runs)} runs, dataset "
                 f"{self.dataset}, model {self.model}, n-eval {self.n_eval}, out {self.out}"]
        if self.substituted:
            lines.append(f"  note: {self.substituted}")
        for p in self.runs:
            where = f" ({p.existing})" if p.existing else ""
            suites = ", ".join(s + (f"@{e}" if e else "") for s, e in p.suites)
            lines.append(f"  [{p.action:6}] {p.row} seed {p.seed}: {p.options['defense']} "
                         f"{json.dumps(p.settings, sort_keys=True) if p.settings else ''} -> {p.name}{where}; "
                         f"attacks: {suites}")
        for row, why in self.skipped_rows.items():
            lines.append(f"  [skip  ] {row}: {why}")
        return "\n".join(lines)


def _existing_runs(out: Path) -> dict[str, tuple[Path, str]]:
    """hash -> (run dir, summary status) of the runs under ``out``."""
    found: dict[str, tuple[Path, str]] = {}
    if not out.exists():
        return found
    for run in runs.find_runs([out]):
        try:
            record = runs.read_json(run / "config.json")
            cfg = record["config"]
        except (OSError, KeyError, ValueError):
            continue
        summary = run / "summary.json"
        status = runs.read_json(summary).get("status", "?") if summary.is_file() else "?"
        h = config_hash(cfg)
        if h not in found or status == "completed":
            found[h] = (run, status)
    return found


def make_plan(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, device: str = "auto", smoke: dict[str, Any] | None = None) -> Plan:
    """Plan the runs of ``paper`` table ``table``; ``smoke`` overrides entries of :data:`SMOKE` (tests)."""
    from advbench.api import make_train_config
    from advbench.config import config_to_dict

    if scale not in SCALES:
        raise UserError(f"unknown --scale '{scale}'; choose smoke or paper")
    tid = table_id(table)
    recipe = get_recipe(paper, tid)
    if recipe is None:
        status, detail = table_status(paper, tid)
        raise UserError(f"{paper} table {tid} cannot be reproduced ({detail}); see 'advbench reproduce --list'")
    sm = {**SMOKE, **(smoke or {})}
    out_dir = Path(out) / f"{paper}-table{tid.replace('(', '').replace(')', '')}-{scale}"
    substituted = None
    if dataset:
        ds = dataset
    elif scale == "smoke" and not dataset_available(recipe.dataset):
        ds = "synthetic"
        substituted = f"{recipe.dataset} is not on disk: smoke scale substitutes the embedded synthetic dataset"
    else:
        ds = recipe.dataset
    mdl = model or (sm["model"] if scale == "smoke" else recipe.model)
    n_eval = int(sm["n_eval"]) if scale == "smoke" else recipe.n_eval
    the_seeds = list(seeds) if seeds else list(sm["seeds"] if scale == "smoke" else recipe.seeds)
    plan = Plan(recipe, scale, out_dir, ds, mdl, n_eval, substituted, smoke=sm)
    existing = _existing_runs(Path(out))  # a run made for another table with the same config is reused
    for label, row in recipe.rows.items():
        if rows and label not in rows:
            continue
        if not isinstance(row, RowRecipe):
            plan.skipped_rows[label] = row
            continue
        for seed in the_seeds:
            train = {**recipe.train, **row.train}
            opts: dict[str, Any] = {"dataset": ds, "model": row.model if (row.model and scale == "paper") else mdl,
                                    "defense": row.defense, "eps": recipe.eps, "norm": recipe.norm, "seed": seed,
                                    "device": device, **train}
            if scale == "smoke":
                for k in ("epochs", "n_train", "batch_size", "val_n", "val_attack_steps", "schedule"):
                    opts[k] = sm[k]
                opts["milestones"] = []
                opts.pop("model_options", None)
                if ds == "synthetic":
                    opts["dataset_options"] = dict(sm["synthetic_options"])
            settings = {f"defense.{k}": v for k, v in row.options.items()}
            cfg = make_train_config(opts, settings)
            h = config_hash(config_to_dict(cfg))
            slug = "".join(ch if ch.isalnum() else "-" for ch in label).strip("-").lower()
            while "--" in slug:
                slug = slug.replace("--", "-")
            name = f"{slug}-s{seed}-{h}"
            action, where = "train", None
            if h in existing:
                run_dir, status = existing[h]
                action, where = ("done" if status == "completed" else "resume"), str(run_dir)
            plan.runs.append(PlannedRun(label, seed, opts, settings, h, name, action, where, recipe.suites))
    return plan


def _execute(p: PlannedRun, out: str, n_eval: int, meta: dict[str, Any], quiet: bool, device: str) -> str:
    """Train (or resume, or reuse) one planned run, then run its attack suites; returns the run directory."""
    from advbench import api

    if p.action == "done" and p.existing:
        run_dir = Path(p.existing)
    elif p.action == "resume" and p.existing:
        run_dir, _ = api.train(resume=p.existing, quiet=quiet)
    else:
        run_dir, _ = api.train(out=out, name=p.name, settings=p.settings, quiet=quiet, **p.options)
    meta_file = Path(run_dir) / "paper.json"
    record = {**meta, "row": p.row, "config_hash": p.hash}
    if meta_file.is_file():  # a run reused by another table keeps its first record and lists the others
        first = runs.read_json(meta_file)
        uses = [u for u in first.get("also_used_by", []) if u != f"{meta['paper']}:{meta['table']}"]
        same = (first.get("paper"), first.get("table")) == (meta["paper"], meta["table"])
        record = {**first, "also_used_by": uses + ([] if same else [f"{meta['paper']}:{meta['table']}"])}
    runs.write_json(meta_file, record)
    for suite, eps in p.suites:
        api.attack(run_dir, suite=suite, eps=eps, n_eval=n_eval, batch_size=64, device=device, quiet=quiet)
    return str(run_dir)


def run_plan(plan: Plan, *, jobs: int = 1, quiet: bool = True, device: str = "auto",
             log: Callable[[str], None] | None = None) -> list[Path]:
    """Execute ``plan`` (``jobs`` > 1: independent runs in parallel processes); returns the run directories."""
    plan.out.mkdir(parents=True, exist_ok=True)
    meta = {"paper": plan.recipe.paper, "table": plan.recipe.table, "scale": plan.scale, "dataset": plan.dataset,
            "model": plan.model, "n_eval": plan.n_eval, "substituted": plan.substituted,
            "smoke": {k: v for k, v in plan.smoke.items() if k != "seeds"} if plan.scale == "smoke" else None}
    args = [(p, str(plan.out), plan.n_eval, meta, quiet, device) for p in plan.runs]
    done: list[Path] = []
    if jobs <= 1 or len(args) <= 1:
        for a in args:
            if log:
                log(f"{a[0].action} {a[0].row} seed {a[0].seed}")
            done.append(Path(_execute(*a)))
        return done
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_execute, *a) for a in args]
        for a, f in zip(args, futures, strict=True):
            done.append(Path(f.result()))
            if log:
                log(f"finished {a[0].row} seed {a[0].seed}")
    return done
