"""Oracles for advbench.certify (evaluation-protocols.md Part C, items 8, 9 and 12):

- randomized smoothing on a linear binary base classifier: p_A = Φ(m / (σ‖w‖₂)) exactly, so Cohen's radius
  σΦ⁻¹(p_A) equals the distance m/‖w‖₂ to the decision boundary; CERTIFY's finite-n radius lies below it and
  approaches it as n grows; a point on the boundary is abstained on and counts as an error;
- the Clopper–Pearson lower bound equals the Beta quantile formula;
- the GEV fit recovers a known 1 − p quantile (p = 0.001) within 5%;
- on a two-class linear softmax model the modified loss is −tanh(m/2) with gradient norm ½sech²(m/2)‖Δw‖_*, the
  exact Lipschitz constant is ½‖Δw‖_*, and the L-bound with it never exceeds the true distance |m|/‖Δw‖_*;
- every sampled ω statistic is below the closed-form modulus of continuity, and the ω-bound with the exact ω
  certifies only points whose true distance is at least ε.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from advbench.certify import (
    ABSTAIN,
    BoundOptions,
    SmoothingOptions,
    certified_accuracy,
    certify,
    cohen_radius,
    fit_gev,
    lbound_distances,
    lipschitz_estimate,
    loss_and_dual_grad,
    lower_confidence_bound,
    omega_certified,
    omega_distances,
    predict,
)
from advbench.certify.bounds import omega_estimates, omega_samples, sample_ball
from advbench.errors import UserError

SHAPE = (3, 2, 2)  # 12 input dimensions
D = 12


def linear_two_class(w: torch.Tensor, b: float, dtype=torch.float64) -> nn.Module:
    """Logits (0, w·x + b): class 1 iff w·x + b > 0; margin of class 1 m = w·x + b."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).to(dtype)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1] = w
        model[1].bias[1] = b
    return model.eval()


def points_at(w: torch.Tensor, b: float, margins: list[float]) -> torch.Tensor:
    """Images (in SHAPE) with w·x + b equal to each margin: x = 0.5 + t·w/‖w‖²."""
    base = torch.full((D,), 0.5, dtype=torch.float64)
    out = [base + (m - (w @ base + b)) * w / (w @ w) for m in margins]
    return torch.stack(out).view(-1, *SHAPE)


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, generator=g, dtype=torch.float64)
    return w, 0.1, linear_two_class(w, 0.1)


# --- randomized smoothing --------------------------------------------------------------------------------------

def test_cohen_radius_of_the_exact_p_a_is_the_distance_to_the_boundary(linear):
    w, b, _ = linear
    for sigma in (0.12, 0.25, 0.5, 1.0):
        for m in (0.05, 0.3, 1.0, 2.5):
            p_a = stats.norm.cdf(m / (sigma * float(w.norm())))  # P(w·(x + δ) + b > 0), δ ~ N(0, σ²I)
            assert cohen_radius(p_a, sigma) == pytest.approx(m / float(w.norm()), rel=1e-9)


def test_the_monte_carlo_p_a_matches_the_closed_form(linear):
    w, b, model = linear
    sigma, m = 0.5, 0.6 * float(w.norm()) * 0.5
    x = points_at(w, b, [m])[0]
    from advbench.certify import sample_counts

    counts = sample_counts(model, x, 40_000, sigma, 10_000, 2, torch.Generator().manual_seed(1))
    p_a = stats.norm.cdf(m / (sigma * float(w.norm())))
    assert abs(int(counts[1]) / 40_000 - p_a) < 4 * math.sqrt(p_a * (1 - p_a) / 40_000)


def test_certify_radius_is_below_the_exact_one_and_approaches_it(linear):
    w, b, model = linear
    sigma = 0.5
    exact = [0.15, 0.3, 0.6]  # true distances m/‖w‖
    xs = points_at(w, b, [r * float(w.norm()) for r in exact])
    gaps = []
    for n in (1_000, 10_000, 100_000):
        opts = SmoothingOptions(sigma=sigma, n0=100, n=n, alpha=0.001, batch=20_000)
        row = []
        for x, r in zip(xs, exact, strict=True):
            cert = certify(model, x, opts, 2, torch.Generator().manual_seed(n))
            assert cert.prediction == 1
            assert cert.radius <= r + 1e-12, (n, r, cert.radius)
            assert cert.radius == pytest.approx(cohen_radius(cert.p_lower, sigma))
            row.append(r - cert.radius)
        gaps.append(row)
    for small, large in zip(gaps, gaps[1:], strict=False):
        assert all(g2 < g1 for g1, g2 in zip(small, large, strict=True)), gaps
    assert max(gaps[-1]) < 0.02, gaps


def test_a_point_on_the_boundary_is_abstained_on_and_counts_as_an_error(linear):
    w, b, model = linear
    x = points_at(w, b, [0.0])[0]
    opts = SmoothingOptions(sigma=0.25, n0=100, n=2_000, alpha=0.001, batch=2_000)
    cert = certify(model, x, opts, 2, torch.Generator().manual_seed(3))
    assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.p_lower < 0.5
    assert predict(model, x, opts, 2, torch.Generator().manual_seed(4)) == ABSTAIN
    far = points_at(w, b, [2.0 * float(w.norm())])[0]
    assert predict(model, far, opts, 2, torch.Generator().manual_seed(5)) == 1
    # labels: both images are of class 1; the abstention is an error at every radius, even 0
    assert certified_accuracy([ABSTAIN, 1], [0.0, 0.4], [1, 1], [0.0, 0.25, 0.5]) == [0.5, 0.5, 0.0]


def test_clopper_pearson_lower_bound_is_the_beta_quantile():
    for k, n, alpha in ((0, 10, 0.05), (7, 10, 0.05), (990, 1000, 0.001), (100_000, 100_000, 0.001),
                        (51, 100, 0.01)):
        expect = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        assert lower_confidence_bound(k, n, alpha) == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_smoothing_options_are_checked():
    for bad in ({"sigma": 0}, {"n": 0}, {"n0": 0}, {"alpha": 1.0}, {"batch": 0}):
        with pytest.raises(UserError):
            SmoothingOptions(**bad).validate()


# --- GEV -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [0.3, 0.1, -0.1])
def test_gev_fit_recovers_a_known_quantile(c):
    p = 0.001
    dist = stats.genextreme(c, loc=2.0, scale=0.5)
    samples = dist.rvs(size=5000, random_state=np.random.default_rng(7))
    fit = fit_gev(samples, p)
    assert fit.estimate == pytest.approx(dist.ppf(1 - p), rel=0.05)
    assert fit.n == 5000 and fit.sample_max == pytest.approx(samples.max())


def test_gev_of_equal_samples_is_that_value_and_bad_input_is_refused():
    fit = fit_gev([1.5, 1.5, 1.5])
    assert fit.degenerate and fit.estimate == 1.5
    with pytest.raises(UserError):
        fit_gev([1.0])
    with pytest.raises(UserError):
        fit_gev([1.0, float("nan")])


# --- L-bound and ω-bound on a two-class linear softmax model ---------------------------------------------------

def _g(m: np.ndarray) -> np.ndarray:
    """The modified loss as a function of the margin m = z_y − z_o: p_o − p_y = −tanh(m/2)."""
    return -np.tanh(m / 2)


def _exact_omega(eps: float, wnorm: float) -> float:
    """sup over m and |t| ≤ ε‖Δw‖ of g(m + t) − g(m) − g'(m)·t (the modulus of continuity of ℓ along Δw)."""
    m = np.linspace(-12, 12, 4001)[:, None]
    t = np.linspace(-eps * wnorm, eps * wnorm, 801)[None, :]
    slope = -0.5 / np.cosh(m / 2) ** 2
    return float((_g(m + t) - _g(m) - slope * t).max())


def _data(w: torch.Tensor, b: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images spread around the boundary (margins in ±3) with their true labels (some points misclassified: the
    label is flipped for every seventh)."""
    g = torch.Generator().manual_seed(seed)
    margins = (torch.rand(n, generator=g, dtype=torch.float64) * 6 - 3).tolist()
    x = points_at(w, b, margins)
    y = torch.tensor([int(m > 0) for m in margins])
    y[::7] = 1 - y[::7]
    return x, y


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_modified_loss_gradient_and_l_bound_on_the_linear_model(linear, norm):
    w, b, model = linear
    x, y = _data(w, b, 300, seed=1)
    stats_ = loss_and_dual_grad(model, x, y, norm, batch=64)
    dw = float(w.norm(p=2 if norm == "l2" else 1))  # ‖Δw‖_* (Δw = w: the other class's row is zero)
    m_true = ((x.flatten(1) @ w + b) * (2 * y - 1).double()).numpy()  # z_y − z_o
    assert np.allclose(stats_.loss, _g(m_true), atol=1e-12)
    assert np.allclose(stats_.dual_grad, 0.5 / np.cosh(m_true / 2) ** 2 * dw, rtol=1e-9)
    exact_l = 0.5 * dw
    dist = lbound_distances(stats_.loss, exact_l)
    true = np.where(m_true > 0, np.abs(m_true) / float(w.norm(p=1 if norm == "linf" else 2)), 0.0)
    assert np.all(dist <= true + 1e-12) and np.all(dist[m_true <= 0] == 0)
    assert np.all(dist[m_true > 0] > 0)
    # the GEV estimate of L from the data (which come close to the boundary) is near the exact constant
    fit = lipschitz_estimate(stats_.dual_grad, BoundOptions(batches=200, batch=20), seed=0)
    assert fit.estimate == pytest.approx(exact_l, rel=0.05)


def test_omega_samples_stay_below_the_modulus_of_continuity_and_the_bound_is_valid(linear):
    w, b, model = linear
    x, y = _data(w, b, 200, seed=2)
    grid = [0.05, 0.1, 0.2, 0.4]
    wn = float(w.norm())
    exact = [_exact_omega(e, wn) for e in grid]
    opts = BoundOptions(batches=20, batch=50)
    samples = omega_samples(model, x, y, grid, "l2", opts, seed=0, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 20)
    for row, om in zip(samples, exact, strict=True):
        assert np.all(row <= om + 1e-12), (row.max(), om)
    assert np.all(np.diff(samples, axis=0) >= 0)  # a batch's maximum at ε covers the draws of every smaller ε
    fits = omega_estimates(model, x, y, [0.0, *grid], "l2", opts, seed=0, generator=torch.Generator().manual_seed(0))
    assert fits[0].estimate == 0.0 and all(f.estimate >= 0 for f in fits[1:])
    st = loss_and_dual_grad(model, x, y, "l2")
    m_true = ((x.flatten(1) @ w + b) * (2 * y - 1).double()).numpy()
    true = np.where(m_true > 0, m_true / wn, 0.0)
    certified_any = False
    for e, om in zip(grid, exact, strict=True):
        ok = omega_certified(st.loss, st.dual_grad, om, e)
        assert np.all(true[ok] >= e - 1e-12)
        certified_any |= bool(ok.any())
    assert certified_any
    dist = omega_distances(st.loss, st.dual_grad, grid, exact)
    assert np.all(dist <= true + 1e-12) and set(np.unique(dist)) <= {0.0, *grid}


def test_samples_lie_in_the_ball():
    g = torch.Generator().manual_seed(0)
    v2 = sample_ball(torch.Size((500, *SHAPE)), 0.3, "l2", g, "cpu", torch.float64)
    vi = sample_ball(torch.Size((500, *SHAPE)), 0.1, "linf", g, "cpu", torch.float64)
    assert float(v2.flatten(1).norm(dim=1).max()) <= 0.3 + 1e-12
    assert float(vi.abs().max()) <= 0.1 and float(vi.abs().max()) > 0.09


def test_monotone_envelope_makes_omega_non_decreasing():
    from advbench.certify import monotone_envelope

    assert monotone_envelope([0.5, 0.1, 0.25, 1.0], [0.2, 0.3, 0.1, 0.25]) == [0.3, 0.3, 0.3, 0.3]
    assert monotone_envelope([0.1, 0.2], [0.1, 0.4]) == [0.1, 0.4]
