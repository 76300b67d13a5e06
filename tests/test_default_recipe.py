"""`advbench train --defense NAME` with no schedule trains the defense's own paper recipe: the paper's row at paper
scale on the paper's dataset, elsewhere a standard base run plus a short fine-tune (smoke scale)."""

from __future__ import annotations

import pytest

from advbench import runs
from advbench.api.recipe import choose_row, recipe_rows, train_with_recipe
from advbench.cli import main
from advbench.defenses import DEFENSES

TINY_SMOKE = {"base_epochs": 1, "base_n_train": 96, "epochs": 1, "n_train": 64, "batch_size": 32, "val_n": 16,
              "val_attack_steps": 1, "train_attack_steps": 1, "synthetic_options": {"n_train": 200, "n_test": 40}}


def test_defenses_without_a_paper_row_fall_back_to_the_defaults(tmp_path, capsys):
    """A defense no paper table trains has no recipe: train says so by recording the generic defaults."""
    without = [d for d in DEFENSES.names() if not recipe_rows(d)]
    assert all(choose_row(d, "synthetic") is None for d in without)
    assert len(without) < len(DEFENSES.names()) // 2  # most defenses have their paper's recipe


@pytest.mark.parametrize("defense,dataset,scale", [("p-sat", "cifar10", "paper"), ("p-sat", "synthetic", "smoke"),
                                                   ("trades", "synthetic", "smoke")])
def test_paper_scale_on_the_papers_dataset_smoke_elsewhere(defense, dataset, scale):
    row, chosen = choose_row(defense, dataset)
    assert chosen == scale
    if scale == "paper":
        assert row.dataset == dataset


def test_recipe_trains_a_base_run_then_fine_tunes(tmp_path):
    run, summary = train_with_recipe(defense="trades", dataset="synthetic", model=None, eps="8/255", norm="linf",
                                     seed=0, out=tmp_path, device="cpu", quiet=True, command=None, smoke=TINY_SMOKE)
    record = runs.read_json(run / "config.json")
    assert record["config"]["defense"] == "trades" and summary["status"] == "completed"
    assert "smoke scale" in record["recipe"] and "table" in record["recipe"]
    base = runs.read_json(__import__("pathlib").Path(record["config"]["init_from"]) / "config.json")
    assert base["config"]["defense"] == "standard"  # fine-tuned from the shared standard base run
    # the same command again reuses both runs
    again, _ = train_with_recipe(defense="trades", dataset="synthetic", model=None, eps="8/255", norm="linf", seed=0,
                                 out=tmp_path, device="cpu", quiet=True, command=None, smoke=TINY_SMOKE)
    assert again == run


def test_a_schedule_flag_means_the_generic_defaults(tmp_path, capsys):
    code = main(["train", "--defense", "pgd-at", "--epochs", "1", "--n-train", "32", "--batch-size", "32", "--device",
                 "cpu", "--out", str(tmp_path), "--set", "val_n=8", "--set", "data.n_train=80", "--set",
                 "data.n_test=16", "--set", "steps=1"])
    assert code == 0, capsys.readouterr().err
    (run,) = [p for p in tmp_path.iterdir()]
    assert runs.read_json(run / "config.json")["recipe"].startswith("advbench defaults")
