"""Input-gradient and curvature regularizers (gradient-regularization.md §6): grad-reg-fd against exact double
backprop as h → 0, the logistic-regression closed form, the zero-gradient guard, DBP reductions, CURE on an exact
quadratic, and LLR's local-linearity measure. float64 throughout."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import LogReg  # the two-logit logistic regression shared by the tests
from torch import nn

from advbench.core.tensors import per_sample_norm
from advbench.defenses import StepContext, build_defense
from advbench.defenses.cure import cure_direction, cure_regularizer
from advbench.defenses.grad_reg import grad_norm_penalty
from advbench.defenses.grad_reg_fd import fd_direction, fd_gradient_terms
from advbench.defenses.input_gradients import input_grad
from advbench.defenses.llr import llr_inner_max, local_linearity
from advbench.threat import ThreatModel

CTX = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=3)
LINF = ThreatModel.parse("8/255", "linf")
L2 = ThreatModel.parse("0.5", "l2")


def tanh_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()


def data(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


class Quadratic(nn.Module):
    """Single output = per-sample loss ½(x − c)ᵀA(x − c) + bᵀx; use with ``first``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, c: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        z = f - self.c
        return (0.5 * ((z @ self.a) * z).sum(1) + f @ self.b)[:, None]


def first(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out[:, 0]


def loglog_slope(hs: list[float], errs: list[float]) -> float:
    lx = torch.tensor([math.log(h) for h in hs])
    ly = torch.tensor([math.log(e) for e in errs])
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


# ------------------------------------------------------------------------------------------ grad-reg-fd


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_fd_slope_converges_to_the_dual_gradient_norm(penalty):
    """l2 direction: slope → ‖∇ℓ‖₂; l1 (sign/√N): slope → ‖∇ℓ‖₁/√N; first-order error, < 1e-5 at h = 1e-6."""
    model = tanh_net()
    x, y = data()
    g = input_grad(model, x, y).grad
    n = x[0].numel()
    target = per_sample_norm(g, 2) if penalty == "l2" else per_sample_norm(g, 1) / math.sqrt(n)
    hs = [1e-2, 1e-3, 1e-4]
    errs = []
    for h in hs:
        slope = fd_gradient_terms(model, x, y, h=h, penalty=penalty).slope.detach()
        errs.append(float(((slope - target).abs() / target).max()))
    assert loglog_slope(hs, errs) == pytest.approx(1.0, abs=0.2)
    slope = fd_gradient_terms(model, x, y, h=1e-6, penalty=penalty).slope.detach()
    assert float(((slope - target).abs() / target).max()) < 1e-5


@pytest.mark.parametrize("threat,penalty", [(L2, "l2"), (LINF, "l1")])
def test_fd_penalty_and_its_parameter_gradient_approach_double_backprop(threat, penalty):
    """(λ/2)·mean (FD slope)² and its weight gradient → the exact DBP penalty (λ/2)·mean ‖g‖² (‖g‖₁²/N for
    Linf) and its weight gradient, with error O(h)."""
    model = tanh_net(1)
    params = list(model.parameters())
    x, y = data(1)
    fd_def = build_defense("grad-reg-fd", threat, {"lam": 1.0})
    dbp = build_defense("grad-reg", threat, {"lam": 1.0, "l1_normalise_by_n": True})
    assert fd_def.penalty() == penalty and dbp.norm() == penalty
    exact_loss, exact_logs = dbp.loss(model, x, y, CTX)
    exact_grad = torch.cat([t.flatten() for t in torch.autograd.grad(exact_loss, params)])
    errs_value, errs_grad = [], []
    for h in (1e-2, 1e-3, 1e-4):
        fd_def.options.h = h
        loss, logs = fd_def.loss(model, x, y, CTX)
        grad = torch.cat([t.flatten() for t in torch.autograd.grad(loss, params)])
        errs_value.append(abs(logs["reg"] - exact_logs["reg"]) / exact_logs["reg"])
        errs_grad.append(float((grad - exact_grad).norm() / exact_grad.norm()))
    assert errs_value[0] > errs_value[1] > errs_value[2] and errs_value[2] < 1e-3
    assert errs_grad[0] > errs_grad[1] > errs_grad[2] and errs_grad[2] < 1e-3
    assert loglog_slope([1e-2, 1e-3, 1e-4], errs_grad) == pytest.approx(1.0, abs=0.25)


def test_grad_reg_fd_step_runs_no_double_backprop(monkeypatch):
    """No autograd call of the step builds a differentiable gradient, and the FD direction is a constant."""
    model = tanh_net(2)
    x, y = data(2)
    calls: list[bool] = []
    real = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get("create_graph", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    for order in ("forward", "central"):
        defense = build_defense("grad-reg-fd", LINF, {"fd_order": order})
        defense.train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, CTX)
    assert calls and not any(calls)
    # the DBP baseline does build one (the spy can see it)
    build_defense("grad-reg", LINF).loss(model, x, y, CTX)
    assert calls[-1] is True
    monkeypatch.undo()
    t = fd_gradient_terms(model, x, y, h=0.01, penalty="l1")
    assert not t.grad.requires_grad and not t.direction.requires_grad and t.slope.requires_grad


def test_logistic_regression_closed_form():
    """∇ₓℓ = (f − y)w, so the DBP penalty per sample is (f − y)²‖w‖²; FD at h = 1e-7 matches to 1e-6."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(12, generator=g, dtype=torch.float64)
    model = LogReg(w, 0.3)
    x = torch.rand(5, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (5,), generator=g)
    f = torch.sigmoid(x.flatten(1) @ w + 0.3)
    closed = (f - y.double()) ** 2 * (w @ w)
    t = fd_gradient_terms(model, x, y, h=1e-7, penalty="l2")
    torch.testing.assert_close(t.slope.detach() ** 2, closed, rtol=1e-6, atol=0)
    dbp = build_defense("grad-reg", L2, {"lam": 2.0})
    _, logs = dbp.loss(model, x, y, CTX)
    assert logs["reg"] == pytest.approx(float(closed.mean()), rel=1e-12)


def test_zero_gradient_samples_add_nothing():
    """Saturated logits in float64 give ∇ₓℓ = 0 exactly: d = 0, slope 0, no NaN."""
    w = torch.ones(12, dtype=torch.float64)
    model = LogReg(w, 1000.0)
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.long)
    for penalty in ("l2", "l1", "linf"):
        t = fd_gradient_terms(model, x, y, h=0.01, penalty=penalty)
        assert torch.equal(t.grad, torch.zeros_like(t.grad))
        assert torch.equal(t.direction, torch.zeros_like(t.direction))
        assert torch.equal(t.slope.detach(), torch.zeros(3, dtype=torch.float64))
    defense = build_defense("grad-reg-fd", L2)
    defense.train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, CTX)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fd_directions():
    g = torch.tensor([[[3.0, -4.0], [0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(fd_direction(g, "l2"), g / 5.0)
    torch.testing.assert_close(fd_direction(g, "l1"), g.sign() / 2.0)
    torch.testing.assert_close(fd_direction(g, "linf"), torch.tensor([[[0.0, -1.0], [0.0, 0.0]]], dtype=torch.float64))


def test_dbp_reduction_conventions():
    """ross = ½λ(1/B²)Σ‖g_i‖², finlay = ½λ·mean‖g_i‖²; ‖·‖₁² optionally divided by N."""
    model = tanh_net(4)
    x, y = data(4, n=5)
    g = input_grad(model, x, y).grad
    sq2 = (g.flatten(1) ** 2).sum(1)
    sq1 = g.flatten(1).abs().sum(1) ** 2
    b, n = 5, x[0].numel()
    assert float(grad_norm_penalty(g, "l2", 0.3, "finlay")) == pytest.approx(0.5 * 0.3 * float(sq2.mean()))
    assert float(grad_norm_penalty(g, "l2", 0.3, "ross")) == pytest.approx(0.5 * 0.3 * float(sq2.sum()) / b**2)
    assert float(grad_norm_penalty(g, "l1", 0.3, "finlay")) == pytest.approx(0.5 * 0.3 * float(sq1.mean()))
    assert float(grad_norm_penalty(g, "l1", 0.3, "finlay", True)) == pytest.approx(0.5 * 0.3 * float(sq1.mean()) / n)


def test_half_option_doubles_the_penalty():
    model = tanh_net(5)
    x, y = data(5)
    _, half = build_defense("grad-reg-fd", L2).loss(model, x, y, CTX)
    _, full = build_defense("grad-reg-fd", L2, {"half": False}).loss(model, x, y, CTX)
    assert full["reg"] == pytest.approx(2 * half["reg"], rel=1e-12)


def test_central_fd_step_matches_its_reference_loss():
    """The fused central step (clean gradient from the input-gradient backward) equals autograd of loss()."""
    model = tanh_net(6)
    params = list(model.parameters())
    x, y = data(6)
    defense = build_defense("grad-reg-fd", LINF, {"fd_order": "central", "lam": 3.0})
    loss, _ = defense.loss(model, x, y, CTX)
    ref = torch.autograd.grad(loss, params)
    defense.train_step(model, torch.optim.SGD(params, lr=0.0), x, y, CTX)
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, r, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------------ cure


def test_cure_on_an_exact_quadratic():
    """ℓ_i = ½xᵀAx + bᵀx: ∇ℓ(x + hz) − ∇ℓ(x) = hAz exactly, ‖hz‖₂ = h, and the regularizer is γ·mean‖hAz‖²
    (paper) or (γ/B²)Σ‖hAz_i‖ (code: power 1, batch-mean gradients)."""
    gen = torch.Generator().manual_seed(7)
    d, bsz, h, lam = 8, 4, 0.7, 2.5
    m = torch.randn(d, d, generator=gen, dtype=torch.float64)
    a, b = m @ m.T, torch.randn(d, generator=gen, dtype=torch.float64)
    model = Quadratic(a, b)
    x = torch.randn(bsz, d, generator=gen, dtype=torch.float64)
    y = torch.zeros(bsz, dtype=torch.long)
    g = input_grad(model, x, y, loss_fn=first, create_graph=True).grad
    z = cure_direction(g)
    torch.testing.assert_close(per_sample_norm(h * z, 2), torch.full((bsz,), h, dtype=torch.float64))
    torch.testing.assert_close(z, (x @ a + b).sign() / math.sqrt(d))
    az = h * z @ a
    paper, _ = cure_regularizer(model, x, y, g, h=h, lam=lam, loss_fn=first)
    code, _ = cure_regularizer(model, x, y, g, h=h, lam=lam, norm_power=1, reduction="code", loss_fn=first)
    assert float(paper.detach()) == pytest.approx(lam * float((az**2).sum(1).mean()), rel=1e-9)
    assert float(code.detach()) == pytest.approx(lam / bsz**2 * float(az.norm(dim=1).sum()), rel=1e-9)


def test_cure_weight_gradient_flows_through_both_gradients():
    """∂/∂θ of γ‖∇ℓ(x + hz) − ∇ℓ(x)‖² by double backprop equals a central difference in the weights."""
    model = tanh_net(8)
    x, y = data(8, n=3)

    def value() -> torch.Tensor:
        g = input_grad(model, x, y, create_graph=True).grad
        return cure_regularizer(model, x, y, g, h=0.5, lam=4.0)[0]

    weight = model[0].weight
    (auto,) = torch.autograd.grad(value(), weight)
    step = 1e-6
    for idx in [(0, 0, 0, 0), (3, 1, 2, 2)]:
        vals = []
        for shift in (step, -2 * step):
            with torch.no_grad():
                weight[idx] += shift
            vals.append(float(value().detach()))
        with torch.no_grad():
            weight[idx] += step
        assert float(auto[idx]) == pytest.approx((vals[0] - vals[1]) / (2 * step), rel=1e-6)
    loss, logs = build_defense("cure", LINF, {"h": 0.5}).loss(model, x, y, CTX)
    assert logs["reg"] > 0 and logs["h"] == 0.5 and loss.requires_grad


def test_cure_h_schedule_and_bn_mode():
    defense = build_defense("cure", LINF, {"h_schedule": "0.1,0.4,0.8"})
    assert [defense.current_h(e) for e in range(5)] == [0.1, 0.4, 0.8, 0.8, 0.8]
    assert build_defense("cure", LINF).current_h(3) == 1.5
    # without BatchNorm the eval-mode regularizer is the same objective
    model = tanh_net(9)
    x, y = data(9)
    _, train_logs = build_defense("cure", LINF).loss(model, x, y, CTX)
    _, eval_logs = build_defense("cure", LINF, {"bn_mode_reg": "eval"}).loss(model, x, y, CTX)
    assert eval_logs["reg"] == pytest.approx(train_logs["reg"], rel=1e-12)
    assert model.training


# ------------------------------------------------------------------------------------------ llr


def test_llr_gamma_vanishes_for_a_linear_loss():
    gen = torch.Generator().manual_seed(10)
    d = 6
    model = Quadratic(torch.zeros(d, d, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64))
    x = torch.rand(4, d, generator=gen, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    base = input_grad(model, x, y, loss_fn=first)
    for _ in range(3):
        delta = 0.1 * torch.randn(4, d, generator=gen, dtype=torch.float64)
        gam, _ = local_linearity(model, x, y, delta, base.loss, base.grad, loss_fn=first)
        assert float(gam.detach().max()) < 1e-12


def test_llr_inner_max_reaches_the_vertex_maximum_of_a_quadratic():
    """ℓ = ½(x − c)ᵀA(x − c) at x = c: γ(ε, c) = ½·max over the box of δᵀAδ; the inner PGD (best of restarts)
    reaches ≥ 99% of the brute-force vertex maximum (d = 8)."""
    gen = torch.Generator().manual_seed(11)
    d, eps = 8, 0.2
    threat = ThreatModel(norm="linf", eps=eps, eps_text="0.2")
    verts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64) * eps
    for trial in range(3):
        m = torch.randn(d, d, generator=gen, dtype=torch.float64)
        a = m @ m.T
        model = Quadratic(a, torch.zeros(d, dtype=torch.float64), c=0.5)
        x = torch.full((1, d), 0.5, dtype=torch.float64)
        y = torch.zeros(1, dtype=torch.long)
        base = input_grad(model, x, y, loss_fn=first)
        brute = 0.5 * float(((verts @ a) * verts).sum(1).max())
        best = 0.0
        for restart in range(8):
            g = torch.Generator().manual_seed(100 * trial + restart)
            delta = llr_inner_max(model, x, y, base.loss, base.grad, threat, steps=20, step_size=eps / 4,
                                  init="uniform", loss_fn=first, generator=g)
            assert float(delta.abs().max()) <= eps + 1e-12
            gam, _ = local_linearity(model, x, y, delta, base.loss, base.grad, loss_fn=first)
            best = max(best, float(gam.detach()))
        assert best >= 0.99 * brute


def test_llr_loss_terms():
    """λ·γ + μ·|δᵀ∇ℓ| is logged as reg, carries a parameter gradient through ∇ℓ(x), and the inner search
    leaves the model's mode and parameter flags alone."""
    model = tanh_net(12)
    x, y = data(12)
    defense = build_defense("llr", LINF, {"steps": 3})
    torch.manual_seed(0)
    loss, logs = defense.loss(model, x, y, CTX)
    assert logs["reg"] > 0 and logs["gamma"] >= 0
    assert model.training and all(p.requires_grad for p in model.parameters())
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(torch.isfinite(t).all() for t in grads)
    torch.manual_seed(0)
    _, no_mu = build_defense("llr", LINF, {"steps": 3, "mu": 0.0}).loss(model, x, y, CTX)
    assert no_mu["reg"] < logs["reg"]
