"""End to end: every adversarial-training defense trains 2 tiny epochs on ``synthetic`` without NaN, records
its passes per step (within its declared inherent passes) and its curriculum scalars; MMA's per-sample radii
survive an interrupted run."""

from __future__ import annotations

import math

import pytest
import torch

from advbench import api, runs
from advbench.core.signals import Interrupted, StopFlag
from advbench.defenses import build_defense
from advbench.threat import ThreatModel

TINY = dict(dataset="synthetic", model="small-cnn", epochs=2, batch_size=64, n_train=128, lr=0.05, device="cpu")
TINY_SET = {"val_n": 32, "val_attack_steps": 1, "data.n_train": 300, "data.n_test": 100, "steps": 2}

CASES = {
    "trades": {},
    "mart": {},
    "mma": {"bisection_steps": 3},
    "awp": {},
    "trades-awp": {"warmup_epochs": 1},
    "p-sat": {"schedule_scale": 0.02},  # linear-psat squeezed: λ = 0 at epoch 0, 0.5 at epoch 1
    "h-sat": {"lambda_schedule": "constant", "lam": 0.5, "chunk": 16},
    "dat": {"fosc_epochs": 2},
    "cat": {},
    "rat": {},
    "rat-awp": {"base": "awp-trades", "warmup_epochs": 1},
    "rat-pgd": {"base": "pgd-at", "order": "1"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_defense_trains_two_epochs(tmp_path, case):
    defense = case.split("-")[0] if case.startswith("rat") else case
    settings = {**TINY_SET, **CASES[case]}
    run_dir, summary = api.train(out=tmp_path, name=case, defense=defense, settings=settings, **TINY)
    assert summary["status"] == "completed"
    lines = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in lines] == [0, 1]
    d = build_defense(defense, ThreatModel.parse("8/255"), {k: v for k, v in settings.items() if k in CASES[case]
                                                            or k == "steps"})
    inherent_f, inherent_b = d.inherent_passes
    for m in lines:
        assert math.isfinite(m["loss"])
        assert 0 < m["forward_passes"] <= inherent_f + 1e-9
        assert 0 < m["backward_passes"] <= inherent_b + 1e-9
    if defense in ("p-sat", "h-sat"):
        assert [m["sat_lambda"] for m in lines] == [pytest.approx(d.lam(e)) for e in (0, 1)]
    if case == "p-sat":
        assert [m["sat_lambda"] for m in lines] == [0.0, pytest.approx(0.5)]
    if defense == "dat":
        assert [m["dat_fosc_threshold"] for m in lines] == [0.5, 0.25]
    if case == "trades-awp":
        assert [m["awp_active"] for m in lines] == [0.0, 1.0]
        assert "awp_rel_norm" in lines[1]
    if defense in ("trades", "mart", "awp", "cat", "rat") and case != "rat-pgd":
        # methods without early termination cost exactly their inherent passes
        assert lines[-1]["forward_passes"] == pytest.approx(inherent_f)
        assert lines[-1]["backward_passes"] == pytest.approx(inherent_b)


def test_cat_radii_survive_an_interrupted_run(tmp_path):
    """Per-sample state (CAT's radii; MMA's use the same store) is saved with the checkpoint and a resumed run
    matches the uninterrupted one bit for bit."""
    opts = dict(TINY, epochs=3)
    ref_dir, _ = api.train(out=tmp_path, name="ref", defense="cat", settings=TINY_SET, **opts)
    flag = StopFlag()

    def hook(epoch: int, batch: int) -> None:
        if (epoch, batch) == (1, 0):
            flag.request("test")

    with pytest.raises(Interrupted):
        api.train(out=tmp_path, name="cut", defense="cat", settings=TINY_SET, stop=flag, batch_hook=hook, **opts)
    saved = runs.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["defense_state"]["eps"]["values"]
    assert bool((saved > 0).any()), "no radius stored: the test would prove nothing"
    api.train(resume=tmp_path / "cut")
    ref = runs.load_checkpoint(ref_dir / "checkpoints" / "last.pt")
    got = runs.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert torch.equal(ref["defense_state"]["eps"]["values"], got["defense_state"]["eps"]["values"])
