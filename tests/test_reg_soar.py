"""SOAR and FOAR (soar-foar.md §6): the regularizer against the logistic-regression closed form of Sec. 4.1,
Proposition 1's bound, factor constants, reductions, weight gradients through the FD, the regularizer-only
clip and the PGD1 geometry. float64 throughout."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import LogReg  # the two-logit logistic regression shared by the tests
from torch import nn

from advbench.attacks.training import pgd1_point
from advbench.core.tensors import per_sample_norm
from advbench.defenses import StepContext, build_defense
from advbench.defenses.expansion_point import INIT_FRACTIONS, expansion_point
from advbench.defenses.foar import foar_penalty
from advbench.defenses.input_gradients import input_grad
from advbench.defenses.soar import soar_factor, soar_hz, soar_regularizer
from advbench.threat import ThreatModel

CTX = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=2)


def tanh_net(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, classes)).double()


def central_difference(fn, weight: torch.Tensor, idx: tuple, step: float = 1e-6) -> float:
    """(fn(w + step·e_idx) − fn(w − step·e_idx)) / (2·step), restoring the weight."""
    values = []
    for shift in (step, -2 * step):
        with torch.no_grad():
            weight[idx] += shift
        values.append(float(fn().detach()))
    with torch.no_grad():
        weight[idx] += step
    return (values[0] - values[1]) / (2 * step)


def logreg_problem(seed: int, n: int = 4, shape=(3, 2, 2)):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    b = float(torch.randn(1, generator=g, dtype=torch.float64))
    return LogReg(w, b), x, y, w, b, g


def residual_and_uncertainty(x, y, w, b):
    """r = f − y and u = f(1 − f) with f = σ(wᵀx + b) (Sec. 4.1)."""
    f = torch.sigmoid(x.flatten(1) @ w + b)
    return f - y.double(), f * (1 - f)


def test_soar_hz_equals_the_logistic_regression_closed_form():
    """Sec. 4.1: ∇ℓ = r w and ∇²ℓ = u wwᵀ, so Hz = [u w (wᵀz_d) + z_1 r w ; r wᵀz_d + z_1] and R is
    ((dε²+1)/2)·‖Hz‖."""
    model, x, y, w, b, g = logreg_problem(0)
    z_d = torch.randn(x.shape, generator=g, dtype=torch.float64)
    z_1 = torch.randn(x.shape[0], generator=g, dtype=torch.float64)
    grad = input_grad(model, x, y, create_graph=True).grad
    top, bot = soar_hz(model, x, y, grad, z_d, z_1, h=1e-7)
    r, u = residual_and_uncertainty(x, y, w, b)
    wz = z_d.flatten(1) @ w
    top_ref = (u * wz)[:, None] * w + (z_1 * r)[:, None] * w
    bot_ref = r * wz + z_1
    torch.testing.assert_close(top.flatten(1), top_ref, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(bot, bot_ref, rtol=1e-5, atol=1e-9)
    eps, d = 8 / 255, x[0].numel()
    factor = soar_factor("linf", eps, d)
    terms = soar_regularizer(model, x, y, factor=factor, h=1e-7, z=[(z_d, z_1)])
    ref = factor * torch.sqrt((top_ref**2).sum(1) + bot_ref**2)
    torch.testing.assert_close(terms.reg, ref, rtol=1e-5, atol=0)


def test_mean_squared_hz_is_the_frobenius_norm():
    """E_z ‖Hz‖² = ‖H‖_F² = u²‖w‖⁴ + 2r²‖w‖² + 1 (Prop. 1), estimated with the implementation."""
    model, x, y, w, b, g = logreg_problem(1, n=1)
    n = 200_000
    xs, ys = x.expand(n, *x.shape[1:]), y.expand(n)
    torch.manual_seed(0)
    terms = soar_regularizer(model, xs, ys, factor=1.0, h=1e-6)  # factor 1: R = ‖Hz‖ per draw
    r, u = residual_and_uncertainty(x, y, w, b)
    w2 = float(w @ w)
    frob2 = float(u**2 * w2**2 + 2 * r**2 * w2 + 1)
    # relative standard error of the mean is sqrt(2 tr(H⁴))/tr(H²)/sqrt(n) <= sqrt(2/n) = 0.3%
    assert float(terms.reg.detach().pow(2).mean()) == pytest.approx(frob2, rel=0.01)


def test_section_4_1_maximum_is_below_the_proposition_1_bound():
    """ℓ2 ball of radius ρ: max_δ r wᵀδ + ½u(wᵀδ)² = ρ|r|‖w‖ + ½uρ²‖w‖² (Sec. 4.1) ≤ ((ρ²+1)/2)‖H‖_F − ½."""
    g = torch.Generator().manual_seed(2)
    n, d = 1000, 12
    w = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g).double()
    rho = math.sqrt(d) * torch.rand(n, generator=g, dtype=torch.float64)
    f = torch.sigmoid((w * x).sum(1))
    r, u = f - y, f * (1 - f)
    wn = w.norm(dim=1)
    best = rho * r.abs() * wn + 0.5 * u * rho**2 * wn**2
    # the closed form is attained at δ = sign(r)·ρ·w/‖w‖ ...
    delta = (r.sign() * rho / wn)[:, None] * w
    wd = (w * delta).sum(1)
    torch.testing.assert_close(r * wd + 0.5 * u * wd**2, best)
    # ... and no random point of the ball does better
    for _ in range(5):
        dz = torch.randn(n, d, generator=g, dtype=torch.float64)
        dz = dz / dz.norm(dim=1, keepdim=True) * (rho * torch.rand(n, generator=g, dtype=torch.float64))[:, None]
        wz = (w * dz).sum(1)
        assert bool((r * wz + 0.5 * u * wz**2 <= best + 1e-12).all())
    frob = torch.sqrt(u**2 * wn**4 + 2 * r**2 * wn**2 + 1)
    assert bool((best <= 0.5 * (rho**2 + 1) * frob - 0.5 + 1e-12).all())


def test_linf_bound_by_vertex_enumeration():
    """For d = 8 the quadratic (convex, u ≥ 0) peaks at a box vertex; it stays below ((dε²+1)/2)‖H‖_F − ½."""
    g = torch.Generator().manual_seed(3)
    d, eps = 8, 0.3
    verts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64) * eps
    for _ in range(50):
        w = torch.randn(d, generator=g, dtype=torch.float64) * 2
        f = torch.sigmoid(torch.randn((), generator=g, dtype=torch.float64))
        r = f - float(torch.randint(0, 2, (1,), generator=g))
        u = f * (1 - f)
        wd = verts @ w
        best = float((r * wd + 0.5 * u * wd**2).max())
        frob = math.sqrt(float(u**2 * (w @ w) ** 2 + 2 * r**2 * (w @ w) + 1))
        assert best <= soar_factor("linf", eps, d) * frob - 0.5 + 1e-12


def test_factor_constants():
    """The spec's constants: (3072·(4/255)²+1)/2, (3072·(8/255)²+1)/2, (3072·0.03²+1)/2 and 8/255·√3072."""
    assert soar_factor("linf", 4 / 255, 3072) == pytest.approx(0.87795, abs=1e-5)
    assert soar_factor("linf", 8 / 255, 3072) == pytest.approx(2.01180, abs=5e-5)  # spec rounds 2.011788 up
    assert soar_factor("linf", 0.03, 3072) == pytest.approx(1.8824, abs=1e-4)
    assert 8 / 255 * math.sqrt(3072) == pytest.approx(1.7389, abs=1e-4)
    # the L2 variant drops d; L∞-SOAR at eps equals L2-SOAR at eps·√d
    assert soar_factor("l2", 0.5, 3072) == pytest.approx(0.625)
    assert soar_factor("l2", 8 / 255 * math.sqrt(3072), 1) == pytest.approx(soar_factor("linf", 8 / 255, 3072))


def test_default_reg_eps_and_factor_follow_the_init():
    threat = ThreatModel.parse("8/255", "linf")
    assert build_defense("soar", threat).reg_eps() == pytest.approx(4 / 255)
    assert build_defense("soar", threat, {"init": "pgd1-full"}).reg_eps() == pytest.approx(8 / 255)
    assert build_defense("soar", threat, {"reg_eps": "0.03"}).reg_eps() == pytest.approx(0.03)
    assert build_defense("foar", threat).describe()["resolved"]["reg_eps"] == pytest.approx(4 / 255)


def test_regularizer_is_batch_size_invariant_with_summed_input_gradients():
    """R for B copies of one sample (same z) equals R for B = 1; the batch-mean reduction breaks this."""
    model = tanh_net()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([1])
    z_d = torch.randn(x.shape, generator=g, dtype=torch.float64)
    z_1 = torch.randn(1, generator=g, dtype=torch.float64)
    one = soar_regularizer(model, x, y, factor=2.0, h=0.01, z=[(z_d, z_1)]).reg
    b = 6
    rep = [(z_d.expand(b, *x.shape[1:]), z_1.expand(b))]
    many = soar_regularizer(model, x.expand(b, *x.shape[1:]), y.expand(b), factor=2.0, h=0.01, z=rep).reg
    torch.testing.assert_close(many, one.expand(b), rtol=1e-10, atol=0)
    mean = soar_regularizer(model, x.expand(b, *x.shape[1:]), y.expand(b), factor=2.0, h=0.01, z=rep,
                            reduction="mean").reg
    assert not torch.allclose(mean, one.expand(b), rtol=1e-3)


def test_weight_gradient_flows_through_both_input_gradients():
    """∂R/∂θ by autograd (double backprop) equals a central difference of R in a few weight coordinates."""
    model = tanh_net(1)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(3, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    z = [(torch.randn(x.shape, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64))]
    threat = ThreatModel.parse("8/255", "linf")
    xp = expansion_point(model, x, y, threat, "pgd1-half")
    assert xp.grad_fn is None and not xp.requires_grad

    def value() -> torch.Tensor:
        return soar_regularizer(model, xp, y, factor=1.5, h=0.01, z=z).reg.mean()

    weight = model[0].weight
    (auto,) = torch.autograd.grad(value(), weight)
    for idx in [(0, 0, 0, 0), (1, 1, 2, 1), (2, 0, 1, 2)]:
        assert float(auto[idx]) == pytest.approx(central_difference(value, weight, idx), rel=1e-6)


def test_clip_applies_to_the_regularizer_gradient_only():
    """After the step: ‖g_total − g_CE‖ ≤ c, and g_total − g_CE is exactly the clipped regularizer gradient."""
    threat = ThreatModel.parse("8/255", "linf")
    x = torch.rand(4, 2, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    clip = 1e-3
    defense = build_defense("soar", threat, {"reg_grad_clip": clip})
    model = tanh_net(2)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0 keeps weights and the .grad of the step
    torch.manual_seed(11)
    defense.train_step(model, optimizer, x, y, CTX)
    total = torch.cat([p.grad.flatten() for p in params])
    # reference with the same random draws: PGD1 noise, then z
    torch.manual_seed(11)
    xp = expansion_point(model, x, y, threat, "pgd1-half")
    terms = soar_regularizer(model, xp, y, factor=soar_factor("linf", 4 / 255, 32), h=0.01)
    g_ce = torch.cat([t.flatten() for t in torch.autograd.grad(terms.loss.mean(), params, retain_graph=True)])
    g_reg = torch.cat([t.flatten() for t in torch.autograd.grad(terms.reg.mean(), params)])
    assert float(g_reg.norm()) > 10 * clip  # the clip is active
    assert float((total - g_ce).norm()) <= clip + 1e-6
    # clip_grad_norm_ scales by clip / (norm + 1e-6), hence the loose tolerance
    torch.testing.assert_close(total - g_ce, g_reg * (clip / g_reg.norm()), rtol=1e-4, atol=1e-12)


def test_reg_value_clip_mode_bounds_each_sample_penalty():
    threat = ThreatModel.parse("8/255", "linf")
    x = torch.rand(4, 2, 4, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    model = tanh_net(3)
    torch.manual_seed(0)
    free, logs_free = build_defense("soar", threat, {"reg_grad_clip": None}).loss(model, x, y, CTX)
    cap = 0.5 * logs_free["reg"]
    torch.manual_seed(0)
    _, logs = build_defense("soar", threat, {"clip_mode": "reg-value", "reg_grad_clip": cap}).loss(model, x, y, CTX)
    assert logs["reg"] <= cap + 1e-12


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("init", list(INIT_FRACTIONS))
def test_pgd1_point_stays_in_its_ball_and_the_box(norm, eps, init):
    model = tanh_net(4)
    threat = ThreatModel(norm=norm, eps=eps, eps_text=str(eps))
    x = torch.rand(16, 2, 4, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x[:4] = 0.0  # samples on the box boundary
    y = torch.randint(0, 3, (16,))
    xp = expansion_point(model, x, y, threat, init)
    ball = INIT_FRACTIONS[init][2] * eps
    assert float(xp.min()) >= 0 and float(xp.max()) <= 1
    assert float(per_sample_norm(xp - x, float("inf") if norm == "linf" else 2.0).max()) <= ball + 1e-7
    if init == "zero":
        assert torch.equal(xp, x)
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_pgd1_step_without_noise_is_a_clipped_sign_step_on_a_linear_model():
    model, x, y, w, b, _ = logreg_problem(10, n=32)
    x[:8] = x[:8].round()  # some pixels at 0 or 1 so that the box binds
    threat = ThreatModel.parse("0.1", "linf")
    xp = pgd1_point(model, x, y, threat, (0.0, 0.5, 0.5))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    torch.testing.assert_close(xp, (x + 0.05 * g.sign()).clamp(0, 1), rtol=0, atol=1e-15)


def test_foar_penalty_is_the_vertex_maximum_of_the_linearization():
    """For d = 12: max over the 2^d vertices of ℓ + ∇ℓᵀδ equals ℓ + ε‖∇ℓ‖₁."""
    model, x, y, *_ = logreg_problem(12, n=3, shape=(3, 2, 2))
    eps = 0.05
    base = input_grad(model, x, y)
    verts = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=12)), dtype=torch.float64) * eps
    brute = base.loss + (base.grad.flatten(1) @ verts.T).max(dim=1).values
    torch.testing.assert_close(base.loss + foar_penalty(base.grad, "linf", eps), brute)
    torch.testing.assert_close(foar_penalty(base.grad, "l2", eps), eps * base.grad.flatten(1).norm(dim=1))


def test_foar_weight_gradient_matches_finite_differences():
    """With x' fixed (zero init) the double-backprop weight gradient equals a central difference of ℓ_FOAR."""
    threat = ThreatModel.parse("8/255", "linf")
    defense = build_defense("foar", threat, {"init": "zero"})
    model = tanh_net(5)
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    y = torch.tensor([2, 0, 1])
    loss, logs = defense.loss(model, x, y, CTX)
    assert logs["reg"] > 0
    weight = model[3].weight
    (auto,) = torch.autograd.grad(loss, weight)
    for idx in [(0, 0), (1, 7), (2, 40)]:
        fd = central_difference(lambda: defense.loss(model, x, y, CTX)[0], weight, idx)
        assert float(auto[idx]) == pytest.approx(fd, rel=1e-6)
