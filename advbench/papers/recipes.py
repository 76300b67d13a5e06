"""Typed recipes of the seed papers' tables: which runs a table needs and which attack fills each column.

A :class:`TableRecipe` maps the printed row labels of a table (from :func:`~advbench.papers.published.table_layout`)
to a defense with options (:class:`RowRecipe`) and the printed column labels to a suite entry
(:class:`ColumnRecipe`). ``paper`` scale keeps the paper's dataset, model, schedule, epochs, seeds and
test-set size; ``smoke`` scale shrinks them (see :data:`SMOKE`) so a whole grid runs in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from advbench.papers import paper_modules
from advbench.papers.published import table_id, table_layout

Transform = Literal["acc", "error", "top5-error", "sum"]
SOURCE_SEED_OFFSET = 1000  # seed of a transfer-source run = the row's seed + this

#: what smoke scale changes (recorded in every run's paper.json and printed in the caption).
#: One standard "base" run per (dataset, model, seed, threat) is trained from scratch for ``base_epochs``
#: and shared by every table (content hash); every other row fine-tunes from it for ``epochs`` epochs
#: (``init_from``), with the training attacks capped at ``train_attack_steps`` steps. Attacks run on the
#: first ``n_eval`` test images; the expensive entries of a suite (PGD-1000, PGD-20 x 50 restarts,
#: AutoAttack, ...) run on the first ``n_eval_expensive`` of them (see :func:`advbench.papers.suites.smoke_suite`).
#: ``lr_reg`` is the fine-tuning lr of rows whose defense says ``smoke_low_lr`` (TRADES family, input-gradient
#: regularizers; see :meth:`advbench.defenses.Defense.smoke_low_lr`). At ``lr`` their regularizer wipes out much
#: of the base model's accuracy in the first epoch and 3 epochs do not recover it; measured on synthetic/small-cnn
#: (val clean / PGD-5 after 3 epochs): TRADES beta 9 64/34 at 0.002 vs 90/53 at 0.0005, CURE 22/18 vs 48/31,
#: double backprop 68/39 vs 98/34, while PGD-AT (96/61 vs 97/46), SOAR (95/56 vs 97/42) and MMA (92/48 vs 91/41)
#: are better at 0.002.
SMOKE: dict[str, Any] = {
    "model": "small-cnn", "base_epochs": 10, "base_n_train": 4000, "epochs": 3, "n_train": 2000, "batch_size": 128,
    "optimizer": "adam", "lr": 0.002, "lr_reg": 0.0005, "schedule": "cosine", "weight_decay": 0.0,
    "val_n": 200, "val_attack_steps": 5, "train_attack_steps": 5,
    "n_eval": 250, "n_eval_expensive": 100, "seeds": (0,),
    "synthetic_options": {"n_train": 4500, "n_test": 250}, "eps_warmup": 0.0,
}
#: what smoke scale changes on a dataset of handwritten digits on disk (MNIST, or scikit-learn's digits written as
#: MNIST, see docs/reproducing.md): the same budget for every row (10 epochs of batch 16 from scratch, the training
#: eps ramped from 0 over the first 2 epochs of attacks, training attacks up to 10 steps), each row's own curriculum
#: unchanged on top. Measured
#: on the 1,348 real training digits at eps 0.3 (SAT Table 2, PGD-AT, AutoAttack on 100 test digits): with the
#: synthetic settings (3 epochs of batch 128, no warm-up) every row ends at chance or below 62% clean and 0-10%
#: AutoAttack; with the warm-up but training attacks capped at 5 steps the models reach 66% PGD-5 on the held-out
#: digits and 27% PGD-20 but 1% APGD-CE and 0% AutoAttack (a 5-step attack at eps 0.3 teaches the model to mask
#: its gradients, not to be robust); with 10 steps PGD-AT ends at 96.8% clean and 35% AutoAttack (fine-tuned, a
#: 4-epoch ramp). Every row trains from scratch (``from_scratch``: no standard base run to fine-tune), at the one lr:
#: fine-tuned from the base, TRADES ended at 0% AutoAttack (3% at lr 0.002: its KL term flattened the base's
#: logits, clean CE 0.7 at 95% accuracy) and AT at 35%; from scratch, TRADES 39% and AT 48%, in less time. The eps
#: ramp starts where each row first attacks (``eps_warmup_from``): H-SAT trains on clean digits until lambda first
#: rises (epoch 4.3 of 10), and a ramp from epoch 0 handed it the full eps there at once (loss 2.3, clean 60%).
#: A 2-epoch ramp rather than 4 (whole eps-0.3 block, AutoAttack on 100 digits): AT 33 -> 68%, TRADES 39 -> 55%,
#: DAT 41 -> 62%, P-SAT 34 -> 60%, H-SAT 0 -> 5% (it attacks in the last 57% of the epochs only; 19% with 20
#: epochs). One constant lr for every row, not the smoke scale's cosine decay: H-SAT attacks only from epoch 4.3,
#: where a cosine lr is already down to 60% (and to 5% when lambda reaches 1); constant, H-SAT 5 -> 54% and AT
#: 68 -> 85% (the paper's own shape, /10 at 4/7, 5/7 and 6/7 of the epochs: H-SAT 0%, AT 73%). The whole block
#: takes 5 min on 2 quiet cores (``--jobs 2``).
SMOKE_BY_DATASET: dict[str, dict[str, Any]] = {
    "mnist": {"epochs": 10, "eps_warmup": 2.0, "batch_size": 16, "train_attack_steps": 10, "from_scratch": True,
              "eps_warmup_from": "attack", "schedule": "constant"},
    "fashion-mnist": {"epochs": 10, "eps_warmup": 2.0, "batch_size": 16, "train_attack_steps": 10,
                      "from_scratch": True, "eps_warmup_from": "attack", "schedule": "constant"},
}
#: TrainConfig keys that smoke scale sets itself (a recipe's values for them apply at paper scale only)
SMOKE_TRAIN_KEYS = ("epochs", "n_train", "batch_size", "optimizer", "lr", "schedule", "weight_decay",
                    "val_n", "val_attack_steps", "eps_warmup", "eps_warmup_from")
_PAPER_ONLY_TRAIN_KEYS = {"milestones", "gamma", "momentum", "nesterov", "model_options",
                          "max_batches_per_epoch", "init_from", "dataset_options"}
#: training-set sizes of the papers' datasets (the plan states the split without loading the data)
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "svhn": 73257, "mnist": 60000, "imagenette": 9469}
DEFAULT_VAL_MAX = 1000  # advbench's default held-out validation size: min(1000, 10% of the training set)


@dataclass(frozen=True)
class Split:
    """How a paper-scale run uses the training set and picks its checkpoint.

    ``val_size``: training images held out for checkpoint selection (0: the full training set, as the paper;
    None: advbench's default, min(1000, 10%)); ``select``: the selection rule (``last``: the last epoch; None:
    the defense's default, best validation robust accuracy, clean for standard training); ``paper``: what the
    paper says (its sentence), printed beside the split in the plan and the grid caption. Smoke scale keeps
    its own split (200 held-out images)."""

    val_size: int | None = None
    select: str | None = None
    paper: str = ""

    def options(self) -> dict[str, Any]:
        """The TrainConfig options this split sets (all of them: a row's split replaces its table's whole; the
        defaults resolve, and hash, as if unset)."""
        return {"val_size": self.val_size, "select": self.select or "auto"}

    def text(self, dataset: str) -> str:
        """``trains on 49,000 of cifar10's 50,000 training images (1,000 held out; checkpoint: ...)``."""
        full = TRAIN_SIZES.get(dataset)
        held = self.val_size if self.val_size is not None else (
            min(DEFAULT_VAL_MAX, full // 10) if full else None)
        rule = {"last": "the last epoch", "val-clean": "best held-out clean accuracy",
                "val-robust": "best held-out robust accuracy"}.get(
            self.select or "", "best held-out robust accuracy (clean for standard training)")
        if held == 0:
            rule = "the last epoch" if self.select in (None, "last") else rule
            what = (f"the full training set ({full:,} images)" if full else "the full training set") + \
                f", nothing held out; checkpoint: {rule}"
        elif full and held is not None:
            what = f"{full - held:,} of {dataset}'s {full:,} training images ({held:,} held out; checkpoint: {rule})"
        else:
            what = f"{held if held is not None else 'min(1000, 10%)'} training images held out; checkpoint: {rule}"
        return f"trains on {what}" + (f" [paper: {self.paper}]" if self.paper else "")


def smoke_text(sm: dict[str, Any]) -> str:
    """One line describing smoke settings (dry-run plan, grid caption); tolerant of older records."""
    g = sm.get
    if sm.get("from_scratch"):
        text = f"every row trained from scratch for {g('epochs')} epochs on {g('n_train')} images; model {g('model')}"
    else:
        text = (f"standard base run {g('base_epochs', '?')} epochs from scratch on {g('base_n_train', g('n_train'))} "
                f"images, every other row fine-tuned from it for {g('epochs')} epochs on {g('n_train')}; "
                f"model {g('model')}")
    if "optimizer" in sm:
        text += f", {g('optimizer')} lr {g('lr')} {g('schedule')}"
        if "lr_reg" in sm and not sm.get("from_scratch"):
            text += f" (TRADES-family and gradient-regularizer rows lr {g('lr_reg')})"
    if "batch_size" in sm:
        text += f"; batch {g('batch_size')}"
    if "train_attack_steps" in sm:
        text += f"; training attacks <= {g('train_attack_steps')} steps"
    if sm.get("eps_warmup"):
        text += f"; every row's training eps ramps from 0 over its first {g('eps_warmup')} epochs" + (
            " of attacks (H-SAT's step schedule trains on clean images until lambda first rises)"
            if sm.get("eps_warmup_from") == "attack" else "")
    text += f"; n_eval {g('n_eval')}"
    if "n_eval_expensive" in sm:
        text += f" ({g('n_eval_expensive')} for the expensive attacks)"
    return text


def cpu_text(cpu: dict[str, Any]) -> str:
    """One line describing a cpu scale (dry-run plan, grid caption)."""
    of = f" of {cpu['paper_epochs']}" if cpu.get("paper_epochs") else ""
    text = (f"the paper's recipe from scratch, shortened to {cpu.get('epochs')} epochs{of} on {cpu.get('n_train')} "
            "training images (milestones and epoch-based curricula scaled in proportion)")
    if cpu.get("batch_size"):
        text += f"; batch {cpu['batch_size']} for every row"
    if cpu.get("schedule") == "constant":
        text += "; the paper's first lr held constant for every row (its lr drops are not taken)"
    if cpu.get("eps_warmup"):
        text += f"; every row's training eps ramps from 0 over its first {cpu['eps_warmup']} epochs" + (
            " of attacks" if cpu.get("eps_warmup_from") == "attack" else "")
    if cpu.get("train_attack_steps"):
        text += f"; training attacks <= {cpu['train_attack_steps']} steps"
    text += f"; n_eval {cpu.get('n_eval')} (expensive attacks in their smoke variant)"
    return text + (f"; {cpu['note']}" if cpu.get("note") else "")


def smoke_train_options(train: dict[str, Any], smoke: dict[str, Any], *, base: bool) -> dict[str, Any]:
    """TrainConfig options of a smoke run: the recipe's ``train`` minus its schedule, plus the smoke schedule."""
    keep = {k: v for k, v in train.items() if k not in _PAPER_ONLY_TRAIN_KEYS and k not in SMOKE_TRAIN_KEYS}
    opts = {**keep, **{k: smoke[k] for k in SMOKE_TRAIN_KEYS if k in smoke}}
    if base:
        opts.pop("eps_warmup", None)  # the standard base run has no training attack
        opts.pop("eps_warmup_from", None)
        opts["epochs"] = smoke["base_epochs"]
        opts["n_train"] = smoke.get("base_n_train", smoke["n_train"])
    return opts


#: the name of a smoke variant of a suite: ``SUITE-smokeN`` (its expensive entries on the first N images)
SMOKE_SUITE_NAME = re.compile(r"^(?P<suite>.+)-smoke(?P<n>\d+)$")


def smoke_suite_parent(name: str) -> str:
    """``pgd-smoke50`` -> ``pgd``; any other name unchanged (torch-free: the report side uses it)."""
    m = SMOKE_SUITE_NAME.match(name)
    return m["suite"] if m else name


@dataclass(frozen=True)
class RowRecipe:
    """How to train one printed row: a registered defense, its options, and optional overrides."""

    defense: str
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # paper-scale model when the row's block differs from the table's
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides for this row
    smoke: bool = True  # reproduced at smoke scale (False: paper scale only, e.g. a WRN block)
    from_standard: bool = False  # paper scale: fine-tune from the table's standard run (SOAR, FOAR)
    smoke_model: str | None = None  # model at smoke scale (default: the smoke model)
    norm: str | None = None  # the row's own training threat model (SOAR Tables 9, 10, 13: L2-trained baselines)
    eps: str | None = None
    #: a hyperparameter the paper tuned: one run per value, the grid keeps the one :attr:`pick` chooses
    sweep: Sweep | None = None
    #: the row's own training-set split and checkpoint rule at paper scale (default: the table's)
    split: Split | None = None
    #: the row's own paper-scale seeds (default: the table's); SOAR's WideResNet rows are single checkpoints
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Sweep:
    """A row's hyperparameter search: ``option`` over ``values`` (``smoke_values`` at smoke scale), and the rule
    that picks the printed run: the largest value whose clean accuracy is within ``tolerance`` points of row
    ``reference``'s (SCORPIO: "as large as possible while still nearly matching the clean accuracy of AT")."""

    option: str
    values: tuple[float, ...]
    reference: str
    tolerance: float = 2.0
    smoke_values: tuple[float, ...] = ()

    def text(self) -> str:
        """The rule in words (plan and grid notes)."""
        return (f"the largest {self.option} in {list(self.values)} whose clean accuracy is within {self.tolerance:g} "
                f"points of row {self.reference!r}")


@dataclass(frozen=True)
class ColumnRecipe:
    """Which stored result fills one printed column.

    ``attack`` is the suite entry's label (``Clean`` for clean accuracy, ``Worst case`` for the
    per-sample worst case); ``transform``: ``acc`` (accuracy %), ``error`` (100 - accuracy), ``top5-error``
    (100 - the clean top-5 accuracy stored as ``clean_top5_acc``; Clean columns only) or ``sum`` (sum of the
    columns named in ``parts``, SAT's Clean + Adv).
    """

    suite: str | None
    attack: str
    eps: str | None = None
    transform: Transform = "acc"
    parts: tuple[str, ...] = ()
    #: a measurement of the training run instead of an attack result (``suite`` None): ``seconds_per_epoch``,
    #: ``peak_memory_mb`` or ``passes_per_step`` (:data:`advbench.report.grid_runs.MEASURES`)
    measure: str | None = None
    #: the value divided by the same column's value of this row (RAT Table 6's ratios to TRADES)
    relative_to: str | None = None
    #: a key of the attack result's stored ``summary`` (RayS's ``adbd``, a diagnostic's statistic) instead of
    #: its accuracy, shown as stored
    value: str | None = None


@dataclass(frozen=True)
class Certification:
    """A certification every row's run gets after its attacks (``advbench certify``): ``method`` smoothing /
    lbound / omega, in ``norm``, at ``radii`` (None: the method's default radii), with ``options`` (sigma, n, n0,
    alpha, batches, grid) and ``smoke`` (the options smoke scale replaces, e.g. a smaller n). Its result is
    ``certify/<name>.json``; a column reads it as suite ``certify:<name>``."""

    method: str
    norm: str = "l2"
    radii: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The result's file name (``advbench certify``'s default naming)."""
        if self.method == "smoothing":
            return f"smoothing-sigma{self.options.get('sigma', 0.25):g}"
        return f"{self.method}-{self.norm}"

    @property
    def suite(self) -> str:
        return f"certify:{self.name}"


@dataclass(frozen=True)
class Block:
    """A part of a table trained with its own settings: the paper's other dataset, model or threat model.

    The block fills the cells (``rows`` x ``columns``): empty ``columns`` means the table's main columns (those
    no block names), empty ``rows`` the rows the main block trains. Unset fields fall back to the table's.
    ``row_options`` / ``row_train``: per printed row, defense options / TrainConfig overrides for this block
    (the WRN lambda steps); ``note``: what the paper says of the block's settings (printed in the plan)."""

    name: str
    columns: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    dataset: str | None = None
    model: str | None = None
    norm: str | None = None
    eps: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    row_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: tuple[tuple[str, ...], ...] | None = None
    n_eval: int | None = None
    note: str = ""
    split: Split | None = None  # the block's own paper-scale split (default: the table's)
    #: the block's own recipe of some of its columns (Finlay & Oberman's ImageNet block reports top-5 error where
    #: the CIFAR-10 rows of the same column report top-1), or why the block does not measure a column
    column_recipes: dict[str, ColumnRecipe | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """The model a suite's transfer attacks are crafted on.

    ``row``: a printed row of the table (its run, same seed, is reused); otherwise an independently trained run of
    ``defense`` with ``options`` (and ``model``/``train`` overrides), seed + SOURCE_SEED_OFFSET, planned once."""

    row: str | None = None
    defense: str = "standard"
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    label: str = "transfer source"
    smoke_model: str | None = None  # its model at smoke scale (default: the smoke model)


ClaimKind = Literal["max", "min", "greater", "less"]


@dataclass(frozen=True)
class Claim:
    """One headline ordering a paper states for its table, checked on the measured grid (``report --grid --paper``).

    ``kind`` ``max`` / ``min``: ``row`` has the highest / lowest value of ``column`` among ``among`` (empty: every
    row of the table measured in that column); ``greater`` / ``less``: ``row``'s value of ``column`` is above /
    below ``other``'s. Values are as the grid shows them (an ``error`` column is 100 - accuracy: lower is better,
    so its claims use ``min`` / ``less``)."""

    text: str
    kind: ClaimKind
    column: str
    row: str
    other: str | None = None
    among: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableRecipe:
    """Everything needed to reproduce one published table."""

    paper: str
    table: str
    dataset: str
    model: str
    norm: str
    eps: str
    train: dict[str, Any]
    rows: dict[str, RowRecipe | str]  # printed row label -> recipe, or the reason it is not trainable
    columns: dict[str, ColumnRecipe | str]  # printed column label -> recipe, or the reason it is not measured
    suites: tuple[tuple[str, ...], ...]  # (suite, eps list or None = the run's eps[, norm])
    seeds: tuple[int, ...] = (0,)
    n_eval: int = 10000
    threat_text: str = ""
    attack_versions: str = ""
    compute: str = ""
    discrepancies: tuple[str, ...] = ()
    #: transfer source of black-box columns: ``standard`` = an independently trained standard run (same
    #: dataset, model and schedule, seed + SOURCE_SEED_OFFSET), planned like a base run
    source: str | None = None
    #: other sources, per suite (a suite not named here uses ``source``)
    sources: dict[str, Source] = field(default_factory=dict)
    #: blocks besides the main one (the table's own dataset, model and threat model)
    blocks: tuple[Block, ...] = ()
    main_block: str = "main"  # the main block's name (``--block``)
    #: the checkpoints the paper evaluates, taking each column's best over them (``reproduce --paper-checkpoints``;
    #: default: the checkpoint advbench selects on a held-out validation split)
    checkpoint_epochs: tuple[int, ...] = ()
    #: paper scale: how much of the training set the runs train on and how their checkpoint is picked
    split: Split = Split()
    #: what the grid caption must say besides the threat model and attacks (e.g. how a penalty is normalised)
    caption_note: str = ""
    #: paper scale attacks ``n_eval`` test images drawn at random with this seed ("We attack 1000 randomly selected
    #: images"), recorded in every result; None: the first ``n_eval`` (smoke scale always takes the first)
    sample_seed: int | None = None
    #: certifications of every row's run (gradient-reg Tables 1, 2, 5, 6), after its attacks
    certify: tuple[Certification, ...] = ()
    #: the paper's headline orderings on this table, checked by ``report --grid --paper`` (main tables)
    claims: tuple[Claim, ...] = ()
    #: ``--scale cpu``: the paper's recipe shortened to about an hour on 2 CPU cores (``epochs``, ``n_train``,
    #: ``n_eval``, optional ``train_attack_steps``, ``note``); see :func:`advbench.papers.planner.cpu_recipe`
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"


def blocks_of(recipe: TableRecipe) -> list[Block]:
    """Every block of ``recipe``, the main one first, with rows and columns resolved (no empty tuples)."""
    trainable = [label for label, row in recipe.rows.items() if isinstance(row, RowRecipe)]
    claimed_rows = {r for b in recipe.blocks for r in b.rows}
    claimed_cols = {c for b in recipe.blocks for c in b.columns}
    main_rows = tuple(r for r in trainable if r not in claimed_rows)
    main_cols = tuple(c for c in recipe.columns if c not in claimed_cols)
    out = [Block(recipe.main_block, main_cols, main_rows, recipe.dataset, recipe.model, recipe.norm, recipe.eps,
                 suites=recipe.suites, n_eval=recipe.n_eval, split=recipe.split)]
    for b in recipe.blocks:
        out.append(dataclasses.replace(
            b, columns=b.columns or main_cols, rows=tuple(r for r in (b.rows or main_rows) if r in trainable),
            dataset=b.dataset or recipe.dataset, model=b.model or recipe.model, norm=b.norm or recipe.norm,
            eps=b.eps or recipe.eps, suites=b.suites or recipe.suites, n_eval=b.n_eval or recipe.n_eval,
            split=b.split or recipe.split))
    return out


def block_recipe(recipe: TableRecipe, block: Block) -> TableRecipe:
    """``recipe`` as ``block`` sees it: the block's dataset, model, threat model, schedule, suites and n-eval, and
    only its rows, with the block's per-row options and schedule changes."""
    rows: dict[str, RowRecipe | str] = {}
    for label in block.rows:
        row = recipe.rows[label]
        assert isinstance(row, RowRecipe)
        options, train = block.row_options.get(label), block.row_train.get(label)
        rows[label] = row if not (options or train) else dataclasses.replace(
            row, options={**row.options, **(options or {})}, train={**row.train, **(train or {})})
    for label, row in recipe.rows.items():  # the untrainable rows keep their reasons (main block)
        if not isinstance(row, RowRecipe) and block.name == recipe.main_block:
            rows[label] = row
    return dataclasses.replace(recipe, dataset=block.dataset, model=block.model, norm=block.norm, eps=block.eps,
                               train={**recipe.train, **block.train}, rows=rows, suites=block.suites,
                               columns={**recipe.columns, **block.column_recipes},
                               n_eval=block.n_eval, split=block.split or recipe.split)


_RECIPES: dict[tuple[str, str], TableRecipe] = {}
#: tables with no recipe: why (diagnostics, quoted literature, timing, certification ...)
_NO_RECIPE: dict[tuple[str, str], str] = {}


def register(recipe: TableRecipe) -> TableRecipe:
    """Add a recipe; its row and column labels must be exactly the printed ones."""
    layout = table_layout(recipe.paper, recipe.table)
    bad_rows = set(recipe.rows) - set(layout.rows)
    bad_cols = set(recipe.columns) - set(layout.columns)
    if bad_rows or bad_cols:
        raise ValueError(f"{recipe.key}: labels not in the published layout: {sorted(bad_rows | bad_cols)}")
    names = [b.name for b in blocks_of(recipe)]
    if len(set(names)) != len(names):
        raise ValueError(f"{recipe.key}: block names are not unique: {names}")
    for b in recipe.blocks:
        unknown = (set(b.rows) | set(b.row_options) | set(b.row_train)) - set(recipe.rows) | (
            set(b.columns) | set(b.column_recipes)) - set(recipe.columns)
        if unknown:
            raise ValueError(f"{recipe.key}: block {b.name!r} names labels not in the table: {sorted(unknown)}")
    for claim in recipe.claims:
        named = {claim.row, *([claim.other] if claim.other else []), *claim.among}
        if claim.kind not in ("max", "min", "greater", "less") or (claim.kind in ("greater", "less")) != bool(
                claim.other) or not named <= set(recipe.rows) or claim.column not in recipe.columns:
            raise ValueError(f"{recipe.key}: claim {claim.text!r} names an unknown row/column or kind")
    for suite, src in recipe.sources.items():
        if src.row is not None and not isinstance(recipe.rows.get(src.row), RowRecipe):
            raise ValueError(f"{recipe.key}: the source of suite {suite!r} is not a trainable row: {src.row!r}")
    _RECIPES[(recipe.paper, recipe.table)] = recipe
    return recipe


#: the kind of a table without a recipe (``reproduce --list``'s status column)
_NO_RECIPE_KIND: dict[tuple[str, str], str] = {}
NO_RECIPE_KINDS = ("quoted", "waiting", "not numeric", "no recipe")


def no_recipe(paper: str, table: str, reason: str, kind: str = "no recipe") -> None:
    """Record why a table has no recipe (shown by ``reproduce --list``): ``kind`` ``quoted`` (literature numbers
    only), ``waiting`` (on methods not built yet), ``not numeric`` (a table with no numbers to measure; also lists
    a table that has no published CSV) or ``no recipe``."""
    if kind not in NO_RECIPE_KINDS:
        raise ValueError(f"unknown no-recipe kind {kind!r}")
    _NO_RECIPE[(paper, table_id(table))] = reason
    _NO_RECIPE_KIND[(paper, table_id(table))] = kind


def no_recipe_kind(paper: str, table: str) -> str:
    """The kind recorded by :func:`no_recipe` (``no recipe`` when none is)."""
    load_recipe_modules()
    return _NO_RECIPE_KIND.get((paper, table_id(table)), "no recipe")


def unpublished_tables() -> list[tuple[str, str]]:
    """(paper, table) of the tables recorded without published numbers (non-numeric tables)."""
    load_recipe_modules()
    return [k for k, kind in _NO_RECIPE_KIND.items() if kind == "not numeric"]


def load_recipe_modules() -> list[ModuleType]:
    """Import every discovered paper module (:func:`advbench.papers.paper_modules`); importing one registers its
    tables. Torch-free: the modules import only this one."""
    return [importlib.import_module(f"advbench.papers.{m}") for m in paper_modules().values()]


def get_recipe(paper: str, table: str) -> TableRecipe | None:
    """The recipe of ``paper`` table ``table``, or None when none is written."""
    load_recipe_modules()
    return _RECIPES.get((paper, table_id(table)))


def no_recipe_reason(paper: str, table: str) -> str:
    """Why ``paper`` table ``table`` has no recipe (recorded by :func:`no_recipe`)."""
    load_recipe_modules()
    return _NO_RECIPE.get((paper, table_id(table)), "no recipe written yet")
