"""Training engine: exact resume, crash-safe writes, locking, evaluation resume, report over seeds."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advbench import api, runs
from advbench.core.signals import Interrupted, StopFlag
from advbench.errors import UserError

TINY = dict(dataset="synthetic", model="small-cnn", epochs=2, batch_size=64, n_train=192, lr=0.05,
            device="cpu")
TINY_SET = {"val_n": 64, "val_attack_steps": 2, "data.n_train": 400, "data.n_test": 200}


def _weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)["model"]


def _stop_at(epoch: int, batch: int, flag: StopFlag):
    def hook(e: int, b: int) -> None:
        if (e, b) == (epoch, batch):
            flag.request("test")

    return hook


@pytest.mark.parametrize("defense,stop_at", [("standard", (0, 1)), ("pgd-at", (1, 0)), ("pgd-at", (0, 2))])
def test_resume_after_interrupt_is_bit_exact(tmp_path, defense, stop_at):
    settings = {**TINY_SET, "steps": 2} if defense == "pgd-at" else TINY_SET
    ref_dir, _ = api.train(out=tmp_path, name="ref", defense=defense, settings=settings, **TINY)
    flag = StopFlag()
    with pytest.raises(Interrupted):
        api.train(out=tmp_path, name="cut", defense=defense, settings=settings, stop=flag,
                  batch_hook=_stop_at(*stop_at, flag), **TINY)
    cut = tmp_path / "cut"
    assert runs.read_json(cut / "summary.json")["status"] == "interrupted"
    _, summary = api.train(resume=cut)
    assert summary["status"] == "completed"
    ref, got = _weights(ref_dir), _weights(cut)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed weights differ from the uninterrupted run"
    assert all(torch.equal(a, b) for a, b in zip(_weights(ref_dir, "best").values(), _weights(cut, "best").values(),
                                                 strict=True))
    ref_m = runs.read_jsonl(ref_dir / "metrics.jsonl")
    cut_m = runs.read_jsonl(cut / "metrics.jsonl")
    assert [m["epoch"] for m in cut_m] == [0, 1]
    for a, b in zip(ref_m, cut_m, strict=True):
        for key in ("loss", "val_clean_acc", "val_robust_acc", "forward_passes"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)


def test_run_records_config_metrics_passes_and_checkpoints(tmp_path):
    run_dir, summary = api.train(out=tmp_path, defense="pgd-at", settings={**TINY_SET, "steps": 3}, **TINY)
    cfg = runs.read_json(run_dir / "config.json")
    assert cfg["config"]["defense"] == "pgd-at" and cfg["threat"] == {"norm": "linf", "eps": "8/255",
                                                                       "eps_float": 8 / 255}
    assert cfg["defense"]["options"]["steps"] == 3 and cfg["seed"] == 0 and "torch" in cfg["versions"]
    metrics = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert len(metrics) == 2
    # 3 attack steps + 1 training forward; backward likewise
    assert metrics[0]["forward_passes"] == pytest.approx(4.0) and metrics[0]["backward_passes"] == pytest.approx(4.0)
    assert all(math.isfinite(m["loss"]) and m["train_seconds"] > 0 for m in metrics)
    assert 0 <= metrics[-1]["val_robust_acc"] <= metrics[-1]["val_clean_acc"] <= 1
    assert summary["status"] == "completed" and summary["best_epoch"] in (0, 1)
    for which in ("last", "best"):
        ckpt = torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)
        assert ckpt["format"] == runs.CHECKPOINT_FORMAT
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / ".lock").exists()


def test_crash_mid_write_keeps_previous_files(tmp_path, monkeypatch):
    run_dir, _ = api.train(out=tmp_path, name="r", defense="standard", settings=TINY_SET, **TINY)
    summary_before = (run_dir / "summary.json").read_bytes()
    last_before = (run_dir / "checkpoints" / "last.pt").read_bytes()

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # the temp file is fully written ...
        raise KeyboardInterrupt  # ... and the process dies before the rename

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        api.train(resume=run_dir, epochs=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == last_before
    assert (run_dir / "summary.json").read_bytes() == summary_before
    assert not list(run_dir.rglob("*.tmp"))

    def dying_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        runs.write_json(run_dir / "summary.json", {"half": True})
    monkeypatch.undo()
    assert (run_dir / "summary.json").read_bytes() == summary_before
    assert not list(run_dir.rglob("*.tmp"))
    # and the run still resumes to completion
    (run_dir / ".lock").unlink(missing_ok=True)
    _, summary = api.train(resume=run_dir, epochs=3)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3


def test_lock_stops_a_second_writer(tmp_path):
    run_dir, _ = api.train(out=tmp_path, name="r", defense="standard", settings=TINY_SET, **TINY)
    with runs.RunLock(run_dir, "test"):
        with pytest.raises(UserError, match="in use by process"):
            api.train(resume=run_dir, epochs=3)
        with pytest.raises(UserError, match="in use by process"):
            api.attack(run_dir, suite="pgd-lite", n_eval=32, device="cpu")
    # a stale lock of a dead process is taken over
    (run_dir / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    api.attack(run_dir, suite="pgd-lite", n_eval=32, device="cpu")


def test_attack_resume_matches_uninterrupted(tmp_path):
    run_dir, _ = api.train(out=tmp_path, name="r", defense="standard", settings=TINY_SET, **TINY)
    full = api.attack(run_dir, suite="pgd-lite", n_eval=96, batch_size=32, device="cpu")
    flag = StopFlag()

    def hook(key, b):
        if key == "PGD-20" and b == 1:
            flag.request("test")

    with pytest.raises(Interrupted):
        api.attack(run_dir, suite="pgd-lite", n_eval=96, batch_size=32, device="cpu", force=True, stop=flag,
                   batch_hook=hook)
    partial = run_dir / "attacks" / ".pgd-lite.partial.json"
    assert partial.is_file()
    resumed = api.attack(run_dir, suite="pgd-lite", n_eval=96, batch_size=32, device="cpu", force=True)
    assert not partial.exists()
    assert [r["correct"] for r in resumed["results"]] == [r["correct"] for r in full["results"]]
    for r in resumed["results"]:  # worst case is the AND of clean and every attack
        assert r["n"] == 96 and len(r["correct"]) == 96
    worst = [int(all(v)) for v in zip(resumed["clean"]["correct"], *[r["correct"] for r in resumed["results"]],
                                      strict=True)]
    assert resumed["robust"][0]["correct"] == worst
    assert resumed["robust"][0]["accuracy"] == pytest.approx(sum(worst) / 96)


def test_report_over_two_seeds_shows_mean_and_std(tmp_path):
    accs = []
    for seed in (0, 1):
        run_dir, _ = api.train(out=tmp_path, seed=seed, defense="standard", settings=TINY_SET, **TINY)
        res = api.attack(run_dir, suite="pgd-lite", n_eval=64, device="cpu")
        accs.append((res["clean"]["accuracy"], res["results"][1]["accuracy"]))
    grid, text = api.report([tmp_path], fmt="markdown")
    assert list(grid.index) == ["standard"] and grid.loc["standard", "Runs"] == 2
    for col, vals in (("Clean", [a for a, _ in accs]), ("PGD-20", [b for _, b in accs])):
        mean = 100 * sum(vals) / 2
        std = 100 * abs(vals[0] - vals[1]) / math.sqrt(2)  # sample std of two values
        assert grid.loc["standard", col] == f"{mean:.2f} ± {std:.2f}"
    assert "±" in text and "Worst case" in text
    _, csv = api.report([tmp_path], fmt="csv")
    assert csv.splitlines()[0].startswith("Defense,Runs,Clean")
    _, latex = api.report([tmp_path], fmt="latex")
    assert r"\toprule" in latex and r"$\pm$" in latex
    _, js = api.report([tmp_path], fmt="json")
    assert json.loads(js)["grid"]["columns"][0] == "Runs"


def test_sigterm_writes_a_consistent_checkpoint_and_resumes(tmp_path):
    cmd = [sys.executable, "-m", "advbench", "train", "--defense", "standard", "--epochs", "50", "--n-train", "192",
           "--batch-size", "32", "--device", "cpu", "--out", str(tmp_path), "--name", "sig", "--quiet",
           "--set", "val_n=32", "--set", "val_attack_steps=1", "--set", "data.n_train=400",
           "--set", "data.n_test=100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sig"
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "last.pt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: advbench train --resume" in err
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    summary = runs.read_json(run_dir / "summary.json")
    assert summary["status"] == "interrupted" and ckpt["epoch"] < 50
    assert not (run_dir / ".lock").exists()


class _LateFlag(StopFlag):
    """A stop request that arrives after ``after`` checks: lands inside validation or at a batch boundary."""

    def __init__(self, after: int) -> None:
        self._after, self.reads = after, 0
        super().__init__()

    @property
    def requested(self) -> bool:
        self.reads += 1
        return self.reads > self._after

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


@pytest.mark.parametrize("after,where", [(3, "during the validation of epoch 1"), (2, "epoch 1 batch 3"),
                                         (4, "during the validation of epoch 1")])
def test_stop_inside_validation_or_at_the_last_batch_resumes_bit_exact(tmp_path, after, where):
    """3 batches per epoch: checks 1-3 are the training batches of epoch 1, then one per validation batch (4: clean,
    5: PGD; the 40 held-out images are one batch each).
    The loop stops within one batch wherever the request lands, validation included, and resumes exactly."""
    settings = {**TINY_SET, "val_n": 128, "steps": 2}
    ref_dir, _ = api.train(out=tmp_path, name="ref", defense="pgd-at", settings=settings, **TINY)
    flag = _LateFlag(after)
    with pytest.raises(Interrupted, match=where):
        api.train(out=tmp_path, name="cut", defense="pgd-at", settings=settings, stop=flag, **TINY)
    cut = tmp_path / "cut"
    assert runs.read_json(cut / "summary.json")["status"] == "interrupted"
    assert runs.read_jsonl(cut / "metrics.jsonl") == []  # epoch 1's line is written once its validation is done
    _, summary = api.train(resume=cut)
    assert summary["status"] == "completed"
    ref, got = _weights(ref_dir), _weights(cut)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    for a, b in zip(runs.read_jsonl(ref_dir / "metrics.jsonl"), runs.read_jsonl(cut / "metrics.jsonl"), strict=True):
        for key in ("loss", "val_clean_acc", "val_robust_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)


def test_resume_refuses_a_trained_run_whose_checkpoint_was_deleted(tmp_path):
    """It used to retrain from scratch silently; now it says what is missing (and keeps the run as it is)."""
    run, _ = api.train(out=tmp_path, name="r", defense="standard", settings=TINY_SET, **TINY)
    (run / "checkpoints" / "last.pt").unlink()
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(UserError, match="last.pt is missing"):
        api.train(resume=run)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_the_same_configuration_is_reused_or_resumed_not_duplicated(tmp_path):
    """Running the same train command again used to start `...-s0-2` from scratch; now a finished run is reused and
    an interrupted one resumed (and summary says which); --fresh (fresh=True) trains a new one."""
    common = dict(out=tmp_path, defense="standard", settings=TINY_SET, **TINY)
    first, _ = api.train(**common)
    again, summary = api.train(**common)
    assert again == first and summary["reused"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    new, summary = api.train(fresh=True, **common)
    assert new != first and "reused" not in summary
    flag = StopFlag()
    other = {**common, "seed": 5}
    with pytest.raises(Interrupted):
        api.train(stop=flag, batch_hook=_stop_at(0, 1, flag), **other)
    resumed, summary = api.train(**other)
    assert summary["reused"] == "resumed" and summary["status"] == "completed"
    assert len(list(tmp_path.iterdir())) == 3


def test_a_run_at_chance_level_says_so(tmp_path):
    run, summary = api.train(out=tmp_path, name="lazy", defense="standard", settings={**TINY_SET, "lr": 1e-9},
                             **{**TINY, "lr": 1e-9, "epochs": 1})
    assert summary["near_chance"] is True and summary["chance_acc"] == pytest.approx(0.1)
    assert any("near chance" in n for n in summary["notes"])
    from advbench.engine.state import chance_level

    # 10 classes, 200 images: chance 10%, 3 standard errors = 6.36 points
    assert chance_level(0.163, 10, 200)["near_chance"] and not chance_level(0.164, 10, 200)["near_chance"]
    assert not chance_level(0.9, 10, 200)["near_chance"] and chance_level(None, 10, 200) == {}


def test_report_counts_a_seed_once(tmp_path):
    """Two runs of one configuration and seed (a copy, or a rerun with --fresh): the report counts the newest once
    and names the other; it used to average them as "mean ± std over seeds" (9.00 ± 0.00, Runs 2)."""
    import shutil

    run, _ = api.train(out=tmp_path, name="a", defense="standard", settings=TINY_SET, **TINY)
    api.attack(run, attack="fgsm", n_eval=32, batch_size=32, device="cpu", hygiene=False)
    shutil.copytree(run, tmp_path / "b")
    os.utime(tmp_path / "b" / "config.json", (time.time() + 10, time.time() + 10))
    grid, text = api.report([tmp_path])
    assert len(grid) == 1
    assert grid.attrs["skipped"] == [f"{tmp_path / 'a'}: the same configuration and seed as the newer "
                                     f"{tmp_path / 'b'} (counted once)"]
    assert int(grid["Runs"].iloc[0]) == 1
