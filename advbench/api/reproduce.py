"""``advbench reproduce``: plan a paper table's runs, execute the plan, render the grid with published numbers.

Planning lives in :mod:`advbench.papers.plan` (which runs, and which already exist); executing a plan lives here,
since it trains and attacks through the api: base runs first (the others fine-tune from them), each run
trained, resumed or reused as planned, then attacked with its suites (a result stored with the same job
fingerprint is reused by :func:`~advbench.api.attack.attack` itself). A paper table's runs also get a
``paper.json`` (paper, table, the row it fills in every table that uses it, scale, smoke settings).
:func:`execute` also runs the quickstart's plan (:mod:`advbench.api.quickstart`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import advbench.papers.suites  # noqa: F401  (installs the lookup of paper and smoke suites before any attack)
from advbench import runs
from advbench.api.attack import attack
from advbench.api.certify import certify
from advbench.api.report import report
from advbench.api.train import train
from advbench.attacks import SUITES
from advbench.core.devices import resolve_device
from advbench.errors import UserError
from advbench.papers.plan import BASE_ROW, Plan, PlannedRun, make_plan

#: ``on_step(run, step)``: ``start`` (before a run, sequential execution), ``attack`` (before its suites,
#: sequential execution) or ``finished`` (after a run executed in a worker process)
OnStep = Callable[[PlannedRun, str], None]


def reproduce(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, dry_run: bool = False, jobs: int = 1, fmt: str = "markdown",
              show_paper: bool = True, device: str = "auto", quiet: bool = True, output: str | Path | None = None,
              smoke: dict[str, Any] | None = None, log: Any = None, threads: int | None = None,
              blocks: list[str] | None = None, paper_checkpoints: bool = False,
              data_dir: str | Path | None = None) -> tuple[Any, str]:
    """Reproduce a paper table: plan its runs, skip finished ones (content hash), train/resume and attack the
    rest, then render the grid with published numbers beside. ``dry_run``: return (plan, plan text) only.
    ``threads``: torch CPU threads per process (on a shared or small CPU box 1 avoids oversubscription);
    ``blocks``: plan only these blocks of the table (default: every block); ``paper_checkpoints``: evaluate the
    checkpoints the paper lists and fill each column with its best over them (the paper's rule); ``data_dir``: the
    dataset root every run loads from (not part of a run's hash)."""

    resolve_device(device)  # an unavailable device fails here, also for --dry-run
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    plan = make_plan(paper, table, scale=scale, out=out, dataset=dataset, model=model, seeds=seeds, rows=rows,
                     device=device, smoke=smoke, blocks=blocks, paper_checkpoints=paper_checkpoints,
                     data_dir=data_dir)
    if dry_run:
        return plan, plan.describe() + "\n"
    dirs = run_plan(plan, jobs=jobs, quiet=quiet, device=device, log=log, threads=threads)
    spec = f"{plan.recipe.paper}:{plan.recipe.table}"
    if not dirs:
        raise UserError(f"{spec}: no runs planned (check --rows)")
    return report(dirs, fmt=fmt, grid=spec, paper=show_paper, output=output,
                  plots=(Path(output).parent / "plots") if output and fmt == "html" else None)


def run_plan(plan: Plan, *, jobs: int = 1, quiet: bool = True, device: str = "auto",
             log: Callable[[str], None] | None = None, threads: int | None = None) -> list[Path]:
    """Execute ``plan`` (``jobs`` > 1: independent runs in parallel processes); returns the run directories
    of the table's rows (base runs first, then the runs that fine-tune from them). ``threads``: torch CPU
    threads per process (default: torch's own)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
        return execute(plan.runs, out=plan.out, n_eval=plan.n_eval, meta=_table_meta(plan), jobs=jobs, quiet=quiet,
                       device=device, on_step=_log_steps(log), threads=threads)
    finally:
        torch.set_num_threads(previous)


def _table_meta(plan: Plan) -> dict[str, Any]:
    """What every run of the plan records in its paper.json."""
    return {"paper": plan.recipe.paper, "table": plan.recipe.table, "scale": plan.scale, "dataset": plan.dataset,
            "model": plan.model, "n_eval": plan.n_eval, "substituted": plan.substituted,
            "smoke": {k: v for k, v in plan.smoke.items() if k != "seeds"} if plan.scale == "smoke" else None,
            **({"cpu": {**plan.recipe.cpu, "n_eval": plan.n_eval}} if plan.scale == "cpu" else {})}


def _log_steps(log: Callable[[str], None] | None) -> OnStep | None:
    """reproduce's progress lines: ``train ROW seed N`` before a run, ``finished ...`` after a parallel one."""
    if log is None:
        return None

    def on_step(p: PlannedRun, step: str) -> None:
        if step == "start":
            log(f"{p.action} {p.row} seed {p.seed}" + (" (base run)" if p.base else ""))
        elif step == "finished":
            log(f"finished {p.row} seed {p.seed}")

    return on_step


def execute(planned: list[PlannedRun], *, out: Path, n_eval: int, meta: dict[str, Any] | None = None,
            jobs: int = 1, quiet: bool = True, device: str = "auto", on_step: OnStep | None = None,
            threads: int | None = None, command: list[str] | None = None, recipe: str | None = None) -> list[Path]:
    """Execute planned runs: base runs first, then the runs that fine-tune from them (``jobs`` > 1: each stage
    in parallel processes with ``threads`` torch threads each). ``meta``: the paper.json record of a paper
    table (None: no paper.json); ``command``: recorded in config.json of the runs trained. Returns the run
    directories, in plan order, of every run but a base run that no row uses."""
    base_dirs: dict[str, str] = {}  # hash of a run already executed (base, transfer source, ...) -> its directory
    done: dict[int, Path] = {}
    stages = _stages(planned)
    for stage in (s for s in stages if s):
        if jobs <= 1 or len(stage) <= 1:
            for i in stage:
                if on_step:
                    on_step(planned[i], "start")
                done[i] = Path(_execute(planned[i], out, n_eval, meta, quiet, device, base_dirs, command=command,
                                        on_step=on_step, recipe=recipe))
        else:
            done.update(_in_processes(planned, stage, jobs, out, n_eval, meta, quiet, device, base_dirs, threads,
                                      command, on_step))
        for i in stage:
            base_dirs[planned[i].hash] = str(done[i])
    return [done[i] for i in range(len(planned)) if planned[i].row != BASE_ROW and planned[i].role != "source"]


def _stages(planned: list[PlannedRun]) -> list[list[int]]:
    """Indices of ``planned`` in the order they can run: base runs (the others fine-tune from them), then the
    transfer sources (crafted on by the rest's attacks), then the rest; each stage may run in parallel."""
    sources = {h for p in planned for h in (p.source, *p.sources.values()) if h}
    first = [i for i, p in enumerate(planned) if p.base]
    second = [i for i, p in enumerate(planned) if not p.base and p.hash in sources]
    rest = [i for i in range(len(planned)) if i not in set(first) | set(second)]
    return [s for s in (first, second, rest) if s]


def _in_processes(planned: list[PlannedRun], stage: list[int], jobs: int, out: Path, n_eval: int,
                  meta: dict[str, Any] | None, quiet: bool, device: str, base_dirs: dict[str, str],
                  threads: int | None, command: list[str] | None, on_step: OnStep | None) -> dict[int, Path]:
    """Execute the runs ``stage`` of ``planned`` in ``jobs`` spawned processes; index -> run directory."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    done: dict[int, Path] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {i: pool.submit(_execute, planned[i], out, n_eval, meta, quiet, device, dict(base_dirs), threads,
                                  command) for i in stage}
        for i, f in futures.items():
            done[i] = Path(f.result())
            if on_step:
                on_step(planned[i], "finished")
    return done


def _execute(p: PlannedRun, out: Path, n_eval: int, meta: dict[str, Any] | None, quiet: bool, device: str,
             base_dirs: dict[str, str], threads: int | None = None, command: list[str] | None = None,
             on_step: OnStep | None = None, recipe: str | None = None) -> str:
    """Train (or resume, or reuse) one planned run, then run its attack suites; returns the run directory.
    ``recipe``: the recipe source recorded for a run trained here (default: the table and row)."""
    if threads:
        torch.set_num_threads(threads)
    if p.action == "done" and p.existing:
        run_dir = Path(p.existing)
    elif p.action == "resume" and p.existing:
        run_dir = Path(train(resume=p.existing, quiet=quiet)[0])
    else:
        opts = dict(p.options)
        if p.init and p.init in base_dirs:
            opts["init_from"] = base_dirs[p.init]
        source = recipe or (f"{meta.get('paper')} table {meta.get('table')}, row '{p.row}'" if meta else None)
        run_dir = Path(train(out=p.out or out, name=p.name, settings=p.settings, quiet=quiet, command=command,
                             recipe=source, **opts)[0])
    if meta is not None:
        runs.write_json(run_dir / "paper.json", _paper_record(p, meta, run_dir, base_dirs))
    if on_step and p.suites:
        on_step(p, "attack")
    kept = [f"epoch-{e}" for e in p.options.get("save_epochs") or []]
    for suite, eps, *norm in p.suites:
        src = p.source_for(suite)
        source = base_dirs.get(src) if src and _has_transfer(suite) else None
        for checkpoint in ("best", *kept):  # the selected checkpoint, then those the paper evaluates
            attack(run_dir, suite=suite, eps=eps, norm=norm[0] if norm else None, n_eval=p.n_eval or n_eval,
                   batch_size=250, device=device, quiet=quiet, source=source, checkpoint=checkpoint,
                   sample_seed=p.sample_seed)
    for method, kwargs in p.certify:  # a stored certification of the same job is reused (its fingerprint)
        certify(run_dir, method=method, n_eval=p.n_eval or n_eval, device=device, quiet=quiet, **kwargs)
    return str(run_dir)


def _has_transfer(suite: str) -> bool:
    return any(e.attack == "transfer" for e in SUITES.get(suite).entries)


def _paper_record(p: PlannedRun, meta: dict[str, Any], run_dir: Path, base_dirs: dict[str, str]) -> dict[str, Any]:
    """The paper.json of a run: first table's record, plus the row it fills in every table that uses it."""
    key = f"{meta['paper']}:{meta['table']}"
    row = None if p.row == BASE_ROW else p.row
    record = {**meta, "row": row, "config_hash": p.hash, "role": "base" if p.base else p.role,
              "block": p.block, "blocks": {key: p.block} if row and p.block else {},
              "checkpoint_rule": "max-per-column" if p.options.get("save_epochs") else None,
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
        blocks = {**(first.get("blocks") or {}), **({key: p.block} if row and p.block else {})}
        record = {**first, "rows": rows, "blocks": blocks, "also_used_by": uses + ([] if same else [key]),
                  "smoke": meta.get("smoke"), "n_eval": meta.get("n_eval")}  # the settings of its latest use
        if same and row and not first.get("row"):
            record["row"] = row
    return record
