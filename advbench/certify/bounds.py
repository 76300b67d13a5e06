"""Finlay and Oberman's lower bounds on the minimum adversarial distance (Proposition 2.2), on the modified
Carlini–Wagner loss on softmax probabilities ℓ(x) = max_{i≠c} p_i(x) − p_c(x) with ℓ₀ = 0 (ℓ < 0 iff correct):

    L-bound:  ‖v‖ ≥ max{ℓ₀ − ℓ(x), 0} / L                       (L: the Lipschitz constant of ℓ)
    ω-bound:  the distance is ≥ ε when (ℓ₀ − ℓ(x) − ω(ε)) / ‖∇ℓ(x)‖_* ≥ ε,
              ω(ε) = sup_{x, ‖v‖≤ε} ℓ(x + v) − ℓ(x) − ⟨v, ∇ℓ(x)⟩   (the modulus of continuity)

with the dual norm ‖·‖_* (ℓ2 → ℓ2, ℓ∞ → ℓ1). L and ω(ε) are estimated as the paper does, after Weng et al.:
batch maxima of the statistic over random batches of the evaluated images (for ω also random v with ‖v‖ ≤ ε),
a GEV fit by maximum likelihood and its 1 − p quantile, p = 0.001 (:func:`~advbench.certify.gev.fit_gev`).
These are estimates, so the bounds are heuristics, not certificates (the paper says so).

Choices the paper does not state, recorded in every result: the images are the evaluated test images drawn with
replacement; v is uniform in the ε-ball (ℓ2: a uniform direction at radius ε·U^(1/d); ℓ∞: uniform in the box);
x + v is not clipped to [0, 1]; the ω-bound distance of an image is the largest ε of the grid it is certified at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench.attacks.diagnostics import modified_loss
from advbench.certify.gev import GEVFit, fit_gev
from advbench.core.passes import frozen
from advbench.errors import UserError

#: the dual norm's order for each threat norm
DUAL = {"l2": 2.0, "linf": 1.0}


@dataclass
class BoundOptions:
    """batches: number of batch maxima the GEV is fitted to. batch: samples per maximum. p: the GEV threshold
    (the estimate is the 1 − p quantile). The paper gives p = 0.001 and neither batches nor batch size."""

    batches: int = 100
    batch: int = 100
    p: float = 0.001

    def validate(self) -> None:
        if self.batches < 2:
            raise UserError(f"--batches must be >= 2 (a GEV fit needs several maxima), got {self.batches}")
        if self.batch < 1:
            raise UserError(f"--stat-batch must be >= 1, got {self.batch}")
        if not 0 < self.p < 1:
            raise UserError(f"--p must be in (0, 1), got {self.p}")


@dataclass
class BoundStats:
    """Per-image modified loss ℓ(x) and dual norm of its input gradient (float64, on the CPU)."""

    loss: np.ndarray
    dual_grad: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = modified_loss(model(x), y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.detach()


def loss_and_dual_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, batch: int = 256) -> BoundStats:
    """ℓ(x_i) and ‖∇ℓ(x_i)‖_* for every image (model in eval mode; ``batch`` images per pass)."""
    losses, duals = [], []
    with frozen(model, "eval"):
        for i in range(0, x.shape[0], batch):
            loss, grad = _loss_grad(model, x[i:i + batch], y[i:i + batch])
            losses.append(loss.double().cpu())
            duals.append(grad.flatten(1).double().norm(p=DUAL[norm], dim=1).cpu())
    return BoundStats(torch.cat(losses).numpy(), torch.cat(duals).numpy())


def lipschitz_estimate(dual_grad: np.ndarray, options: BoundOptions, seed: int) -> GEVFit:
    """GEV estimate of L: maxima of ‖∇ℓ‖_* over ``options.batches`` random batches of ``options.batch`` images
    (drawn with replacement), fitted by MLE; the 1 − p quantile."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(dual_grad), size=(options.batches, options.batch))
    return fit_gev(np.asarray(dual_grad)[idx].max(axis=1), options.p)


def lbound_distances(loss: np.ndarray, lipschitz: float) -> np.ndarray:
    """The L-bound max{ℓ₀ − ℓ(x), 0} / L per image (ℓ₀ = 0); infinite for correct images when L = 0."""
    gap = np.maximum(-np.asarray(loss, dtype=np.float64), 0.0)
    if lipschitz <= 0:
        return np.where(gap > 0, np.inf, 0.0)
    return gap / lipschitz


def sample_ball(shape: torch.Size, eps: float, norm: str, generator: torch.Generator | None, device: Any,
                dtype: torch.dtype) -> torch.Tensor:
    """Perturbations uniform in the ε-ball of ``norm`` (one per row of ``shape``)."""
    if norm == "linf":
        return (2 * torch.rand(shape, generator=generator, device=device, dtype=dtype) - 1) * eps
    d = int(np.prod(shape[1:]))
    direction = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (len(shape) - 1))
    radius = eps * torch.rand(shape[0], generator=generator, device=device, dtype=dtype) ** (1.0 / d)
    return direction * radius.view(-1, *[1] * (len(shape) - 1))


def omega_samples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], norm: str,
                  options: BoundOptions, seed: int, generator: torch.Generator | None = None) -> np.ndarray:
    """Batch maxima [len(eps), batches] of ℓ(x + v) − ℓ(x) − ⟨v, ∇ℓ(x)⟩ over random batches of images (with
    replacement) and v uniform in the ε-ball, for every ε (one gradient per batch serves all ε).

    A v drawn for a smaller ε also lies in the larger ε-ball, so each batch's maximum at ε is taken over the draws
    of every ε' ≤ ε: the maxima are non-decreasing in ε, as ω is."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(eps), options.batches))
    with frozen(model, "eval"):
        for k in range(options.batches):
            idx = torch.as_tensor(rng.integers(0, x.shape[0], size=options.batch))
            xb, yb = x[idx], y[idx]
            base, grad = _loss_grad(model, xb, yb)
            for j, e in enumerate(eps):
                v = sample_ball(xb.shape, e, norm, generator, xb.device, xb.dtype)
                with torch.no_grad():
                    moved = modified_loss(model(xb + v), yb)
                stat = moved - base - (v * grad).flatten(1).sum(dim=1)
                out[j, k] = float(stat.max())
    order = np.argsort(np.asarray(eps, dtype=np.float64), kind="stable")
    out[order] = np.maximum.accumulate(out[order], axis=0)
    return out


def omega_estimates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], norm: str,
                    options: BoundOptions, seed: int, generator: torch.Generator | None = None) -> list[GEVFit]:
    """GEV estimates of ω(ε) for every ε of ``eps`` (ε = 0 gives ω = 0 exactly)."""
    maxima = omega_samples(model, x, y, eps, norm, options, seed, generator)
    return [fit_gev(np.zeros(2) if e == 0 else m, options.p) for e, m in zip(eps, maxima, strict=True)]


def monotone_envelope(eps: list[float], values: list[float]) -> list[float]:
    """``values`` made non-decreasing in ``eps`` (each replaced by the largest value at any ε' ≤ ε): ω(ε) is a
    supremum over a growing ball, so an estimate at a larger ε below one at a smaller ε is an estimation error."""
    out = list(values)
    best = -np.inf
    for i in sorted(range(len(eps)), key=lambda i: eps[i]):
        best = max(best, values[i])
        out[i] = float(best)
    return out


def omega_certified(loss: np.ndarray, dual_grad: np.ndarray, omega: float, eps: float) -> np.ndarray:
    """The ω-bound at ε per image: correct (ℓ < ℓ₀ = 0) and ℓ₀ − ℓ(x) − ω(ε) ≥ ε·‖∇ℓ(x)‖_* (the inequality
    multiplied out, so that a zero gradient certifies whenever the gap exceeds ω)."""
    loss = np.asarray(loss, dtype=np.float64)
    return (loss < 0) & (-loss - omega >= eps * np.asarray(dual_grad, dtype=np.float64))


def omega_distances(loss: np.ndarray, dual_grad: np.ndarray, grid: list[float], omegas: list[float]) -> np.ndarray:
    """Per image, the largest ε of ``grid`` at which the ω-bound certifies it (0 where none does)."""
    best = np.zeros(len(loss))
    for e, w in zip(grid, omegas, strict=True):
        ok = omega_certified(loss, dual_grad, w, e)
        best = np.where(ok, np.maximum(best, e), best)
    return best
