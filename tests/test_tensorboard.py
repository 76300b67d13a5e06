"""Per-epoch metrics as TensorBoard scalars, read back with TensorBoard's own event reader."""

from __future__ import annotations

import sys

import pytest
from fake_runs import write_run

from advbench.cli import main
from advbench.engine.tensorboard import LOG_DIR, TensorBoardLog, scalar_tags
from advbench.engine.tensorboard import write_run as write_tensorboard
from advbench.errors import UserError

_LINES = [{"epoch": e, "lr": 0.1 / (e + 1), "loss": 2.0 - e, "acc": 0.3 + 0.2 * e, "adv_acc": 0.1 * e,
           "val_clean_acc": 0.5 + 0.1 * e, "val_robust_acc": 0.2 + 0.05 * e, "train_seconds": 3.0,
           "forward_passes": 6.0, "val_split": "val", "sat_lambda": float("nan")} for e in range(3)]


def _read(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalar_tags_group_train_val_and_cost_and_skip_text_and_nan():
    tags = scalar_tags(_LINES[1])
    assert tags == {"lr": 0.05, "train/loss": 1.0, "train/acc": 0.5, "train/adv_acc": 0.1, "val/clean_acc": 0.6,
                    "val/robust_acc": 0.25, "cost/train_seconds": 3.0, "cost/forward_passes": 6.0}


def test_epochs_written_by_the_trainer_hook_read_back_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    log = TensorBoardLog(tmp_path / "run")
    for line in _LINES:
        log.epoch(line)  # flushed each epoch: readable while training goes on
    scalars = _read(tmp_path / "run" / LOG_DIR)
    log.close()
    assert scalars["val/robust_acc"] == [(1, 0.2), (2, 0.25), (3, 0.3)]  # steps are epochs counted from 1
    assert scalars["train/loss"] == [(1, 2.0), (2, 1.0), (3, 0.0)] and "train/sat_lambda" not in scalars


def test_export_of_an_existing_run_replaces_earlier_event_files(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = write_run(tmp_path, "adv", "pgd-at", metrics=_LINES)
    write_tensorboard(run)
    assert main(["export", str(run), "--format", "tensorboard"]) == 0
    assert f"wrote {run / LOG_DIR}" in capsys.readouterr().out
    assert len(list((run / LOG_DIR).glob("events.out.tfevents.*"))) == 1
    assert _read(run / LOG_DIR)["train/acc"] == [(1, 0.3), (2, 0.5), (3, 0.7)]  # each epoch once
    assert main(["export", str(run), "--format", "tensorboard", "--name", "x"]) == 2  # leaderboard fields refused


def test_missing_tensorboard_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match=r"pip install 'advbench\[tensorboard\]'"):
        TensorBoardLog(tmp_path).epoch(_LINES[0])
