"""FGSM and PGD against analytic optima on a linear model; ball, box, mode and weight invariants."""

from __future__ import annotations

import copy

import pytest
import torch

from advbench.attacks import ATTACKS, build_attack
from advbench.attacks.losses import cw_loss, dlr_loss, margin
from advbench.attacks.pgd import pgd_perturb
from advbench.threat import ThreatModel


def _signed_margin(model, x, y):
    s = model(x)[:, 1]
    return torch.where(y == 1, s, -s)


@pytest.mark.parametrize("init", ["zero", "uniform"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_reaches_analytic_optimum(linear_problem, norm, eps, init):
    model, x, y, w, b = linear_problem
    threat = ThreatModel(norm, eps, str(eps))
    steps = 50 if init == "zero" else 400  # from a random L2 start the off-axis part decays geometrically
    x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=eps / 4, init=init, select="last")
    sign = torch.where(y == 1, 1.0, -1.0).double()
    dual = w.abs().sum() if norm == "linf" else w.norm()
    expected_margin = _signed_margin(model, x, y) - eps * dual
    assert torch.allclose(_signed_margin(model, x_adv, y), expected_margin, atol=1e-9)
    tol = 1e-9 if (init == "zero" or norm == "linf") else 1e-5
    if norm == "linf":
        expected = x - eps * sign.view(-1, 1, 1, 1) * w.sign().view(1, 3, 4, 4)
    else:
        expected = x - eps * sign.view(-1, 1, 1, 1) * (w / w.norm()).view(1, 3, 4, 4)
    assert torch.allclose(x_adv, expected, atol=tol)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_robust_accuracy_equals_analytic_fraction(linear_problem, norm, eps):
    model, x, y, w, b = linear_problem
    threat = ThreatModel(norm, eps, str(eps))
    res = build_attack("pgd", threat, {"steps": 20})(model, x, y)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    analytic = (_signed_margin(model, x, y) > eps * dual)
    assert torch.equal(res.correct, analytic)


def test_fgsm_is_the_linf_optimum_on_a_linear_model(linear_problem):
    model, x, y, w, b = linear_problem
    threat = ThreatModel("linf", 8 / 255, "8/255")
    res = build_attack("fgsm", threat)(model, x, y)
    sign = torch.where(y == 1, 1.0, -1.0).double()
    expected = x - threat.eps * sign.view(-1, 1, 1, 1) * w.sign().view(1, 3, 4, 4)
    assert torch.allclose(res.x_adv, expected, atol=1e-12)
    assert res.forward == 2 * len(x) and res.backward == len(x)  # one gradient + the final prediction


def test_losses_match_hand_computation():
    z = torch.tensor([[2.0, 5.0, 1.0], [0.5, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert torch.allclose(margin(z, y), torch.tensor([3.0, -2.5]))
    assert torch.allclose(cw_loss(z, y, kappa=50), torch.tensor([-53.0, -47.5]))
    assert torch.allclose(cw_loss(z, y, kappa=0.0), torch.tensor([-3.0, 0.0]))
    # DLR: -(z_y - max_other) / (z_1st - z_3rd)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-3.0 / (5 - 1), 2.5 / (3 + 1)]))


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 8 * 8, 5))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_attack_stays_in_ball_and_box_and_leaves_model_unchanged(name, norm, eps):
    assert name in ATTACKS
    torch.manual_seed(0)
    model = _SmallNet().train()  # in TRAIN mode: the attack must use eval and restore train
    x = torch.rand(16, 3, 8, 8)
    x[:4] = 0.0  # corners of the box
    x[4:8] = 1.0
    y = torch.randint(0, 5, (16,))
    before = copy.deepcopy(model.state_dict())
    grads_before = [p.requires_grad for p in model.parameters()]
    threat = ThreatModel(norm, eps, str(eps))
    res = build_attack(name, threat, {"steps": 5} if name == "pgd" else {})(model, x, y)
    delta = (res.x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-7
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == grads_before
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    # the correctness flags are those of the eval-mode model on x_adv
    model.eval()
    with torch.no_grad():
        assert torch.equal(res.correct, model(res.x_adv).argmax(1) == y)


def test_more_steps_and_restarts_never_raise_accuracy():
    torch.manual_seed(1)
    model = _SmallNet().eval()
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 5, (64,))
    threat = ThreatModel("linf", 4 / 255, "4/255")

    def acc(**opts):
        g = torch.Generator().manual_seed(3)
        return build_attack("pgd", threat, opts)(model, x, y, generator=g).correct.float().mean().item()

    a5, a20 = acc(steps=5), acc(steps=20)
    assert a20 <= a5
    assert acc(steps=5, restarts=5) <= a5
