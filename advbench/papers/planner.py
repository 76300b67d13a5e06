"""The planner of one block of a paper table: its base runs, its rows, their transfer sources.

Smoke scale trains one standard *base* run per (dataset, model, seed, threat) from scratch and fine-tunes
every other row from it (``init_from``); the base run is the table's standard row when it has one and is
shared by every table with the same settings. At paper scale rows marked ``from_standard`` (SOAR, FOAR)
fine-tune from the table's standard run; every other row trains from scratch, as the papers did. A row may
train under its own threat model (``RowRecipe.norm``/``eps``); a suite may craft its transfer attacks on its
own source (:class:`~advbench.papers.recipes.Source`): a printed row's run or an independently trained one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.defenses import DEFENSES
from advbench.papers.planned import (
    BASE_ROW,
    Plan,
    PlannedRun,
    dataset_available,
    existing_runs,
    run_hash,
    sizes_available,
)
from advbench.papers.recipes import SOURCE_SEED_OFFSET, RowRecipe, TableRecipe, smoke_train_options
from advbench.papers.suites import smoke_suite
from advbench.threat import parse_eps


def smoke_overrides(row: RowRecipe, sm: dict[str, Any], paper_epochs: int, eps: str | float | None = None
                    ) -> dict[str, Any]:
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
            step = row.options.get("step_size")
            radius = row.eps if row.eps is not None else eps
            if isinstance(step, int | float) and not isinstance(step, bool) and radius is not None \
                    and out["steps"] * step < parse_eps(radius)[0]:
                # a step size the paper gives for its K steps, too small for the capped attack to reach the ball's
                # edge (SAT's MNIST 40 x 0.02 capped at 10: 0.2 < 0.3): the capped attack keeps the paper's K x step
                out["step_size"] = round(step * steps / out["steps"], 6)
    factor = int(sm["epochs"]) / max(1, int(paper_epochs))
    for name in defense.epoch_options:
        value = row.options.get(name, fields[name].default) if name in fields else None
        if value is None and name in fields:  # a default that depends on other options (AWP's per-base warm-up)
            value = _resolved_option(defense, row.options, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            continue
        scaled = value * factor
        out[name] = max(1, round(scaled)) if isinstance(value, int) else round(scaled, 6)
    if "schedule_per_iteration" in fields and (set(out) & set(defense.epoch_options)):
        out["schedule_per_iteration"] = True
    return out



def _resolved_option(defense: Any, options: dict[str, Any], name: str) -> Any:
    """The value option ``name`` takes when left at None (the Options' ``resolved``; None when it has none). Without
    it TRADES-AWP's 10 warm-up epochs (its base's default) were not compressed at smoke scale and the weight
    perturbation never switched on in a 3-epoch run."""
    resolve = getattr(defense.Options, "resolved", None)
    return resolve(defense.Options(**options), name) if resolve is not None else None


def cpu_recipe(recipe: TableRecipe) -> TableRecipe:
    """``recipe`` at cpu scale (:attr:`TableRecipe.cpu`): the paper's recipe from scratch with every row's epochs
    shortened by the same factor, its lr milestones and the defense options measured in epochs (SAT's lambda
    ramp, DAT's FOSC decay, warm-ups) scaled in proportion (so each row keeps its own schedule's shape), trained on
    the first ``n_train`` images and attacked on the first ``n_eval``."""
    cpu = recipe.cpu
    paper_epochs = int(recipe.train.get("epochs", 100))
    factor = int(cpu["epochs"]) / paper_epochs

    def shorter(train: dict[str, Any]) -> dict[str, Any]:
        out = dict(train)
        if "epochs" in out:
            out["epochs"] = max(1, round(int(out["epochs"]) * factor))
        if "milestones" in out:
            out["milestones"] = sorted({max(1, round(int(m) * factor)) for m in out["milestones"]})
        return out

    # the budget every row shares (a CPU hour's optimizer steps and the eps ramp that lets training leave the
    # large-eps plateau in them), stated in the cpu note: the same for every row, as the rule asks
    shared = {k: cpu[k] for k in ("batch_size", "eps_warmup", "eps_warmup_from", "schedule") if k in cpu}
    train = {**shorter(recipe.train), "n_train": int(cpu["n_train"]), **shared}
    # a row's options serve every eps block: a capped training attack must reach the largest ball
    largest_eps = max((recipe.eps, *(b.eps for b in recipe.blocks if b.eps)), key=lambda e: parse_eps(e)[0])
    rows: dict[str, RowRecipe | str] = {}
    for label, row in recipe.rows.items():
        if not isinstance(row, RowRecipe):
            rows[label] = row
            continue
        epochs = int({**recipe.train, **row.train}.get("epochs", paper_epochs))
        sm = {"epochs": max(1, round(epochs * factor)), "train_attack_steps": int(cpu.get("train_attack_steps", 10**6))}
        rows[label] = dataclasses.replace(row, options={**row.options, **smoke_overrides(row, sm, epochs, largest_eps)},
                                          train=shorter(row.train))
    blocks = tuple(dataclasses.replace(b, train=shorter(b.train), n_eval=int(cpu["n_eval"]) if b.n_eval else None)
                   for b in recipe.blocks)
    # checkpoint selection as the paper, on advbench's default held-out split (min(1000, 10%)): the paper's (SAT:
    # 5,000 images) would be validated with PGD every epoch and may not fit a small dataset
    split = dataclasses.replace(recipe.split, val_size=None) if recipe.split.val_size else recipe.split
    blocks = tuple(dataclasses.replace(b, split=None) for b in blocks)
    return dataclasses.replace(recipe, train=train, rows=rows, blocks=blocks, n_eval=int(cpu["n_eval"]), split=split,
                               cpu={**cpu, "paper_epochs": paper_epochs})


def skip_reason(row: RowRecipe | str, smoke_scale: bool) -> str | None:
    """Why a printed row is not planned at this scale (None: it is)."""
    if not isinstance(row, RowRecipe):
        return row
    if smoke_scale and not row.smoke:
        return "paper scale only (too slow for smoke scale on a CPU)"
    return None


class Planner:
    """Plans one block of a table at one scale (``recipe``: the table as the block sees it, see
    :func:`advbench.papers.plan.block_recipe`): the shared settings, one base run per (seed, model), the rows and
    their transfer sources."""

    def __init__(self, recipe: TableRecipe, scale: str, out: Path, dataset: str | None, model: str | None,
                 device: str, sm: dict[str, Any], block: str | None = None, data_dir: str | None = None) -> None:
        self.recipe, self.sm, self.device, self.model_override = recipe, sm, device, model
        self.block, self.data_dir = block, data_dir
        self.rows: dict[tuple[str, int], PlannedRun | None] = {}  # (row, seed) -> its run (None: the base run)
        self.planning: set[tuple[str, int]] = set()  # rows being planned (a source cycle stops here)
        self.sweeps: list[PlannedRun] = []  # one run per value of a row's sweep
        self.save_epochs: list[int] = []  # checkpoints kept and attacked besides the selected one (rows only)
        self.smoke_scale = scale == "smoke"
        self.out_dir = out / f"{recipe.paper}-table{recipe.table.replace('(', '').replace(')', '')}-{scale}"
        self.base_dir = out / "smoke-base" if self.smoke_scale else self.out_dir
        self.dataset, substituted = self._dataset(dataset)
        #: a small dataset on disk (scikit-learn's digits as MNIST) holds fewer training images than a scale asks
        #: for: every run then trains on all of them (the plan says so)
        self.available, held = sizes_available(self.dataset, data_dir) if scale != "paper" else (None, None)
        self.model = model or (sm["model"] if self.smoke_scale else recipe.model)
        self.n_eval = int(sm["n_eval"]) if self.smoke_scale else recipe.n_eval
        #: ... and fewer test images than the scale attacks: every run is then attacked on all of them
        short_test = held is not None and held < self.n_eval
        if short_test:
            wanted_eval, self.n_eval = self.n_eval, held
        self.suites = recipe.suites
        if self.smoke_scale:
            self.suites = tuple((smoke_suite(s[0], int(sm["n_eval_expensive"]), self.n_eval), *s[1:])
                                for s in recipe.suites)
        elif scale == "cpu":  # the expensive entries in their smoke variant, on every evaluated image
            self.suites = tuple((smoke_suite(s[0], self.n_eval, self.n_eval + 1), *s[1:]) for s in recipe.suites)
        self.certify = tuple(
            (c.method, {"norm": c.norm, "radii": c.radii, "name": c.name, **c.options,
                        **(c.smoke if self.smoke_scale else {})}) for c in recipe.certify)
        self.plan = Plan(recipe, scale, self.out_dir, self.dataset, self.model, self.n_eval, substituted, smoke=sm)
        if not self.smoke_scale:
            wanted = [int(recipe.train.get("n_train") or 0)]
        elif sm.get("from_scratch"):  # no base run
            wanted = [int(sm["n_train"])]
        else:
            wanted = [int(sm["n_train"]), int(sm.get("base_n_train", sm["n_train"]))]
        if self.available is not None and max(wanted) > self.available:
            self.plan.notes.append(f"{self.dataset} holds {self.available} training images (after the validation "
                                   f"split): runs asking for more ({', '.join(map(str, sorted(set(wanted))))}) train "
                                   "on all of them")
        if short_test:
            self.plan.notes.append(f"{self.dataset} holds {held} test images: the attacks run on all of them (the "
                                   f"scale asks for {wanted_eval})")
        self.existing = existing_runs(out)  # a run made for another table with the same config is reused
        self.extra: dict[tuple[str, int], PlannedRun | None] = {}  # independently trained transfer sources
        self.bases: dict[tuple[int, str], PlannedRun] = {}  # (seed, model) -> the standard run rows fine-tune from
        self.used: list[tuple[int, str]] = []  # the bases the plan needs, in the order rows need them

    def _dataset(self, dataset: str | None) -> tuple[str, str | None]:
        """(dataset, substitution note): smoke scale substitutes the synthetic data for a paper's not on disk."""
        if dataset:
            return dataset, None
        if self.smoke_scale and not dataset_available(self.recipe.dataset, self.data_dir):
            return "synthetic", (f"{self.recipe.dataset} is not on disk: smoke scale substitutes the embedded "
                                 "synthetic dataset")
        return self.recipe.dataset, None

    def planned(self, label: str, seed: int, opts: dict[str, Any], settings: dict[str, Any], where: Path,
                **kw: Any) -> PlannedRun:
        """One planned run, ``done`` / ``resume`` when a run with its content hash exists under ``out``."""
        if self.save_epochs and not kw.get("base") and kw.get("role", "row") == "row":
            opts = {**opts, "save_epochs": list(self.save_epochs)}
        h = run_hash(opts, settings, kw.get("init"))
        action, found = "train", None
        if h in self.existing:
            run_dir, status = self.existing[h]
            action, found = ("done" if status == "completed" else "resume"), str(run_dir)
        kw.setdefault("n_eval", None if self.smoke_scale else self.n_eval)
        if not self.smoke_scale and self.recipe.sample_seed is not None:
            kw.setdefault("sample_seed", self.recipe.sample_seed)
        return PlannedRun(label, seed, opts, settings, h, f"{runs.slug(label, kind='label')}-s{seed}-{h}", action,
                          found, out=str(where), block=self.block, **kw)

    def base_options(self, seed: int, net: str) -> dict[str, Any]:
        """TrainConfig options of the standard base run of ``seed`` and model ``net``."""
        common = {"dataset": self.dataset, "defense": "standard", "eps": self.recipe.eps, "norm": self.recipe.norm,
                  "seed": seed, "device": self.device, "model": net,
                  **({"data_dir": self.data_dir} if self.data_dir else {})}
        if not self.smoke_scale:
            train = dict(self.recipe.train)
            if self.dataset != self.recipe.dataset:  # the recipe's dataset options are its dataset's (--dataset)
                train.pop("dataset_options", None)
            return self._capped({**common, **train, **self.recipe.split.options()})
        opts = self._capped({**common, **smoke_train_options({}, self.sm, base=True)})
        if self.dataset == "synthetic":
            syn = dict(self.sm["synthetic_options"])
            opts["dataset_options"] = {**syn, "n_test": max(int(syn.get("n_test", 0)), self.n_eval)}
        return opts

    def _capped(self, opts: dict[str, Any]) -> dict[str, Any]:
        """``opts`` with ``n_train`` at most the training images the dataset holds (see :attr:`available`)."""
        if self.available is not None and opts.get("n_train") and int(opts["n_train"]) > self.available:
            opts["n_train"] = self.available
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
        threat = {k: v for k, v in (("norm", row.norm), ("eps", row.eps)) if v is not None}
        if not self.smoke_scale:
            split = row.split.options() if row.split else {}
            return ({**self.base_options(seed, net), **row.train, **split, "defense": row.defense, **threat}, {},
                    row.from_standard)
        train = {**self.recipe.train, **row.train}
        opts = self._capped({**self.base_options(seed, net), **smoke_train_options(train, self.sm, base=False),
                             "defense": row.defense, **threat})
        scratch = bool(self.sm.get("from_scratch"))
        if DEFENSES.get(row.defense).smoke_low_lr(row.options) and not scratch:
            opts["lr"] = self.sm.get("lr_reg", self.sm["lr"])
        overrides = smoke_overrides(row, self.sm, int(train.get("epochs", 100)), self.recipe.eps)
        return opts, overrides, not scratch and not (row.defense == "standard" and not row.options)

    def source_of(self, seed: int, net: str) -> str | None:
        """Hash of the table's default transfer source of a row (``source="standard"``: an independently trained
        standard run, another seed's base)."""
        if self.recipe.source != "standard":
            return None
        self.used.append((seed + SOURCE_SEED_OFFSET, net))
        return self.base_for(seed + SOURCE_SEED_OFFSET, net).hash

    def sources_of(self, seed: int, net: str) -> dict[str, str]:
        """suite -> hash of its own transfer source (:attr:`TableRecipe.sources`), planned once."""
        out: dict[str, str] = {}
        for suite, src in self.recipe.sources.items():
            if src.row is not None:
                if (src.row, seed) in self.planning:  # a row is not its own source (nor its source's)
                    continue
                run = self.row_run(src.row, seed)
                out[suite] = run.hash if run is not None else self.base_for(seed, net).hash
                continue
            if src.defense == "standard" and not src.options and not src.model and not src.train:
                self.used.append((seed + SOURCE_SEED_OFFSET, net))
                out[suite] = self.base_for(seed + SOURCE_SEED_OFFSET, net).hash
                continue
            row = RowRecipe(src.defense, src.options, model=src.model, train=src.train, smoke_model=src.smoke_model)
            key = (f"{src.label}", seed + SOURCE_SEED_OFFSET)
            if key not in self.extra:
                self.extra[key] = self.plan_row(src.label, row, seed + SOURCE_SEED_OFFSET, attacked=False)
            planned = self.extra[key]
            if planned is None:  # a plain standard source at smoke scale is that seed's base run of its model
                src_net = self.model_override or ((row.smoke_model if self.smoke_scale else row.model) or self.model)
                self.used.append((key[1], src_net))
                planned = self.base_for(key[1], src_net)
            out[suite] = planned.hash
        return out

    def row_run(self, label: str, seed: int) -> PlannedRun | None:
        """The run of printed row ``label`` and ``seed`` (planned now if it is not yet; None: the base run)."""
        if (label, seed) not in self.rows:
            row = self.recipe.rows[label]
            assert isinstance(row, RowRecipe)
            self.planning.add((label, seed))
            self.rows[(label, seed)] = self.plan_row(label, row, seed)
            self.planning.discard((label, seed))
        return self.rows[(label, seed)]

    def plan_row(self, label: str, row: RowRecipe, seed: int, attacked: bool = True) -> PlannedRun | None:
        """The run of one printed row and seed; None when it is the base run itself (or the same run).
        ``attacked`` False: a transfer source (trained, not attacked)."""
        net = self.model_override or ((row.smoke_model if self.smoke_scale else row.model) or self.model)
        base = self.base_for(seed, net)
        source = self.source_of(seed, net) if attacked else None
        sources = self.sources_of(seed, net) if attacked else {}
        opts, overrides, fine_tune = self.row_options(row, seed, net)
        settings = {f"defense.{k}": v for k, v in {**row.options, **overrides}.items()}
        if not fine_tune and row.defense == "standard" and not settings:
            # at smoke scale a plain standard row IS the base run; at paper scale when the configs agree
            is_base = self.smoke_scale or self.planned(label, seed, opts, settings, self.out_dir).hash == base.hash
            if is_base and base.row == BASE_ROW and attacked:
                base.row, base.suites, base.sources, base.certify = label, self.suites, sources, self.certify
                self.used.append((seed, net))
                return None
            if is_base and not attacked:
                return None
            if is_base:
                self.plan.skipped_rows[label] = f"same run as row {base.row!r}"
                return None
        kw: dict[str, Any] = {"suites": self.suites if attacked else (), "certify": self.certify if attacked else (),
                              "overrides": overrides, "source": source,
                              "sources": sources, "role": "row" if attacked else "source"}
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
        extra = [p for p in self.extra.values() if p is not None]
        self.plan.runs = [self.bases[k] for k in dict.fromkeys(self.used)] + extra + row_runs
        return self.plan
