"""Each main table's paper-scale recipe, resolved as the plan trains it, against values typed from the paper's text.

The oracle is the paper (``../shared/seeds``), quoted beside each value; where the paper is silent the spec
(``../shared/specs``) or the documented discrepancy is quoted instead. A change to a recipe that drifts from the
paper fails here, not silently in a months-long paper-scale run.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from advbench.config import TrainConfig
from advbench.data.core import DEFAULT_VAL_MAX
from advbench.defenses import build_defense
from advbench.papers.plan import make_plan
from advbench.papers.recipes import TRAIN_SIZES, get_recipe
from advbench.resolve import make_train_config
from advbench.threat import ThreatModel


def _runs(paper: str, table: str, tmp_path, **kw) -> dict[tuple[str, int, str | None], TrainConfig]:
    """(row, seed, block) -> the TrainConfig the paper-scale plan trains for it (through the same resolver)."""
    plan = make_plan(paper, table, scale="paper", out=tmp_path, device="cpu", **kw)
    return {(p.row, p.seed, p.block): make_train_config(p.options, p.settings) for p in plan.runs}


def _row(runs: dict, row: str, block: str | None = None) -> list[TrainConfig]:
    out = [cfg for (r, _s, b), cfg in runs.items() if r == row and b == block]
    assert out, f"row {row!r} (block {block}) is not planned"
    return out


def _seeds(runs: dict, row: str, block: str | None = None) -> set[int]:
    return {s for (r, s, b) in runs if r == row and b == block}


def _eps(cfg: TrainConfig) -> float:
    return ThreatModel.parse(cfg.eps, cfg.norm).eps


def _held_out(cfg: TrainConfig) -> int:
    """Training images held out for selection (advbench's default: min(1000, 10%))."""
    n = TRAIN_SIZES[cfg.dataset]
    return cfg.val_size if cfg.val_size is not None else min(DEFAULT_VAL_MAX, n // 10)


# ------------------------------------------------------------------------------------------------ SOAR Table 1
def test_soar_table1(tmp_path):
    runs = _runs("soar", "1", tmp_path)
    for cfg in (c for k, c in runs.items()):
        assert (cfg.dataset, cfg.norm, _eps(cfg)) == ("cifar10", "linf", pytest.approx(8 / 255))
    # "Standard training on ResNet and WideResNet: Both are trained for a total of 200 epochs, with an initial
    # learning rate of 0.1. The learning rate decays by an order of magnitude at epoch 100 and 150. We used a
    # minibatch size of 128 for testing and training. We used SGD optimizer with momentum of 0.9 and a weight decay
    # of 2e-4." (App. E.2)
    for cfg in _row(runs, "ResNet / Standard"):
        assert (cfg.model, cfg.model_options) == ("resnet10", {"bn": False})  # App. E.7: ResNet-10 without BN
        assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.batch_size) == (200, 0.1, [100, 150], 128)
        assert (cfg.optimizer, cfg.momentum, cfg.weight_decay) == ("sgd", 0.9, 2e-4)
    # "SOAR refers to continuing the training of the Standard model on ResNet. It is trained for a total of 200
    # epochs with an initial learning rate of 0.004 and decay by an order of magnitude at epoch 100."
    for cfg in _row(runs, "ResNet / SOAR"):
        assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.weight_decay) == (200, 0.004, [100], 2e-4)
        assert cfg.init_from  # continues the Standard model
    # FOAR: "settings beyond the PGD1 init are NOT STATED (use SOAR's)" (spec soar-foar.md)
    for cfg in _row(runs, "ResNet / FOAR"):
        assert (cfg.lr, cfg.milestones) == (0.004, [100]) and cfg.init_from
    # "MART and TRADES on ResNet: ... trained for a total of 120 epochs, with an initial learning rate of 0.1. The
    # learning rate decays by an order of magnitude at epoch 75, 90, 100" and "β = 9" selected (Tables 17, 18);
    # their public repositories' inner attack: 10 steps of 0.007
    for row in ("ResNet / TRADES", "ResNet / MART"):
        for cfg in _row(runs, row):
            assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.weight_decay) == (120, 0.1, [75, 90, 100], 2e-4)
            assert cfg.defense_options["beta"] == 9.0
            assert cfg.defense_options["step_size"] == pytest.approx(0.007)
    # MMA margin 32 (Table 19: "32" selected; k/255 units)
    for cfg in _row(runs, "ResNet / MMA"):
        assert cfg.defense_options["margin"] == pytest.approx(32 / 255)
    # "results of all methods on ResNet10 are obtained by averaging over 3 independently initialized and trained
    # models"; "We use the provided pretrained WideResNet model provided in the public repository of each method"
    for row in ("ResNet / Standard", "ResNet / ADV", "ResNet / TRADES", "ResNet / MART", "ResNet / MMA",
                "ResNet / FOAR", "ResNet / SOAR"):
        assert _seeds(runs, row) == {0, 1, 2}, row
    for row in ("WideResNet / Standard", "WideResNet / ADV", "WideResNet / TRADES"):
        assert _seeds(runs, row) == {0}, row
        assert _row(runs, row)[0].model == "wrn-34-10"
    # split: the full training set and the last of the 200 epochs, except ADV: "the final evaluation is based on
    # the one with the highest PGD20 accuracy" (selected on held-out training images with PGD-20, not the test set)
    for row in ("ResNet / Standard", "ResNet / SOAR", "ResNet / TRADES", "ResNet / MMA"):
        for cfg in _row(runs, row):
            assert (cfg.val_size, cfg.select) == (0, "last"), row
    for cfg in _row(runs, "ResNet / ADV"):
        assert (_held_out(cfg), cfg.select, cfg.val_attack_steps) == (1000, "val-robust", 20)
        assert cfg.defense_options == {"steps": 10, "step_size": pytest.approx(2 / 255)}


# ------------------------------------------------------------------------------------------------ SCORPIO
#: supplementary "Hyperparameters": "(1.15, 1.05) for FE(3) and FE(1), (0.95, 0.999) and (1.25, 0.999) for CD(3) and
#: CD(1). For the L∞ experiments: (1.05, 1.05) and (0.95, 1.05) for FE(3) and FE(1), (0.95, 1.15) for both CD(3) and
#: CD(1)"; SVHN: "For the L2 experiments h was 1.25 and r was 0.99. For the L∞ the optimal h was 1.5 and r was 1.25."
SCORPIO_HR = {
    ("1", "SCORPIO (FE,N=1)"): (1.15, 1.05), ("1", "SCORPIO (CD,N=1)"): (1.25, 0.999),
    ("2(a)", "SCORPIO (FE,N=3)"): (1.15, 1.05), ("2(a)", "SCORPIO (CD,N=3)"): (0.95, 0.999),
    ("2(b)", "SCORPIO (FE,N=3)"): (1.05, 1.05), ("2(b)", "SCORPIO (CD,N=3)"): (0.95, 1.15),
    ("7(a)", "SCORPIO (FE,N=3)"): (1.25, 0.99), ("7(b)", "SCORPIO (FE,N=3)"): (1.5, 1.25),
}


@pytest.mark.parametrize("table", ["1", "2(a)", "2(b)", "7(a)", "7(b)"])
def test_scorpio_tables(table, tmp_path):
    runs = _runs("scorpio", table, tmp_path)
    svhn = table.startswith("7")
    checked = 0
    for (row, _seed, _block), cfg in runs.items():
        assert cfg.dataset == ("svhn" if svhn else "cifar10") and cfg.model == "resnet18"
        # "The learning rate was initialized at 0.01 and decayed to 0.001 after 50 epochs. Models were trained for
        # 60 epochs." / SVHN: "trained for 40 epochs with an initial learning rate of 0.01 that decayed by a factor
        # of 10 every 8 epochs"; "batch sizes of 512" (Sec. 3)
        assert (cfg.epochs, cfg.lr, cfg.batch_size) == ((40, 0.01, 512) if svhn else (60, 0.01, 512))
        assert cfg.milestones == ([8, 16, 24, 32] if svhn else [50])
        # "The best model was chosen from all epochs" (split not named): 1,000 held-out training images
        assert _held_out(cfg) == 1000 and cfg.select == "auto"
        if cfg.defense == "scorpio":
            # the resolved (h, r) the defense trains with, against the paper's numbers
            d = build_defense("scorpio", ThreatModel.parse(cfg.eps, cfg.norm), cfg.defense_options)
            assert (d.h, d.r) == pytest.approx(SCORPIO_HR[(table, row)]), (table, row)
            checked += 1
    assert checked == sum(1 for (t, _r) in SCORPIO_HR if t == table)


def test_scorpio_preset_follows_the_dataset_unless_set():
    """The dataset-dependent default: an SVHN run takes the SVHN (h, r) unless the options name a preset."""
    svhn = make_train_config({"dataset": "svhn", "defense": "scorpio", "norm": "l2", "eps": "0.5"})
    assert svhn.defense_options["preset"] == "svhn"
    chosen = make_train_config({"dataset": "svhn", "defense": "scorpio", "norm": "l2", "eps": "0.5"},
                               {"defense.preset": "cifar10"})
    assert chosen.defense_options["preset"] == "cifar10"
    cifar = make_train_config({"dataset": "cifar10", "defense": "scorpio"})
    assert "preset" not in cifar.defense_options  # other datasets resolve (and hash) as before


# ------------------------------------------------------------------------------------------------ SAT
def test_sat_table1(tmp_path):
    runs = _runs("sat", "1", tmp_path)
    main, wrn, c100 = None, "CIFAR-10 / WideResNet-34-10", "CIFAR-100 / PreAct-ResNet-20"
    for (row, seed, block), cfg in runs.items():
        # "trained for 100 epochs with a batch size of 128 ... decreased by a factor of 10 at epochs 40, 60, and
        # 80"; "SGD with a momentum of 0.9"; one run each ("single runs, no error bars")
        assert (cfg.epochs, cfg.batch_size, cfg.milestones, cfg.momentum, seed) == (100, 128, [40, 60, 80], 0.9, 0)
        assert (cfg.norm, _eps(cfg)) == ("linf", pytest.approx(8 / 255))
        # "The initial learning rate is set at 0.05 for ResNet and 0.1 for WideResNet"
        assert cfg.lr == (0.1 if cfg.model == "wrn-34-10" else 0.05)
        # "Weight decay is set to 5×10^-4 for CIFAR-10 and 2×10^-4 for CIFAR-100"
        assert cfg.weight_decay == (2e-4 if cfg.dataset == "cifar100" else 5e-4)
        # "Standard data augmentation (random crop, flip, scaling, and brightness jitter)"
        assert cfg.dataset_options == {"scale": 0.1, "brightness": 0.1}
        # "only save the one with the highest adversarial validation accuracy": 45,000 / 5,000 (ATES split size)
        assert (cfg.val_size, cfg.select) == (5000, "val-robust")
        if row == "AT [23]":
            # "We use 10-step PGD with step size of 2/255 and random restart"
            assert cfg.defense_options["steps"] == 10
        if row == "TRADES [36]":
            assert cfg.defense_options["beta"] == 6.0
        if row in ("H-SAT (ours)", "P-SAT (ours)") and block in (wrn, "CIFAR-100 / WideResNet-34-10"):
            # "On WRN-34-10, ... we increased λ at epochs 30, 40, and 50 instead"
            assert cfg.defense_options["lambda_schedule"] == "step-wrn"
    assert {b for (_r, _s, b) in runs} >= {main, wrn, c100}
    assert {c.model for c in runs.values()} == {"preact-resnet20", "wrn-34-10"}


def test_sat_table2_mnist(tmp_path):
    runs = _runs("sat", "2", tmp_path)
    for (row, _seed, _block), cfg in runs.items():
        # "Models are trained for 70 epochs with a batch size of 128. The initial learning rate is set at 0.01 and is
        # decreased by a factor of 10 at epochs 40, 50, and 60. Weight decay is 5×10^-4."
        assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size, cfg.lr) == ("mnist", "sat-cnn", 70, 128, 0.01)
        assert (cfg.milestones, cfg.weight_decay, cfg.dataset_options) == ([40, 50, 60], 5e-4, {})
        assert (cfg.val_size, cfg.select) == (5000, "val-robust")
        assert _eps(cfg) in (pytest.approx(0.3), pytest.approx(0.45))
        if row in ("H-SAT (ours)", "P-SAT (ours)"):
            # "For MNIST, we only used a step schedule wherein we increased λ in steps of 0.3333 at epochs 30, 45,
            # and 60."
            assert cfg.defense_options["lambda_schedule"] == "step-mnist"
    assert {round(_eps(c), 2) for c in runs.values()} == {0.3, 0.45}


def test_sat_table3_imagenette_block(tmp_path):
    runs = _runs("sat", "3", tmp_path)
    for cfg in runs.values():
        if cfg.dataset == "imagenette":
            # "We train ResNet-34 for 100 epochs with a batch size of 128. The initial learning rate is 0.1 and is
            # decreased by a factor of 10 at epochs 40, 60, and 80. Weight decay is set to 5×10^-4."
            assert (cfg.model, cfg.epochs, cfg.lr, cfg.milestones, cfg.weight_decay) == (
                "resnet34", 100, 0.1, [40, 60, 80], 5e-4)
            assert cfg.dataset_options == {} and cfg.val_size is None  # 946 held out (10%)
        else:
            assert (cfg.model, cfg.lr, cfg.val_size) == ("preact-resnet20", 0.05, 5000)
    assert {round(_eps(c) * 255) for c in runs.values()} == {16, 24}
    assert "CAT20 [7]" not in {r for (r, _s, _b) in runs}


# ------------------------------------------------------------------------------------------------ RAT
@pytest.mark.parametrize("table", ["1", "2"])
def test_randomized_at(table, tmp_path):
    runs = _runs("randomized-at", table, tmp_path)
    for cfg in runs.values():
        # "All models (except SVHN) are trained for 200 epochs using SGD with momentum 0.9, batchsize 128, weight
        # decay 5×10^-4, and an initial learning rate of 0.1 that is divided by 10 at the 100th and 150th epochs."
        assert (cfg.epochs, cfg.momentum, cfg.batch_size, cfg.weight_decay) == (200, 0.9, 128, 5e-4)
        assert (cfg.lr, cfg.milestones) == (0.1, [100, 150])
        # "for the ℓ∞ threat model, ε = 8/255 and step size 2/255"
        assert (cfg.norm, _eps(cfg)) == ("linf", pytest.approx(8 / 255))
        assert cfg.model == ("preact-resnet18" if table == "1" else "wrn-34-10")
        assert _held_out(cfg) == 1000  # default selection; --paper-checkpoints below
    # "We omit the standard deviations of 3 runs"
    assert {s for (_r, s, _b) in runs} == {0, 1, 2}
    if table == "1":
        # Table 1's eta sweep: "1_st (η)" and "1_st + 2_nd (η)" on TRADES
        for eta in (0.05, 0.1, 0.2, 0.3, 0.4):
            cfg = _row(runs, f"1_st + 2_nd ({eta})")[0]
            assert cfg.defense_options == {"base": "trades", "order": "1+2", "eta": eta}
    else:
        assert {c.dataset for c in runs.values()} == {"cifar10", "cifar100"}


def test_randomized_at_paper_checkpoints(tmp_path):
    """--paper-checkpoints: "We set checkpoints for each epoch between 100-110 and 150-160, each 5 epoch between
    110-150 and 160-200" (App. B.2) on the full training set (the paper selects on the test set)."""
    runs = _runs("randomized-at", "1", tmp_path, paper_checkpoints=True)
    want = sorted({*range(100, 111), *range(110, 151, 5), *range(150, 161), *range(160, 201, 5)})
    for cfg in runs.values():
        assert (cfg.val_size, cfg.select, sorted(cfg.save_epochs)) == (0, "last", want)


# ------------------------------------------------------------------------------------------------ gradient-reg
def test_gradient_reg_table4(tmp_path):
    runs = _runs("gradient-reg", "4", tmp_path)
    for (row, _seed, _block), cfg in runs.items():
        # "CIFAR networks were trained with standard data augmentation and learning rate schedules": the authors'
        # code (spec gradient-regularization.md): 200 epochs, lr 0.1 ÷10 at 60/120/160, batch 128, wd 5e-4
        assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.milestones) == ("cifar10", 200, 0.1, [60, 120, 160])
        assert (cfg.batch_size, cfg.weight_decay) == (128, 5e-4)
        # selection not stated; the authors' code keeps the last epoch: the full training set
        assert (cfg.val_size, cfg.select) == (0, "last")
        if row.startswith("h = "):
            # "all regularized models: squared ℓ1 penalty, λ = 1" and the h of the row
            assert cfg.defense_options == {"lam": 1.0, "h": float(row.removeprefix("h = ")), "penalty": "l1"}
        if row == "double backpropagation":
            assert cfg.defense_options == {"lam": 1.0, "norm": "l1", "l1_normalise_by_n": True}
    # "On each dataset, We attack 1000 randomly selected images": a seeded random subset of 1000 test images
    recipe = get_recipe("gradient-reg", "4")
    assert (recipe.n_eval, recipe.sample_seed) == (1000, 0)
    plan = make_plan("gradient-reg", "4", scale="paper", out=tmp_path, device="cpu")
    assert {(p.n_eval, p.sample_seed) for p in plan.runs} == {(1000, 0)}
    assert any("drawn at random with sample seed 0" in n for n in plan.notes)
    smoke = make_plan("gradient-reg", "4", scale="smoke", out=tmp_path, device="cpu")
    assert {p.sample_seed for p in smoke.runs} == {None}


def test_dbp_penalty_divided_by_n():
    """The DBP row's option divides ||g||_1^2 by N: at the same λ the two readings differ by N = 3072."""
    import torch

    from advbench.defenses.grad_reg import grad_norm_penalty

    g = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    plain = grad_norm_penalty(g, "l1", 1.0)
    divided = grad_norm_penalty(g, "l1", 1.0, l1_normalise_by_n=True)
    assert float(plain / divided) == pytest.approx(3072)
    assert float(plain) == pytest.approx(0.5 * float(g.abs().flatten(1).sum(1).pow(2).mean()))


# ------------------------------------------------------------------------------------------------ plan text
def test_dry_run_states_the_split(tmp_path):
    """The plan says how much of the training set the runs train on, with the paper's sentence."""
    text = make_plan("soar", "1", scale="paper", out=tmp_path, device="cpu").describe()
    assert "split: trains on the full training set (50,000 images), nothing held out" in text
    assert "ResNet / ADV: split: trains on 49,000 of cifar10's 50,000" in text
    sat = make_plan("sat", "1", scale="paper", out=tmp_path, device="cpu").describe()
    assert "45,000 of cifar10's 50,000 training images (5,000 held out" in sat
    scorpio = make_plan("scorpio", "7(a)", scale="paper", out=tmp_path, device="cpu").describe()
    assert "72,257 of svhn's 73,257" in scorpio


def test_caption_states_the_split_without_runs(tmp_path, monkeypatch, capsys):
    """`report --grid gradient-reg:4 --paper` in a folder with no runs: the caption states the recipe's paper-scale
    split, the random evaluation subset and the DBP normalisation."""
    from advbench.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["report", "--grid", "gradient-reg:4", "--paper"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "paper scale trains on the full training set (50,000 images)" in out
    assert "÷ N (N = 3072)" in out and "sample seed 0" in out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_fractions_of_255_are_exact():
    """The 2/255-style options the tests compare resolve to the exact fraction (no rounding drift)."""
    cfg = make_train_config({"defense": "pgd-at", "eps": "8/255"}, {"defense.step_size": "2/255"})
    assert cfg.defense_options["step_size"] == float(Fraction(2, 255))
    assert math.isclose(_eps(cfg), 8 / 255)


def test_dataset_options_stay_with_their_dataset(tmp_path):
    """SAT's CIFAR jitter options are not carried to another dataset named with --dataset."""
    plan = make_plan("sat", "1", scale="paper", out=tmp_path, device="cpu", dataset="svhn")
    assert {p.options.get("dataset_options") for p in plan.runs} == {None}
