"""Free adversarial training (adversarial-training-baselines.md §8.8): δ persists across minibatches, stays in
the ball, one replay of a frozen model is an FGSM step of size eps from the previous δ, and δ survives a
state_dict round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.base import renorm_l2
from advbench.defenses import StepContext, build_defense
from advbench.errors import UserError
from advbench.threat import ThreatModel

CTX = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=3)
LINF = ThreatModel.parse("8/255", "linf")


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def fgsm_from(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    d = delta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model((x + d).clamp(0, 1)), y), d)
    return (delta + eps * g.sign()).clamp(-eps, eps)


def test_one_replay_of_a_frozen_model_is_an_fgsm_step_from_the_previous_delta():
    model = net()
    defense = build_defense("free-at", LINF, {"replay_m": 1})
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x1, y1 = batch(1)
    defense.train_step(model, opt, x1, y1, CTX)
    d1 = defense.delta.clone()
    torch.testing.assert_close(d1, fgsm_from(model, x1, y1, torch.zeros_like(x1), LINF.eps))
    assert float(d1.abs().max()) > 0
    x2, y2 = batch(2)
    defense.train_step(model, opt, x2, y2, CTX)  # a new minibatch starts from δ of the previous one
    torch.testing.assert_close(defense.delta, fgsm_from(model, x2, y2, d1, LINF.eps))


def test_replays_update_weights_m_times_and_delta_stays_in_the_ball():
    model = net(1)
    defense = build_defense("free-at", LINF, {"replay_m": 4})
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    steps = []
    original = opt.step

    def counting_step(*a, **k):
        steps.append(1)
        return original(*a, **k)

    opt.step = counting_step  # type: ignore[method-assign]
    for s in range(3):
        x, y = batch(10 + s)
        logs = defense.train_step(model, opt, x, y, CTX)
        assert float(defense.delta.abs().max()) <= LINF.eps + 1e-12
        assert 0.0 <= logs["adv_acc"] <= 1.0
    assert len(steps) == 12


def test_l2_delta_stays_in_the_l2_ball():
    threat = ThreatModel.parse("0.5", "l2")
    model = net(2)
    defense = build_defense("free-at", threat, {"replay_m": 3})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for s in range(3):
        x, y = batch(20 + s)
        defense.train_step(model, opt, x, y, CTX)
    norms = defense.delta.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.5 + 1e-12
    torch.testing.assert_close(renorm_l2(defense.delta, 0.5), defense.delta)


def test_smaller_last_batch_uses_the_first_rows_and_keeps_the_rest():
    model = net(3)
    defense = build_defense("free-at", LINF, {"replay_m": 2})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch(30, n=6)
    defense.train_step(model, opt, x, y, CTX)
    tail = defense.delta[4:].clone()
    defense.train_step(model, opt, x[:4], y[:4], CTX)
    assert defense.delta.shape[0] == 6
    torch.testing.assert_close(defense.delta[4:], tail)


def test_delta_survives_a_state_dict_round_trip():
    model_a, model_b = net(4), net(4)
    a = build_defense("free-at", LINF, {"replay_m": 2})
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1)
    a.train_step(model_a, opt_a, *batch(40), CTX)
    b = build_defense("free-at", LINF, {"replay_m": 2})
    b.load_state_dict(a.state_dict())
    model_b.load_state_dict(model_a.state_dict())
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    x, y = batch(41)
    a.train_step(model_a, opt_a, x, y, CTX)
    b.train_step(model_b, opt_b, x, y, CTX)
    torch.testing.assert_close(a.delta, b.delta)
    fresh = build_defense("free-at", LINF, {"replay_m": 2})
    model_c = net(4)
    model_c.load_state_dict(model_a.state_dict())
    fresh.train_step(model_c, torch.optim.SGD(model_c.parameters(), lr=0.0), x, y, CTX)
    assert not torch.allclose(fresh.delta, a.delta)


def test_options_are_validated():
    with pytest.raises(UserError):
        build_defense("free-at", LINF, {"replay_m": 0})
    assert build_defense("free-at", LINF, {"replay_m": "2"}).inherent_passes == (2.0, 2.0)
