"""Planned runs and their content hashes: what a plan is made of, and which planned runs already exist.

A planned run is identified by the SHA-256 of its resolved TrainConfig (minus fields that do not change
the model: device, data_dir, download; ``init_from`` counts as the hash of the run it names, not its
path). A run directory with the same hash and a completed summary is reused (``done``); an interrupted one is
resumed (``resume``); anything else is trained (``train``). The api executes a plan
(:mod:`advbench.api.reproduce`); this module only reads run folders.

Smoke scale trains one standard *base* run per (dataset, model, seed, threat) from scratch and fine-tunes
every other row from it (``init_from``); the base run is the table's standard row when it has one and is
shared by every table with the same settings. At paper scale rows marked ``from_standard`` (SOAR, FOAR)
fine-tune from the table's standard run; every other row trains from scratch, as the papers did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.config import HASH_NEUTRAL, config_to_dict
from advbench.errors import UserError
from advbench.papers.recipes import TableRecipe, cpu_text, smoke_text
from advbench.resolve import make_train_config

SCALES = ("smoke", "cpu", "paper")
_NOT_HASHED = {"device", "data_dir", "download"}
BASE_ROW = "(standard base)"  # row label of a base run that no printed row of the table uses


def config_hash(config: dict[str, Any]) -> str:
    """Content hash of a resolved config dict (``config.json``'s ``config``), 12 hex digits.

    ``init_from`` naming a run directory is hashed as that run's own config hash (``run:HASH``), so the
    hash does not depend on where the runs live.
    """
    body = {k: v for k, v in config.items()
            if k not in _NOT_HASHED and not (k in HASH_NEUTRAL and v == HASH_NEUTRAL[k])}
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


def sizes_available(name: str, data_dir: str | None = None) -> tuple[int | None, int | None]:
    """(training images a run of dataset ``name`` can use after its default validation split, test images), read
    with one load; (None, None) for the synthetic dataset, whose size the smoke scale sets, or when the dataset is
    not on disk."""
    if name == "synthetic":
        return None, None
    from advbench.data import load_splits

    try:
        meta = load_splits(name, data_dir=data_dir, download=False, n_test=1).meta
        return int(meta["n_train_available"]), int(meta["n_test_available"])
    except (UserError, OSError, RuntimeError, KeyError, TypeError, ValueError):
        return None, None


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
    sources: dict[str, str] = field(default_factory=dict)  # suite -> hash of its own transfer source
    block: str | None = None  # the block of the table the run fills (None: the main block)
    n_eval: int | None = None  # test images its suites attack (None: the plan's)
    role: str = "row"  # row / base / source (an independently trained transfer source)
    sample_seed: int | None = None  # its suites attack n_eval test images drawn with this seed (None: the first)
    #: certifications after the attacks: (method, keyword arguments of advbench.api.certify)
    certify: tuple[tuple[str, dict[str, Any]], ...] = ()

    def source_for(self, suite: str) -> str | None:
        """Hash of the run ``suite``'s transfer attacks are crafted on."""
        from advbench.papers.recipes import smoke_suite_parent

        return self.sources.get(smoke_suite_parent(suite), self.source)


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
    blocks: dict[str, str] = field(default_factory=dict)  # block planned -> one line of its settings
    skipped_blocks: dict[str, str] = field(default_factory=dict)  # block not planned -> why
    notes: list[str] = field(default_factory=list)  # e.g. how a swept row's run is picked

    def describe(self) -> str:
        """Human-readable plan (``--dry-run``)."""
        r = self.recipe
        lines = [f"plan for {r.paper} table {r.table} at {self.scale} scale: {len(self.runs)} runs, dataset "
                 f"{self.dataset}, model {self.model}, n-eval {self.n_eval}, out {self.out}"]
        if self.substituted:
            lines.append(f"  note: {self.substituted}")
        if self.scale == "smoke":
            lines.append(f"  smoke: {smoke_text(self.smoke)}")
        if self.scale == "cpu":
            lines.append(f"  cpu: {cpu_text({**r.cpu, 'n_eval': self.n_eval})}")
        lines += [f"  block {name}: {text}" for name, text in self.blocks.items()]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  [skip  ] block {name}: {why}" for name, why in self.skipped_blocks.items()]
        names = {p.hash: p.name for p in self.runs}
        sources = {h for p in self.runs for h in (p.source, *p.sources.values()) if h}
        for p in self.runs:
            lines.append(_run_line(p, names, sources, len(self.blocks) > 1))
        for row, why in self.skipped_rows.items():
            lines.append(f"  [skip  ] {row}: {why}")
        return "\n".join(lines)


def suites_text(suites: tuple[tuple[str, ...], ...]) -> str:
    """``pgd@8/255, soar-l2@1.74 (l2)``: a run's suites with their eps lists and norms."""
    out = [s[0] + (f"@{s[1]}" if len(s) > 1 and s[1] else "") + (f" ({s[2]})" if len(s) > 2 and s[2] else "")
           for s in suites]
    return ", ".join(out) or "none"


def _run_line(p: PlannedRun, names: dict[str, str], sources: set[str], blocks: bool) -> str:
    where = f" ({p.existing})" if p.existing else ""
    role = " [transfer source]" if p.hash in sources else " [base]" if p.base else ""
    role += f" [block {p.block}]" if blocks and p.block else ""
    role += f" [fine-tunes {names.get(p.init, p.init)}]" if p.init else ""
    for suite, h in (({"": p.source} if p.source else {}) | p.sources).items():
        role += f" [{suite + ' ' if suite else ''}transfer from {names.get(h, h)}]"
    return (f"  [{p.action:6}] {p.row} seed {p.seed}: {p.options['defense']} "
            f"{json.dumps(p.settings, sort_keys=True) if p.settings else ''}{role} -> {p.name}{where}; "
            f"attacks: {suites_text(p.suites)}" + (f"; certify: {', '.join(k['name'] for _, k in p.certify)}"
                                                   if p.certify else ""))


def existing_runs(out: Path) -> dict[str, tuple[Path, str]]:
    """hash -> (run dir, summary status) of the runs under ``out``."""
    found: dict[str, tuple[Path, str]] = {}
    if not out.is_dir():
        return found
    for run in runs.find_runs([out]):
        try:
            record = runs.read_json(run / "config.json")
            cfg = record["config"]
        except (OSError, KeyError, ValueError):
            continue
        status = _summary_status(run)
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


def _summary_status(run: Path) -> str:
    """The ``status`` of a run's summary.json (``?`` when it has none yet)."""
    summary = run / "summary.json"
    return runs.read_json(summary).get("status", "?") if summary.is_file() else "?"


def run_action(run: str | Path) -> tuple[str, str | None]:
    """(action, existing run) for a run planned into the folder ``run`` itself: ``done`` when it completed,
    ``resume`` when it is a run that did not, ``train`` when there is no run yet."""
    if not runs.is_run_dir(run):
        return "train", None
    return ("done" if _summary_status(Path(run)) == "completed" else "resume"), str(run)


def run_hash(options: dict[str, Any], settings: dict[str, Any], init: str | None = None) -> str:
    """Content hash of the run that ``options`` and ``--set`` ``settings`` resolve to; ``init``: the hash of
    the run it fine-tunes from (its ``init_from``)."""
    cfg = config_to_dict(make_train_config(options, settings))
    if init:
        cfg["init_from"] = f"run:{init}"
    return config_hash(cfg)
