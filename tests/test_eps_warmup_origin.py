"""`--set eps_warmup_from=attack`: the eps warm-up starts where a defense first trains on perturbed inputs (H-SAT
under a step schedule trains on clean images until lambda first rises); every other defense is unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from advbench import api
from advbench.defenses import DEFENSES
from advbench.defenses.h_sat import HSAT
from advbench.threat import ThreatModel

THREAT = ThreatModel.parse("0.3", "linf")


@pytest.mark.parametrize(("options", "first"), [
    ({"lambda_schedule": "step-mnist", "schedule_scale": 1 / 7, "schedule_per_iteration": True}, 30 / 7),
    ({"lambda_schedule": "step-mnist", "schedule_scale": 1 / 7}, 5.0),  # lambda per epoch: the first whole epoch
    ({"lambda_schedule": "step-wrn"}, 30.0),
    ({"lambda_schedule": "linear-psat", "schedule_scale": 0.5, "schedule_per_iteration": True}, 15.0),
    ({"lambda_schedule": "linear-psat", "schedule_scale": 0.5}, 16.0),  # per epoch: lambda(15) is still 0
    ({}, 0.0),  # H-SAT's own linear schedule starts at lambda 0.8
    ({"lambda_schedule": "constant", "lam": 0.5}, 0.0),
    ({"lambda_schedule": "constant", "lam": 0.0}, math.inf),  # never perturbs
    ({"lambda_schedule": "step-mnist", "rand_init_unselected": "uniform"}, 0.0),  # random starts from epoch 0
])
def test_hsat_first_attack_epoch_is_where_lambda_first_rises(options, first):
    defense = HSAT(THREAT, HSAT.Options(**options))
    assert defense.first_attack_epoch() == pytest.approx(first)
    if 0 < first < math.inf:  # the oracle: lambda is 0 just before and positive from there on
        per_iter = options.get("schedule_per_iteration", False)
        if per_iter:
            assert defense.lam(first - 1e-6) == 0 and defense.lam(first + 1e-6) > 0
        else:
            assert defense.lam(first - 1) == 0 and defense.lam(first) > 0


@pytest.mark.parametrize("name", ["pgd-at", "trades", "p-sat", "dat", "mart", "cat"])
def test_other_defenses_attack_from_epoch_zero(name):
    assert DEFENSES.get(name)(THREAT).first_attack_epoch() == 0.0


def test_hsat_training_eps_ramps_from_the_first_epoch_with_lambda_above_zero(tmp_path, monkeypatch):
    """4 steps per epoch, lambda steps at epoch 1 (30 x 1/30), a 2-epoch ramp: the eps each step trains with is
    0.3 * min(1, (progress + 1/4 - 1) / 2), 0 before epoch 1; from the start instead: 0.3 * min(1, (p + 1/4) / 2)."""
    seen: dict[str, list[tuple[float, float, float]]] = {"attack": [], "start": []}
    original = HSAT.loss
    mode = {"now": "attack"}

    def spy(self, model, x, y, ctx):
        seen[mode["now"]].append((ctx.progress, self.lam_at(ctx), self.threat.eps))
        return original(self, model, x, y, ctx)

    monkeypatch.setattr(HSAT, "loss", spy)
    for origin in ("attack", "start"):
        mode["now"] = origin
        api.train(out=tmp_path, name=origin, defense="h-sat", dataset="synthetic", epochs=4, n_train=64, batch_size=16,
                  device="cpu", eps="0.3", fresh=True,
                  settings={"val_n": 8, "data.n_train": 120, "data.n_test": 20, "eps_warmup": 2.0,
                            "eps_warmup_from": origin, "defense.lambda_schedule": "step-mnist",
                            "defense.schedule_scale": 1 / 30, "defense.schedule_per_iteration": True,
                            "defense.steps": 2})
    for origin, shift in (("attack", 1.0), ("start", 0.0)):
        steps = seen[origin]
        assert len(steps) == 16
        for progress, lam, eps in steps:
            want = 0.3 * min(1.0, max(0.0, progress + 0.25 - shift) / 2.0)
            assert eps == pytest.approx(want, abs=1e-12), (origin, progress)
            assert (lam > 0) == (progress >= 1.0)
    # the start-ramp hands H-SAT most of the eps at its first attacked step; the attack-ramp an eighth of it
    first_attacked = {o: next(e for p, lam, e in seen[o] if lam > 0) for o in seen}
    assert first_attacked["attack"] == pytest.approx(0.3 / 8) and first_attacked["start"] == pytest.approx(0.3 * 5 / 8)


def test_eps_warmup_from_leaves_a_defense_attacking_from_the_start_bit_identical(tmp_path):
    common = dict(out=tmp_path, defense="pgd-at", dataset="synthetic", epochs=2, n_train=32, batch_size=16,
                  device="cpu", fresh=True)
    base = {"val_n": 8, "data.n_train": 80, "data.n_test": 20, "eps_warmup": 1.5, "defense.steps": 2}
    a, _ = api.train(name="a", settings={**base, "eps_warmup_from": "start"}, **common)
    b, _ = api.train(name="b", settings={**base, "eps_warmup_from": "attack"}, **common)
    wa = torch.load(a / "checkpoints" / "last.pt", weights_only=False)["model"]
    wb = torch.load(b / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
