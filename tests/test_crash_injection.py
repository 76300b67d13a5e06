"""Crash injection: a training process and an attack process are killed with SIGKILL at seeded random moments
(mid-batch, mid-validation, mid-write: wherever the moment falls), then resumed; the result must equal the
uninterrupted one exactly (weights bit for bit; per-sample attack results).

``ADVBENCH_CRASH_TRIES`` sets the number of kills per test (default 3 for training, 2 for attacks).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from advbench import runs

TRAIN = ["train", "--defense", "pgd-at", "--set", "steps=2", "--epochs", "4", "--n-train", "256", "--batch-size", "32",
         "--lr", "0.05", "--device", "cpu", "--quiet", "--set", "val_n=64", "--set", "val_attack_steps=2",
         "--set", "data.n_train=400", "--set", "data.n_test=100"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advbench", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _finish(args: list[str]) -> None:
    proc = _cli(args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def _kill_after(proc: subprocess.Popen, ready: Path, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready`` exists; False if it finished first."""
    deadline = time.time() + 300
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    end = time.time() + delay
    while time.time() < end and proc.poll() is None:
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return True


def _tries(default: int) -> int:
    return int(os.environ.get("ADVBENCH_CRASH_TRIES", default))


def test_training_killed_at_random_moments_resumes_bit_exact(tmp_path):
    t0 = time.time()
    _finish([*TRAIN, "--out", str(tmp_path), "--name", "ref"])
    duration = time.time() - t0
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)["model"]
    ref_best = torch.load(tmp_path / "ref" / "checkpoints" / "best.pt", weights_only=True)["model"]
    rng = random.Random(1234)
    killed = 0
    for k in range(_tries(3)):
        name = f"cut{k}"
        proc = _cli([*TRAIN, "--out", str(tmp_path), "--name", name])
        # after config.json exists: anywhere in the training, the validation or a checkpoint write
        killed += _kill_after(proc, tmp_path / name / "config.json", rng.uniform(0.0, max(0.5, duration - 3.0)))
        _finish(["train", "--resume", str(tmp_path / name), "--quiet"])
        got = torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]
        best = torch.load(tmp_path / name / "checkpoints" / "best.pt", weights_only=True)["model"]
        assert all(torch.equal(ref[key], got[key]) for key in ref), f"try {k}: weights differ after kill + resume"
        assert all(torch.equal(ref_best[key], best[key]) for key in ref_best), f"try {k}: best.pt differs"
        assert runs.read_json(tmp_path / name / "summary.json")["status"] == "completed"
    assert killed >= 1, "no try was killed before it finished"


def test_attack_killed_at_random_moments_resumes_to_the_same_per_sample_results(tmp_path):
    _finish([*TRAIN[:9], "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path), "--name", "m",
             "--set", "val_n=32", "--set", "data.n_train=400", "--set", "data.n_test=200"])
    attack = ["attack", str(tmp_path / "m"), "--suite", "pgd-lite", "--n-eval", "200", "--batch-size", "20",
              "--device", "cpu", "--quiet"]
    t0 = time.time()
    _finish(attack)
    duration = time.time() - t0
    ref = runs.read_json(tmp_path / "m" / "attacks" / "pgd-lite.json")
    rng = random.Random(99)
    for k in range(_tries(2)):
        (tmp_path / "m" / "attacks" / "pgd-lite.json").unlink()
        proc = _cli(attack)
        _kill_after(proc, tmp_path / "m" / ".lock", rng.uniform(1.0, max(1.5, duration - 2.0)))
        _finish(attack)
        got = runs.read_json(tmp_path / "m" / "attacks" / "pgd-lite.json")
        assert [r["correct"] for r in got["results"]] == [r["correct"] for r in ref["results"]], f"try {k}"
        assert got["clean"]["correct"] == ref["clean"]["correct"] and got["robust"] == ref["robust"]
