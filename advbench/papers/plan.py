"""Plan the runs of a paper table: which runs it needs, and which of them already exist (content hash).

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

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.config import config_to_dict
from advbench.defenses import DEFENSES
from advbench.errors import UserError
from advbench.papers import paper_names
from advbench.papers.published import table_id
from advbench.papers.recipes import (
    SMOKE,
    SOURCE_SEED_OFFSET,
    RowRecipe,
    TableRecipe,
    get_recipe,
    smoke_text,
    smoke_train_options,
)
from advbench.papers.status import table_status
from advbench.papers.suites import smoke_suite
from advbench.registry import unknown_name_message
from advbench.resolve import make_train_config

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


def _smoke_overrides(row: RowRecipe, sm: dict[str, Any], paper_epochs: int) -> dict[str, Any]:
    """Defense options smoke scale changes: the training attack's ``steps`` capped at ``train_attack_steps``;
    the options the defense measures in epochs (its ``epoch_options``: SAT's lambda ramp, DAT's FOSC decay, AWP
    warm-up) compressed into the smoke epochs and updated per iteration."""
    defense = DEFENSES.get(row.defense)
    fields = {f.name: f for f in dataclasses.fields(defense.Options)}
    out: dict[str, Any] = {}
    if "steps" in fields:
        steps = row.options.get("steps", fields["steps"].default)
        if isinstance(steps, int) and steps > int(sm["train_attack_steps"]):
            out["steps"] = int(sm["train_attack_steps"])
    factor = int(sm["epochs"]) / max(1, int(paper_epochs))
    for name in defense.epoch_options:
        value = row.options.get(name, fields[name].default) if name in fields else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            continue
        scaled = value * factor
        out[name] = max(1, round(scaled)) if isinstance(value, int) else round(scaled, 6)
    if "schedule_per_iteration" in fields and (set(out) & set(defense.epoch_options)):
        out["schedule_per_iteration"] = True
    return out


def _checked_recipe(paper: str, table: str, scale: str, rows: list[str] | None) -> TableRecipe:
    """The recipe of ``paper`` table ``table``; a UserError for an unknown scale, table, row or source."""
    if scale not in SCALES:
        raise UserError(f"unknown --scale '{scale}'; choose smoke or paper")
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
    if recipe.source not in (None, "standard"):
        raise UserError(f"{recipe.key}: unknown transfer source {recipe.source!r} (only 'standard' is planned)")
    return recipe


def _skip_reason(row: RowRecipe | str, smoke_scale: bool) -> str | None:
    """Why a printed row is not planned at this scale (None: it is)."""
    if not isinstance(row, RowRecipe):
        return row
    if smoke_scale and not row.smoke:
        return "paper scale only (too slow for smoke scale on a CPU)"
    return None


class _Planner:
    """Plans one table at one scale: the shared settings, one base run per (seed, model), and the rows."""

    def __init__(self, recipe: TableRecipe, scale: str, out: Path, dataset: str | None, model: str | None,
                 device: str, sm: dict[str, Any]) -> None:
        self.recipe, self.sm, self.device, self.model_override = recipe, sm, device, model
        self.smoke_scale = scale == "smoke"
        self.out_dir = out / f"{recipe.paper}-table{recipe.table.replace('(', '').replace(')', '')}-{scale}"
        self.base_dir = out / "smoke-base" if self.smoke_scale else self.out_dir
        self.dataset, substituted = self._dataset(dataset)
        self.model = model or (sm["model"] if self.smoke_scale else recipe.model)
        self.n_eval = int(sm["n_eval"]) if self.smoke_scale else recipe.n_eval
        self.suites = recipe.suites
        if self.smoke_scale:
            self.suites = tuple((smoke_suite(s, int(sm["n_eval_expensive"]), self.n_eval), e) for s, e in recipe.suites)
        self.plan = Plan(recipe, scale, self.out_dir, self.dataset, self.model, self.n_eval, substituted, smoke=sm)
        self.existing = existing_runs(out)  # a run made for another table with the same config is reused
        self.bases: dict[tuple[int, str], PlannedRun] = {}  # (seed, model) -> the standard run rows fine-tune from
        self.used: list[tuple[int, str]] = []  # the bases the plan needs, in the order rows need them

    def _dataset(self, dataset: str | None) -> tuple[str, str | None]:
        """(dataset, substitution note): smoke scale substitutes the synthetic data for a paper's not on disk."""
        if dataset:
            return dataset, None
        if self.smoke_scale and not dataset_available(self.recipe.dataset):
            return "synthetic", (f"{self.recipe.dataset} is not on disk: smoke scale substitutes the embedded "
                                 "synthetic dataset")
        return self.recipe.dataset, None

    def planned(self, label: str, seed: int, opts: dict[str, Any], settings: dict[str, Any], where: Path,
                **kw: Any) -> PlannedRun:
        """One planned run, ``done`` / ``resume`` when a run with its content hash exists under ``out``."""
        h = run_hash(opts, settings, kw.get("init"))
        action, found = "train", None
        if h in self.existing:
            run_dir, status = self.existing[h]
            action, found = ("done" if status == "completed" else "resume"), str(run_dir)
        return PlannedRun(label, seed, opts, settings, h, f"{runs.slug(label, kind='label')}-s{seed}-{h}", action,
                          found, out=str(where), **kw)

    def base_options(self, seed: int, net: str) -> dict[str, Any]:
        """TrainConfig options of the standard base run of ``seed`` and model ``net``."""
        common = {"dataset": self.dataset, "defense": "standard", "eps": self.recipe.eps, "norm": self.recipe.norm,
                  "seed": seed, "device": self.device, "model": net}
        if not self.smoke_scale:
            return {**common, **self.recipe.train}
        opts = {**common, **smoke_train_options({}, self.sm, base=True)}
        if self.dataset == "synthetic":
            syn = dict(self.sm["synthetic_options"])
            opts["dataset_options"] = {**syn, "n_test": max(int(syn.get("n_test", 0)), self.n_eval)}
        return opts

    def base_for(self, seed: int, net: str) -> PlannedRun:
        """The base run of ``seed`` and model ``net`` (planned once, shared by every row that needs it)."""
        if (seed, net) not in self.bases:
            b = self.planned(BASE_ROW, seed, self.base_options(seed, net), {}, self.base_dir, base=True)
            b.name = f"standard-base{'' if net == self.model else '-' + runs.slug(net, kind='label')}-s{seed}-{b.hash}"
            self.bases[(seed, net)] = b
        return self.bases[(seed, net)]

    def row_options(self, row: RowRecipe, seed: int, net: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """(TrainConfig options, smoke changes to the defense options, fine-tuned from the base) of a row."""
        if not self.smoke_scale:
            return {**self.base_options(seed, net), **row.train, "defense": row.defense}, {}, row.from_standard
        train = {**self.recipe.train, **row.train}
        opts = {**self.base_options(seed, net), **smoke_train_options(train, self.sm, base=False),
                "defense": row.defense}
        if DEFENSES.get(row.defense).smoke_low_lr(row.options):
            opts["lr"] = self.sm.get("lr_reg", self.sm["lr"])
        overrides = _smoke_overrides(row, self.sm, int(train.get("epochs", 100)))
        return opts, overrides, not (row.defense == "standard" and not row.options)

    def source_of(self, seed: int, net: str) -> str | None:
        """Hash of the transfer source of a row (an independently trained standard run: another seed's base)."""
        if self.recipe.source != "standard":
            return None
        self.used.append((seed + SOURCE_SEED_OFFSET, net))
        return self.base_for(seed + SOURCE_SEED_OFFSET, net).hash

    def plan_row(self, label: str, row: RowRecipe, seed: int) -> PlannedRun | None:
        """The run of one printed row and seed; None when it is the base run itself (or the same run)."""
        net = self.model_override or ((row.smoke_model if self.smoke_scale else row.model) or self.model)
        base = self.base_for(seed, net)
        source = self.source_of(seed, net)
        opts, overrides, fine_tune = self.row_options(row, seed, net)
        settings = {f"defense.{k}": v for k, v in {**row.options, **overrides}.items()}
        if not fine_tune and row.defense == "standard" and not settings:
            # at smoke scale a plain standard row IS the base run; at paper scale when the configs agree
            is_base = self.smoke_scale or self.planned(label, seed, opts, settings, self.out_dir).hash == base.hash
            if is_base and base.row == BASE_ROW:
                base.row, base.suites = label, self.suites
                self.used.append((seed, net))
                return None
            if is_base:
                self.plan.skipped_rows[label] = f"same run as row {base.row!r}"
                return None
        kw: dict[str, Any] = {"suites": self.suites, "overrides": overrides, "source": source}
        if fine_tune:
            opts["init_from"] = str(Path(base.existing) if base.existing else self.base_dir / base.name)
            kw["init"] = base.hash
            self.used.append((seed, net))
        return self.planned(label, seed, opts, settings, self.out_dir, **kw)

    def finish(self, row_runs: list[PlannedRun]) -> Plan:
        """The plan: the bases used (first), then the rows; a base that is also an attacked row gets a source."""
        for b in self.bases.values():
            if b.row != BASE_ROW and self.recipe.source == "standard":
                b.source = self.bases[(b.seed + SOURCE_SEED_OFFSET, b.options["model"])].hash
        self.plan.runs = [self.bases[k] for k in dict.fromkeys(self.used)] + row_runs
        return self.plan


def make_plan(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, device: str = "auto", smoke: dict[str, Any] | None = None,
              eps: str | None = None, norm: str | None = None) -> Plan:
    """Plan the runs of ``paper`` table ``table``; ``smoke`` overrides entries of :data:`SMOKE` (tests); ``eps`` and
    ``norm`` replace the table's threat model (a user's own budget for a recipe's rows)."""
    recipe = _checked_recipe(paper, table, scale, rows)
    if eps is not None or norm is not None:
        recipe = dataclasses.replace(recipe, eps=eps or recipe.eps, norm=norm or recipe.norm)
    sm = {**SMOKE, **(smoke or {})}
    planner = _Planner(recipe, scale, Path(out), dataset, model, device, sm)
    the_seeds = list(seeds) if seeds else list(sm["seeds"] if planner.smoke_scale else recipe.seeds)
    row_runs: list[PlannedRun] = []
    for label, row in recipe.rows.items():
        if rows and label not in rows:
            continue
        why = _skip_reason(row, planner.smoke_scale)
        if why is not None:
            planner.plan.skipped_rows[label] = why
            continue
        row_runs += [p for seed in the_seeds if (p := planner.plan_row(label, row, seed)) is not None]
    return planner.finish(row_runs)
