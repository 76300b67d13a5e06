"""Plan and run the runs of a paper table: skip what exists (content hash), train/resume the rest, attack.

A planned run is identified by the SHA-256 of its resolved TrainConfig (minus fields that do not change
the model: device, data_dir, download; ``init_from`` counts as the hash of the run it names, not its
path). A run directory with the same hash and a completed summary is reused; an interrupted one is
resumed; attacks already stored with the same job fingerprint are skipped by :func:`advbench.api.attack`
itself. Each run gets a ``paper.json`` (paper, table, row per table, scale, smoke settings).

Smoke scale trains one standard *base* run per (dataset, model, seed, threat) from scratch and fine-tunes
every other row from it (``init_from``); the base run is the table's standard row when it has one and is
shared by every table with the same settings. At paper scale rows marked ``from_standard`` (SOAR, FOAR)
fine-tune from the table's standard run; every other row trains from scratch, as the papers did.
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
from advbench.papers.recipes import (
    SMOKE,
    SOURCE_SEED_OFFSET,
    RowRecipe,
    TableRecipe,
    ensure_suite,
    get_recipe,
    smoke_suite,
    smoke_text,
    smoke_train_options,
    table_status,
    uses_low_lr,
)

SCALES = ("smoke", "paper")
_NOT_HASHED = {"device", "data_dir", "download"}
BASE_ROW = "(standard base)"  # row label of a base run that no printed row of the table uses


def config_hash(config: dict[str, Any]) -> str:
    """Content hash of a resolved config dict (``config.json``'s ``config``), 12 hex digits.

    ``init_from`` naming a run directory is hashed as that run's own config hash (``run:HASH``), so the
    hash does not depend on where the runs live.
    """
    body = {k: v for k, v in config.items() if k not in _NOT_HASHED}
    init = body.get("init_from")
    if init and not str(init).startswith("run:") and runs.is_run_dir(init):
        try:
            body["init_from"] = "run:" + config_hash(runs.read_json(Path(init) / "config.json")["config"])
        except (OSError, KeyError, ValueError):
            pass
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
    base: bool = False  # the standard run other rows fine-tune from
    init: str | None = None  # hash of the base run this run fine-tunes from
    out: str | None = None  # directory the run is created in
    overrides: dict[str, Any] = field(default_factory=dict)  # smoke changes to the row's defense options
    source: str | None = None  # hash of the run transfer attacks are crafted on


@dataclass
class Plan:
    """The runs of one table at one scale (base runs first)."""

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
        if self.scale == "smoke":
            lines.append(f"  smoke: {smoke_text(self.smoke)}")
        names = {p.hash: p.name for p in self.runs}
        sources = {p.source for p in self.runs if p.source}
        for p in self.runs:
            where = f" ({p.existing})" if p.existing else ""
            suites = ", ".join(s + (f"@{e}" if e else "") for s, e in p.suites) or "none"
            role = " [transfer source]" if p.hash in sources else " [base]" if p.base else ""
            role += f" [fine-tunes {names.get(p.init, p.init)}]" if p.init else ""
            role += f" [transfer from {names.get(p.source, p.source)}]" if p.source else ""
            lines.append(f"  [{p.action:6}] {p.row} seed {p.seed}: {p.options['defense']} "
                         f"{json.dumps(p.settings, sort_keys=True) if p.settings else ''}{role} -> {p.name}{where}; "
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
        init = cfg.get("init_from")
        if init and not runs.is_run_dir(init) and (run / "paper.json").is_file():
            # the base run moved: paper.json remembers the hash of the run this one fine-tuned from
            known = (runs.read_json(run / "paper.json").get("init_from") or {}).get("config_hash")
            if known:
                cfg = {**cfg, "init_from": f"run:{known}"}
        h = config_hash(cfg)
        if h not in found or status == "completed":
            found[h] = (run, status)
    return found


def _slug(label: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in label).strip("-").lower()
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug


#: defense options measured in epochs: smoke scale multiplies them by smoke epochs / paper epochs
_EPOCH_OPTIONS = ("schedule_scale", "fosc_epochs", "warmup_epochs")


def _smoke_overrides(row: RowRecipe, sm: dict[str, Any], paper_epochs: int) -> dict[str, Any]:
    """Defense options smoke scale changes: the training attack's ``steps`` capped at ``train_attack_steps``;
    epoch-based curricula (SAT's lambda ramp, DAT's FOSC decay, AWP warm-up) compressed into the smoke epochs
    and updated per iteration."""
    import dataclasses

    from advbench.defenses import DEFENSES

    fields = {f.name: f for f in dataclasses.fields(DEFENSES.get(row.defense).Options)}
    out: dict[str, Any] = {}
    if "steps" in fields:
        steps = row.options.get("steps", fields["steps"].default)
        if isinstance(steps, int) and steps > int(sm["train_attack_steps"]):
            out["steps"] = int(sm["train_attack_steps"])
    factor = int(sm["epochs"]) / max(1, int(paper_epochs))
    for name in _EPOCH_OPTIONS:
        value = row.options.get(name, fields[name].default) if name in fields else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            continue
        scaled = value * factor
        out[name] = max(1, round(scaled)) if isinstance(value, int) else round(scaled, 6)
    if "schedule_per_iteration" in fields and (set(out) & set(_EPOCH_OPTIONS)):
        out["schedule_per_iteration"] = True
    return out


def make_plan(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, device: str = "auto", smoke: dict[str, Any] | None = None) -> Plan:
    """Plan the runs of ``paper`` table ``table``; ``smoke`` overrides entries of :data:`SMOKE` (tests)."""
    from advbench.config import config_to_dict
    from advbench.resolve import make_train_config

    if scale not in SCALES:
        raise UserError(f"unknown --scale '{scale}'; choose smoke or paper")
    tid = table_id(table)
    recipe = get_recipe(paper, tid)
    if recipe is None:
        status, detail = table_status(paper, tid)
        raise UserError(f"{paper} table {tid} cannot be reproduced ({detail}); see 'advbench reproduce --list'")
    if rows:
        unknown = [r for r in rows if r not in recipe.rows]
        if unknown:
            raise UserError(f"{paper} table {tid} has no row {unknown[0]!r}; rows: {', '.join(recipe.rows)}")
    sm = {**SMOKE, **(smoke or {})}
    smoke_scale = scale == "smoke"
    out_dir = Path(out) / f"{paper}-table{tid.replace('(', '').replace(')', '')}-{scale}"
    base_dir = Path(out) / "smoke-base" if smoke_scale else out_dir
    substituted = None
    if dataset:
        ds = dataset
    elif smoke_scale and not dataset_available(recipe.dataset):
        ds = "synthetic"
        substituted = f"{recipe.dataset} is not on disk: smoke scale substitutes the embedded synthetic dataset"
    else:
        ds = recipe.dataset
    mdl = model or (sm["model"] if smoke_scale else recipe.model)
    n_eval = int(sm["n_eval"]) if smoke_scale else recipe.n_eval
    the_seeds = list(seeds) if seeds else list(sm["seeds"] if smoke_scale else recipe.seeds)
    suites = recipe.suites
    if smoke_scale:
        suites = tuple((smoke_suite(s, int(sm["n_eval_expensive"]), n_eval), e) for s, e in recipe.suites)
    plan = Plan(recipe, scale, out_dir, ds, mdl, n_eval, substituted, smoke=sm)
    existing = _existing_runs(Path(out))  # a run made for another table with the same config is reused

    def planned(label: str, seed: int, opts: dict[str, Any], settings: dict[str, Any], where: Path,
                **kw: Any) -> PlannedRun:
        cfg = config_to_dict(make_train_config(opts, settings))
        if kw.get("init"):
            cfg["init_from"] = f"run:{kw['init']}"
        h = config_hash(cfg)
        action, found = "train", None
        if h in existing:
            run_dir, status = existing[h]
            action, found = ("done" if status == "completed" else "resume"), str(run_dir)
        return PlannedRun(label, seed, opts, settings, h, f"{_slug(label)}-s{seed}-{h}", action, found,
                          out=str(where), **kw)

    def base_options(seed: int, net: str) -> dict[str, Any]:
        common = {"dataset": ds, "defense": "standard", "eps": recipe.eps, "norm": recipe.norm, "seed": seed,
                  "device": device, "model": net}
        if smoke_scale:
            opts = {**common, **smoke_train_options({}, sm, base=True)}
            if ds == "synthetic":
                syn = dict(sm["synthetic_options"])
                opts["dataset_options"] = {**syn, "n_test": max(int(syn.get("n_test", 0)), n_eval)}
            return opts
        return {**common, **recipe.train}

    bases: dict[tuple[int, str], PlannedRun] = {}  # (seed, model) -> the standard run rows fine-tune from

    def base_for(seed: int, net: str) -> PlannedRun:
        if (seed, net) not in bases:
            b = planned(BASE_ROW, seed, base_options(seed, net), {}, base_dir, base=True)
            b.name = f"standard-base{'' if net == mdl else '-' + _slug(net)}-s{seed}-{b.hash}"
            bases[(seed, net)] = b
        return bases[(seed, net)]

    row_runs: list[PlannedRun] = []
    used: list[tuple[int, str]] = []
    if recipe.source not in (None, "standard"):
        raise UserError(f"{recipe.key}: unknown transfer source {recipe.source!r} (only 'standard' is planned)")
    for label, row in recipe.rows.items():
        if rows and label not in rows:
            continue
        if not isinstance(row, RowRecipe):
            plan.skipped_rows[label] = row
            continue
        if smoke_scale and not row.smoke:
            plan.skipped_rows[label] = "paper scale only (too slow for smoke scale on a CPU)"
            continue
        net = model or ((row.smoke_model or mdl) if smoke_scale else (row.model or mdl))
        for seed in the_seeds:
            base = base_for(seed, net)
            source = None
            if recipe.source == "standard":  # an independently trained standard run: a base run of another seed
                src = base_for(seed + SOURCE_SEED_OFFSET, net)
                used.append((seed + SOURCE_SEED_OFFSET, net))
                source = src.hash
            if smoke_scale:
                opts = {**base_options(seed, net),
                        **smoke_train_options({**recipe.train, **row.train}, sm, base=False), "defense": row.defense}
                if uses_low_lr(row.defense, row.options):
                    opts["lr"] = sm.get("lr_reg", sm["lr"])
                overrides = _smoke_overrides(row, sm, int({**recipe.train, **row.train}.get("epochs", 100)))
                fine_tune = not (row.defense == "standard" and not row.options)
            else:
                opts = {**base_options(seed, net), **row.train, "defense": row.defense}
                overrides = {}
                fine_tune = row.from_standard
            settings = {f"defense.{k}": v for k, v in {**row.options, **overrides}.items()}
            if not fine_tune and row.defense == "standard" and not settings:
                # at smoke scale a plain standard row IS the base run; at paper scale when the configs agree
                is_base = smoke_scale or planned(label, seed, opts, settings, out_dir).hash == base.hash
                if is_base and base.row == BASE_ROW:
                    base.row, base.suites = label, suites
                    used.append((seed, net))
                    continue
                if is_base:
                    plan.skipped_rows[label] = f"same run as row {base.row!r}"
                    continue
            if fine_tune:
                opts["init_from"] = str(Path(base.existing) if base.existing else base_dir / base.name)
                p = planned(label, seed, opts, settings, out_dir, init=base.hash, suites=suites, overrides=overrides,
                            source=source)
                used.append((seed, net))
            else:
                p = planned(label, seed, opts, settings, out_dir, suites=suites, overrides=overrides, source=source)
            row_runs.append(p)
    for b in bases.values():  # a base run that is also a row is attacked, so it needs the source too
        if b.row != BASE_ROW and recipe.source == "standard":
            b.source = bases[(b.seed + SOURCE_SEED_OFFSET, b.options["model"])].hash
    plan.runs = [bases[k] for k in dict.fromkeys(used)] + row_runs
    return plan


def _paper_record(p: PlannedRun, meta: dict[str, Any], run_dir: Path, base_dirs: dict[str, str]) -> dict[str, Any]:
    """The paper.json of a run: first table's record, plus the row it fills in every table that uses it."""
    key = f"{meta['paper']}:{meta['table']}"
    row = None if p.row == BASE_ROW else p.row
    record = {**meta, "row": row, "config_hash": p.hash, "role": "base" if p.base else "row",
              "init_from": ({"run": base_dirs.get(p.init), "config_hash": p.init} if p.init else None),
              "smoke_overrides": p.overrides, "rows": {key: row} if row else {}, "also_used_by": []}
    meta_file = run_dir / "paper.json"
    if meta_file.is_file():  # a run reused by another table keeps its first record and lists the others
        first = runs.read_json(meta_file)
        same = (first.get("paper"), first.get("table")) == (meta["paper"], meta["table"])
        uses = [u for u in first.get("also_used_by", []) if u != key]
        rows = dict(first.get("rows") or {})
        if first.get("row") and first.get("paper"):
            rows.setdefault(f"{first['paper']}:{first['table']}", first["row"])
        if row:
            rows[key] = row
        record = {**first, "rows": rows, "also_used_by": uses + ([] if same else [key]),
                  "smoke": meta.get("smoke"), "n_eval": meta.get("n_eval")}  # the settings of its latest use
        if same and row and not first.get("row"):
            record["row"] = row
    return record


def _execute(p: PlannedRun, out: str, n_eval: int, meta: dict[str, Any], quiet: bool, device: str,
             base_dirs: dict[str, str] | None = None, threads: int | None = None) -> str:
    """Train (or resume, or reuse) one planned run, then run its attack suites; returns the run directory."""
    from advbench import api

    if threads:
        import torch

        torch.set_num_threads(threads)
    base_dirs = base_dirs or {}
    if p.action == "done" and p.existing:
        run_dir = Path(p.existing)
    elif p.action == "resume" and p.existing:
        run_dir, _ = api.train(resume=p.existing, quiet=quiet)
    else:
        opts = dict(p.options)
        if p.init and p.init in base_dirs:
            opts["init_from"] = base_dirs[p.init]
        run_dir, _ = api.train(out=p.out or out, name=p.name, settings=p.settings, quiet=quiet, **opts)
    run_dir = Path(run_dir)
    runs.write_json(run_dir / "paper.json", _paper_record(p, meta, run_dir, base_dirs))
    for suite, eps in p.suites:
        ensure_suite(suite)  # smoke variants are registered on demand (also in spawned processes)
        source = base_dirs.get(p.source) if p.source and _has_transfer(suite) else None
        api.attack(run_dir, suite=suite, eps=eps, n_eval=n_eval, batch_size=250, device=device, quiet=quiet,
                   source=source)
    return str(run_dir)


def _has_transfer(suite: str) -> bool:
    from advbench.attacks import SUITES

    return any(e.attack == "transfer" for e in SUITES.get(suite).entries)


def run_plan(plan: Plan, *, jobs: int = 1, quiet: bool = True, device: str = "auto",
             log: Callable[[str], None] | None = None, threads: int | None = None) -> list[Path]:
    """Execute ``plan`` (``jobs`` > 1: independent runs in parallel processes); returns the run directories
    of the table's rows (base runs first, then the runs that fine-tune from them). ``threads``: torch CPU
    threads per process (default: torch's own)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_stages(plan, jobs, quiet, device, log, threads)
    finally:
        torch.set_num_threads(previous)


def _run_stages(plan: Plan, jobs: int, quiet: bool, device: str, log: Callable[[str], None] | None,
                threads: int | None) -> list[Path]:
    plan.out.mkdir(parents=True, exist_ok=True)
    meta = {"paper": plan.recipe.paper, "table": plan.recipe.table, "scale": plan.scale, "dataset": plan.dataset,
            "model": plan.model, "n_eval": plan.n_eval, "substituted": plan.substituted,
            "smoke": {k: v for k, v in plan.smoke.items() if k != "seeds"} if plan.scale == "smoke" else None}
    base_dirs: dict[str, str] = {}
    done: dict[int, Path] = {}
    stages = [[i for i, p in enumerate(plan.runs) if p.base], [i for i, p in enumerate(plan.runs) if not p.base]]
    for stage in stages:  # base runs first: the others fine-tune from them
        if not stage:
            continue
        if jobs <= 1 or len(stage) <= 1:
            for i in stage:
                p = plan.runs[i]
                if log:
                    log(f"{p.action} {p.row} seed {p.seed}" + (" (base run)" if p.base else ""))
                done[i] = Path(_execute(p, str(plan.out), plan.n_eval, meta, quiet, device, base_dirs))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {i: pool.submit(_execute, plan.runs[i], str(plan.out), plan.n_eval, meta, quiet, device,
                                          dict(base_dirs), threads) for i in stage}
                for i, f in futures.items():
                    done[i] = Path(f.result())
                    if log:
                        log(f"finished {plan.runs[i].row} seed {plan.runs[i].seed}")
        for i in stage:
            if plan.runs[i].base:
                base_dirs[plan.runs[i].hash] = str(done[i])
    return [done[i] for i in range(len(plan.runs)) if plan.runs[i].row != BASE_ROW]
