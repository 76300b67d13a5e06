"""`reproduce --scale cpu` (the paper's recipe shortened, SAT Table 2) and `reproduce --data-dir`: plans only."""

from __future__ import annotations

import shutil

import pytest

from advbench.errors import UserError
from advbench.papers.plan import make_plan
from advbench.papers.recipes import get_recipe

pytest.importorskip("sklearn")
from digits import N_TEST, write_digits_mnist  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_mnist(tmp_path_factory.mktemp("digits"))


def test_cpu_scale_shortens_every_row_by_the_same_factor_and_keeps_each_schedule_shape(digits, tmp_path):
    recipe = get_recipe("sat", "2")
    cpu = recipe.cpu
    plan = make_plan("sat", "2", scale="cpu", out=tmp_path, data_dir=digits, device="cpu")
    factor = cpu["epochs"] / recipe.train["epochs"]  # 20 / 70
    assert len(plan.runs) == 12 and plan.dataset == "mnist" and plan.model == "sat-cnn"
    # the digits' 300 test images < the scale's 500: every run is attacked on all of them (was: an error after training)
    assert plan.n_eval == N_TEST == 300 < cpu["n_eval"] and all(p.n_eval == 300 for p in plan.runs)
    assert not any(p.base for p in plan.runs) and not any(p.init for p in plan.runs)  # from scratch, as the paper
    for p in plan.runs:
        o = p.options
        # 1,497 training digits less the default validation split (10%: 149) = 1,348 < the scale's 2,000: all of them
        assert o["epochs"] == cpu["epochs"] and o["n_train"] == 1348 < cpu["n_train"] and o["data_dir"] == str(digits)
        # the paper's milestones 40, 50, 60 of 70 epochs -> 11.4, 14.3, 17.1 of 20 -> 11, 14, 17, recorded; the
        # paper's first lr is held constant for every row (the shared budget below), so they are not taken
        assert o["milestones"] == [11, 14, 17] and o["lr"] == recipe.train["lr"] and o["momentum"] == 0.9
        assert recipe.train["schedule"] == "multistep" and o["schedule"] == cpu["schedule"] == "constant"
        # the shared budget: batch 32 (the paper: 128) and the eps ramp, the same for every row
        assert o["batch_size"] == 32 != recipe.train["batch_size"] and o["eps_warmup"] == cpu["eps_warmup"] == 4.0
        assert o["eps_warmup_from"] == "attack"
        assert p.suites[0][0] == "autoattack-smoke300"
        if o["defense"] in ("h-sat", "p-sat"):  # the lambda steps at epochs 30, 45, 60 (scale 1) -> scale 20/70
            assert p.settings["defense.schedule_scale"] == pytest.approx(factor, abs=1e-6)
            assert p.settings["defense.schedule_per_iteration"] is True
        if o["defense"] == "dat":  # FOSC threshold decays over 30 epochs on MNIST (App. A) -> 30 x 20/70
            assert p.settings["defense.fosc_epochs"] == pytest.approx(30 * factor, abs=1e-5)
        if o["defense"] in ("pgd-at", "dat", "h-sat", "p-sat"):  # the paper's 40 x 0.02 -> 10 x 0.08 (0.8 in all)
            assert p.settings["defense.steps"] == 10 and p.settings["defense.step_size"] == pytest.approx(0.08)
        if o["defense"] == "trades":  # its KL attack is not stated: the TRADES defaults, not capped
            assert "defense.steps" not in p.settings and "defense.step_size" not in p.settings
    text = plan.describe()
    assert "at cpu scale" in text and "shortened to 20 epochs of 70 on 2000 training images" in text
    assert "batch 32 for every row; the paper's first lr held constant for every row" in text
    assert "every row's training eps ramps from 0 over its first 4.0 epochs of attacks" in text
    assert "training attacks <= 10 steps" in text
    assert "mnist holds 1348 training images (after the validation split): runs asking for more (2000)" in text
    assert "mnist holds 300 test images: the attacks run on all of them (the scale asks for 500)" in text


def test_cpu_scale_on_a_table_without_one_is_a_user_error(capsys):
    from advbench.cli import main

    with pytest.raises(UserError, match="has no cpu scale .*sat 2"):
        make_plan("soar", "1", scale="cpu")
    assert main(["reproduce", "soar", "--table", "1", "--scale", "cpu", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no cpu scale" in err and "Traceback" not in err


def test_data_dir_finds_the_paper_dataset_at_smoke_scale_and_is_not_hashed(digits, tmp_path, capsys):
    from advbench.cli import main

    other = tmp_path / "copy"
    shutil.copytree(digits, other)
    a = make_plan("sat", "2", scale="smoke", out=tmp_path / "a", data_dir=digits, device="cpu")
    b = make_plan("sat", "2", scale="smoke", out=tmp_path / "b", data_dir=other, device="cpu")
    assert a.dataset == "mnist" and a.substituted is None  # the real digits, not the synthetic substitute
    assert [p.hash for p in a.runs] == [p.hash for p in b.runs]
    assert {p.options["data_dir"] for p in a.runs} == {str(digits)}
    assert main(["reproduce", "sat", "--table", "2", "--data-dir", str(tmp_path / "nowhere"), "--dry-run",
                 "--out", str(tmp_path / "c")]) == 2
    assert "--data-dir" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["reproduce", "sat", "--table", "2", "--scale", "cpu", "--data-dir", str(digits), "--dry-run",
                 "--out", str(tmp_path / "d")]) == 0
    assert "[train ] P-SAT (ours) seed 0: p-sat" in capsys.readouterr().out


def test_eps_warmup_ramps_the_training_eps_linearly_and_is_hash_neutral():
    from advbench.config import TrainConfig
    from advbench.engine.train import eps_at
    from advbench.papers.planned import run_hash
    from advbench.threat import ThreatModel

    threat = ThreatModel.parse("0.3", "linf")
    assert eps_at(threat, 2.0, 0.5).eps == pytest.approx(0.075)  # a quarter of the way: 0.3 / 4
    assert eps_at(threat, 2.0, 1.5).eps == pytest.approx(0.225)
    assert eps_at(threat, 2.0, 2.0) is threat and eps_at(threat, 2.0, 3.0) is threat
    with pytest.raises(UserError, match="eps_warmup"):
        TrainConfig(dataset="synthetic", defense="pgd-at", epochs=3, eps_warmup=4.0).validate()
    opts = {"dataset": "synthetic", "defense": "pgd-at", "epochs": 3}
    assert run_hash({**opts, "eps_warmup": 0.0}, {}) == run_hash(opts, {}) != run_hash({**opts, "eps_warmup": 1.0}, {})


def test_smoke_on_digits_trains_every_row_from_scratch_with_the_same_budget(digits, tmp_path):
    from advbench.papers.recipes import SMOKE, SMOKE_BY_DATASET

    plan = make_plan("sat", "2", scale="smoke", out=tmp_path, data_dir=digits, device="cpu", blocks=["0.3"])
    want = SMOKE_BY_DATASET["mnist"]
    assert want["from_scratch"] and not any(p.base for p in plan.runs) and len(plan.runs) == 6
    assert not any(p.init or p.options.get("init_from") for p in plan.runs)  # no base run to fine-tune from
    assert {p.options["eps_warmup"] for p in plan.runs} == {want["eps_warmup"]}
    assert {p.options["eps_warmup_from"] for p in plan.runs} == {"attack"}
    assert {p.options["epochs"] for p in plan.runs} == {want["epochs"]}
    assert {p.options["lr"] for p in plan.runs} == {SMOKE["lr"]}  # TRADES too: lr_reg is for fine-tuning
    # one constant lr for every row: a decaying one leaves H-SAT, which attacks only after 3/7 of the epochs, none
    assert {p.options["schedule"] for p in plan.runs} == {"constant"} and SMOKE["schedule"] == "cosine"
    text = plan.describe()
    assert "every row trained from scratch for 10 epochs" in text and "base run" not in text
    assert f"lr {SMOKE['lr']} constant" in text
    assert f"ramps from 0 over its first {want['eps_warmup']} epochs of attacks" in text
    assert "(2000, 4000)" not in text  # the base run's image count is not asked for
    # the paper's training PGD (40 x 0.02) capped at 10 steps keeps its 0.8 in all: 10 x 0.08
    at = next(p for p in plan.runs if p.options["defense"] == "pgd-at")
    assert at.settings["defense.steps"] == 10 and at.settings["defense.step_size"] == pytest.approx(0.08)
    syn = make_plan("sat", "2", scale="smoke", out=tmp_path, device="cpu", blocks=["0.3"])  # synthetic: unchanged
    assert all(p.options.get("eps_warmup", 0.0) == 0.0 for p in syn.runs)
    assert {p.options["schedule"] for p in syn.runs} == {"cosine"}
