"""Typed recipes of the seed papers' tables: which runs a table needs and which attack fills each column.

A :class:`TableRecipe` maps the printed row labels of a table (from :func:`~advbench.papers.published.table_layout`)
to a defense with options (:class:`RowRecipe`) and the printed column labels to a suite entry
(:class:`ColumnRecipe`). ``paper`` scale keeps the paper's dataset, model, schedule, epochs, seeds and
test-set size; ``smoke`` scale shrinks them (see :data:`SMOKE`) so a whole grid runs in minutes on a CPU.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from advbench.papers import paper_modules
from advbench.papers.published import table_id, table_layout

Transform = Literal["acc", "error", "sum"]
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
    "synthetic_options": {"n_train": 4500, "n_test": 250},
}
#: TrainConfig keys that smoke scale sets itself (a recipe's values for them apply at paper scale only)
SMOKE_TRAIN_KEYS = ("epochs", "n_train", "batch_size", "optimizer", "lr", "schedule", "weight_decay",
                    "val_n", "val_attack_steps")
_PAPER_ONLY_TRAIN_KEYS = {"milestones", "gamma", "momentum", "nesterov", "model_options",
                          "max_batches_per_epoch", "init_from"}


def smoke_text(sm: dict[str, Any]) -> str:
    """One line describing smoke settings (dry-run plan, grid caption); tolerant of older records."""
    g = sm.get
    text = (f"standard base run {g('base_epochs', '?')} epochs from scratch on {g('base_n_train', g('n_train'))} "
            f"images, every other row fine-tuned from it for {g('epochs')} epochs on {g('n_train')}; "
            f"model {g('model')}")
    if "optimizer" in sm:
        text += f", {g('optimizer')} lr {g('lr')} {g('schedule')}"
        if "lr_reg" in sm:
            text += f" (TRADES-family and gradient-regularizer rows lr {g('lr_reg')})"
    if "train_attack_steps" in sm:
        text += f"; training attacks <= {g('train_attack_steps')} steps"
    text += f"; n_eval {g('n_eval')}"
    if "n_eval_expensive" in sm:
        text += f" ({g('n_eval_expensive')} for the expensive attacks)"
    return text


def smoke_train_options(train: dict[str, Any], smoke: dict[str, Any], *, base: bool) -> dict[str, Any]:
    """TrainConfig options of a smoke run: the recipe's ``train`` minus its schedule, plus the smoke schedule."""
    keep = {k: v for k, v in train.items() if k not in _PAPER_ONLY_TRAIN_KEYS and k not in SMOKE_TRAIN_KEYS}
    opts = {**keep, **{k: smoke[k] for k in SMOKE_TRAIN_KEYS}}
    if base:
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


@dataclass(frozen=True)
class ColumnRecipe:
    """Which stored result fills one printed column.

    ``attack`` is the suite entry's label (``Clean`` for clean accuracy, ``Worst case`` for the
    per-sample worst case); ``transform``: ``acc`` (accuracy %), ``error`` (100 - accuracy) or ``sum``
    (sum of the columns named in ``parts``, SAT's Clean + Adv).
    """

    suite: str | None
    attack: str
    eps: str | None = None
    transform: Transform = "acc"
    parts: tuple[str, ...] = ()


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
    suites: tuple[tuple[str, str | None], ...]  # (suite, eps list or None = the run's eps)
    seeds: tuple[int, ...] = (0,)
    n_eval: int = 10000
    threat_text: str = ""
    attack_versions: str = ""
    compute: str = ""
    discrepancies: tuple[str, ...] = ()
    #: transfer source of black-box columns: ``standard`` = an independently trained standard run (same
    #: dataset, model and schedule, seed + SOURCE_SEED_OFFSET), planned like a base run
    source: str | None = None

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"


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
    _RECIPES[(recipe.paper, recipe.table)] = recipe
    return recipe


def no_recipe(paper: str, table: str, reason: str) -> None:
    """Record why a table has no recipe (shown by ``reproduce --list``)."""
    _NO_RECIPE[(paper, table_id(table))] = reason


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
