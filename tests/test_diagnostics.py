"""Diagnostic 'attacks' that papers print as tables (SOAR Tables 4-5, gradient-reg Table 3), against closed forms on
a linear softmax model in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks import ATTACKS
from advbench.attacks.diagnostics import modified_loss
from advbench.threat import ThreatModel


def _linear(seed: int = 0, d: int = 12, k: int = 4) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        model[1].bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    x = torch.rand(16, 1, 3, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1
    y = torch.randint(0, k, (16,), generator=g)
    return model.eval(), x, y


def _run(name: str, threat: ThreatModel, model, x, y, **options):
    attack = ATTACKS.get(name)(threat, **options)
    return attack.perturb_ex(model, x, y, torch.Generator().manual_seed(1)), attack


def test_confidence_clean_is_the_mean_max_softmax():
    model, x, y = _linear()
    out, attack = _run("confidence", ThreatModel.parse("8/255", "linf"), model, x, y, perturb="none")
    expect = F.softmax(model(x), 1).amax(1).detach()
    assert torch.equal(out.x_adv, x)
    assert torch.allclose(torch.tensor(out.per_sample["max_prob"], dtype=torch.float64), expect)
    summary = attack.summarize(out.per_sample, [], [], attack.threat)
    assert abs(summary["mean_max_prob"] - 100 * float(expect.mean())) < 1e-9


def test_confidence_random_stays_in_the_box_and_pgd1_is_one_signed_step():
    model, x, y = _linear(1)
    threat = ThreatModel.parse("8/255", "linf")
    out, _ = _run("confidence", threat, model, x, y, perturb="random")
    delta = out.x_adv - x
    assert float(delta.abs().max()) <= threat.eps + 1e-12 and float(delta.abs().max()) > threat.eps / 2
    out, _ = _run("confidence", threat, model, x, y, perturb="pgd1")
    w = model[1].weight
    p = F.softmax(model(x), 1)
    grad = ((p - F.one_hot(y, 4).double()) @ w).view_as(x)  # d CE / dx of a linear softmax model
    assert torch.allclose(out.x_adv, (x + threat.eps * grad.sign()).clamp(0, 1))


def test_confidence_random_l2_stays_in_the_ball():
    model, x, y = _linear(2)
    threat = ThreatModel.parse("0.5", "l2")
    out, _ = _run("confidence", threat, model, x, y, perturb="random")
    assert float((out.x_adv - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-9


def test_adv_loss_reports_the_cross_entropy_at_the_returned_point():
    model, x, y = _linear(3)
    out, attack = _run("adv-loss", ThreatModel.parse("8/255", "linf"), model, x, y, steps=5, sum_batch=128)
    ce = F.cross_entropy(model(out.x_adv), y, reduction="none")
    assert torch.allclose(torch.tensor(out.per_sample["loss"], dtype=torch.float64), ce)
    assert float(ce.mean()) > float(F.cross_entropy(model(x), y))  # PGD raised the loss
    s = attack.summarize(out.per_sample, [out.info], [], attack.threat)
    assert abs(s["loss_sum_per_batch"] - 128 * s["loss_mean"]) < 1e-9


def test_grad_norm_matches_the_softmax_jacobian_in_closed_form():
    model, x, y = _linear(4)
    out, attack = _run("grad-norm", ThreatModel.parse("0.5", "l2"), model, x, y)
    w, p = model[1].weight, F.softmax(model(x), 1)
    wbar = p @ w  # sum_i p_i w_i
    others = p.scatter(1, y[:, None], -1.0)
    j = others.argmax(1)
    # d p_k / dx = p_k (w_k - wbar): the gradient of p_j - p_y
    grad = p.gather(1, j[:, None]) * (w[j] - wbar) - p.gather(1, y[:, None]) * (w[y] - wbar)
    assert torch.allclose(torch.tensor(out.per_sample["grad_norm"], dtype=torch.float64), grad.norm(dim=1))
    assert torch.allclose(modified_loss(model(x), y), p.gather(1, j[:, None]).squeeze(1) - p.gather(1, y[:, None])
                          .squeeze(1))
    s = attack.summarize(out.per_sample, [], [], attack.threat)
    assert abs(s["grad_norm_max"] - float(grad.norm(dim=1).max())) < 1e-9
