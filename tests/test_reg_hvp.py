"""Finite-difference Hessian-vector products (SOAR Eq. 10, SCORPIO Eqs. 10-11, CURE) and the Frank-Wolfe
linear-maximisation oracle, against exact autograd in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.tensors import per_sample_dot, per_sample_norm, unit_direction
from advbench.defenses.input_gradients import fd_hvp, input_grad
from advbench.defenses.scorpio import dual_exponent, lmo


def conv_net(act: nn.Module, seed: int = 0) -> nn.Module:
    """A tiny conv net in float64 (smooth with tanh/softplus, piecewise linear with ReLU)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), act, nn.Conv2d(6, 6, 3, padding=1), act, nn.Flatten(),
                         nn.Linear(6 * 6 * 6, 5)).double()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=g)
    v = unit_direction(torch.randn(x.shape, generator=g, dtype=torch.float64))
    return x, y, v


def exact_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample ∇²ℓ_i(x_i) v_i by double backprop (the Hessian of the summed loss is block diagonal)."""
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), xr)
    return hv


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def loglog_slope(hs: list[float], errs: list[float]) -> float:
    """Least-squares slope of log(err) against log(h)."""
    lx = torch.tensor([math.log(h) for h in hs], dtype=torch.float64)
    ly = torch.tensor([math.log(e) for e in errs], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


@pytest.mark.parametrize("act", [nn.Tanh(), nn.Softplus()], ids=["tanh", "softplus"])
def test_forward_fd_hvp_matches_autograd_and_error_is_first_order(act, batch):
    x, y, v = batch
    model = conv_net(act)
    exact = exact_hvp(model, x, y, v)
    hs = [1e-2, 1e-3, 1e-4]
    errs = [rel_err(fd_hvp(model, x, y, v, h), exact) for h in hs]
    assert errs[0] > errs[1] > errs[2]
    assert loglog_slope(hs, errs) == pytest.approx(1.0, abs=0.2)
    assert rel_err(fd_hvp(model, x, y, v, 1e-6), exact) < 1e-5
    # the recycled gradient g0 gives the same result as recomputing it
    g0 = input_grad(model, x, y).grad
    torch.testing.assert_close(fd_hvp(model, x, y, v, 1e-4, g0=g0), fd_hvp(model, x, y, v, 1e-4))


def test_central_fd_hvp_is_second_order(batch):
    x, y, v = batch
    model = conv_net(nn.Tanh())
    exact = exact_hvp(model, x, y, v)
    hs = [1e-1, 1e-2, 1e-3]
    errs = [rel_err(fd_hvp(model, x, y, v, h, scheme="central"), exact) for h in hs]
    assert loglog_slope(hs, errs) == pytest.approx(2.0, abs=0.2)
    assert errs[-1] < 1e-4


def test_fd_hvp_keeps_the_parameter_graph_only_when_asked(batch):
    x, y, v = batch
    model = conv_net(nn.Tanh())
    assert not fd_hvp(model, x, y, v, 1e-3).requires_grad
    g0 = input_grad(model, x, y, create_graph=True).grad
    assert fd_hvp(model, x, y, v, 1e-3, g0=g0, create_graph=True).requires_grad


def test_relu_fd_differs_from_autograd_hessian_at_h_001(batch):
    """Documents the pitfall: on a ReLU net the FD step crosses kinks that autograd's Hessian ignores."""
    x, y, v = batch
    model = conv_net(nn.ReLU())
    exact = exact_hvp(model, x, y, v)
    assert rel_err(fd_hvp(model, x, y, v, 1e-2), exact) > 0.1


@pytest.mark.parametrize("p", [2.0, 3.0, 1.5, float("inf"), 1.0])
def test_lmo_is_unit_norm_and_attains_the_dual_norm(p):
    g = torch.Generator().manual_seed(3)
    d = torch.randn(5, 2, 3, 4, generator=g, dtype=torch.float64)
    eps = 0.7
    s = eps * lmo(d, p)
    q = dual_exponent(p)
    torch.testing.assert_close(per_sample_norm(s, p), torch.full((5,), eps, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(per_sample_dot(s, d), eps * per_sample_norm(d, q), rtol=1e-12, atol=0)


def test_printed_lmo_exponent_p_over_q_fails_at_p3():
    """Regression guard: Eq. 8 prints |d|^(p/q); only q - 1 attains <s, d> = ||d||_q."""
    g = torch.Generator().manual_seed(4)
    d = torch.randn(4, 10, generator=g, dtype=torch.float64)
    p = 3.0
    q = dual_exponent(p)
    wrong = d.sign() * d.abs().pow(p / q)
    wrong = wrong / torch.linalg.vector_norm(wrong, ord=p, dim=1, keepdim=True)
    assert not torch.allclose(per_sample_dot(wrong, d), per_sample_norm(d, q), rtol=1e-6)
    torch.testing.assert_close(per_sample_dot(lmo(d, p), d), per_sample_norm(d, q), rtol=1e-12, atol=0)


def test_lmo_of_zero_is_zero():
    d = torch.zeros(2, 6, dtype=torch.float64)
    for p in (2.0, 3.0, float("inf"), 1.0):
        assert torch.equal(lmo(d, p), torch.zeros_like(d))
