"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019): the smoothed classifier
g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), its Monte-Carlo PREDICT and CERTIFY with Clopper–Pearson bounds.

CERTIFY guesses the top class c_A from ``n0`` noisy samples, counts c_A in ``n`` fresh samples, takes the
one-sided (1 − α) Clopper–Pearson lower bound p̲_A of P(f(x + δ) = c_A) and certifies the ℓ2 radius
σ·Φ⁻¹(p̲_A) when p̲_A > ½; otherwise it abstains. PREDICT returns the top class of ``n`` samples when a two-sided
binomial test of its count against the runner-up's rejects p = ½ at level α, else abstains. Both bounds and
tests are scipy's (:func:`scipy.stats.binomtest`); Φ⁻¹ is :data:`scipy.stats.norm.ppf`.

The noise is not clipped to [0, 1] (as in Cohen et al.); the base classifier runs in eval mode.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from advbench.core.passes import frozen
from advbench.errors import UserError

#: the prediction of an abstention (never equal to a label)
ABSTAIN = -1


def _stats() -> ModuleType:
    """scipy.stats, imported on first use: at import it would cost every command about 0.6 s of start-up."""
    return importlib.import_module("scipy.stats")


@dataclass
class SmoothingOptions:
    """sigma: noise level σ (ℓ2, [0, 1] pixel units). n0: samples that pick the class. n: samples that bound its
    probability. alpha: failure probability α of each certificate. batch: noisy copies per forward pass.
    Cohen et al.'s defaults: n0 = 100, n = 100 000, α = 0.001; σ must be chosen (0.12, 0.25, 0.5, 1.0 in their
    paper; Finlay and Oberman do not state theirs)."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int = 1000

    def validate(self) -> None:
        """σ > 0, counts >= 1, 0 < α < 1."""
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise UserError(f"--sigma must be a finite number > 0, got {self.sigma}")
        for flag, value in (("--n0", self.n0), ("--n", self.n), ("--batch-size", self.batch)):
            if value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be in (0, 1), got {self.alpha}")


def sample_counts(model: nn.Module, x: torch.Tensor, num: int, sigma: float, batch: int, num_classes: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Counts [num_classes] (int64, on the CPU) of the base classifier's top class on ``num`` copies of the single
    image ``x`` [C, H, W] with Gaussian noise of std ``sigma`` added (``batch`` copies per forward)."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    left = num
    with frozen(model, "eval"), torch.no_grad():
        while left > 0:
            b = min(batch, left)
            xb = x.unsqueeze(0).expand(b, *x.shape)
            noise = torch.randn(xb.shape, generator=generator, device=x.device, dtype=x.dtype)
            top = model(xb + sigma * noise).argmax(dim=1)
            counts += torch.bincount(top.cpu(), minlength=num_classes)[:num_classes]
            left -= b
    return counts


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion with ``k`` successes in ``n`` trials
    (the lower end of the exact two-sided interval at level 1 − 2α)."""
    if k <= 0:
        return 0.0
    return float(_stats().binomtest(int(k), int(n)).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low)


def cohen_radius(p_a: float, sigma: float) -> float:
    """The certified ℓ2 radius σ·Φ⁻¹(p_A) of a smoothed classifier whose top class has probability p_A (> ½)."""
    return float(sigma * _stats().norm.ppf(p_a))


def predict(model: nn.Module, x: torch.Tensor, options: SmoothingOptions, num_classes: int,
            generator: torch.Generator | None = None) -> int:
    """Cohen et al.'s PREDICT: the smoothed classifier's class at ``x``, or :data:`ABSTAIN` when the top two counts
    of ``options.n`` samples do not differ significantly (two-sided binomial test at level α)."""
    counts = sample_counts(model, x, options.n, options.sigma, options.batch, num_classes, generator)
    top2 = torch.topk(counts, k=min(2, num_classes))
    n_a = int(top2.values[0])
    n_b = int(top2.values[1]) if num_classes > 1 else 0
    if _stats().binomtest(n_a, n_a + n_b, 0.5).pvalue > options.alpha:
        return ABSTAIN
    return int(top2.indices[0])


@dataclass
class Certificate:
    """CERTIFY's answer for one image: the class (or :data:`ABSTAIN`), the certified ℓ2 radius (0 when it
    abstains), the lower bound p̲_A and the count of the class among the ``n`` samples."""

    prediction: int
    radius: float
    p_lower: float
    count: int


def certify(model: nn.Module, x: torch.Tensor, options: SmoothingOptions, num_classes: int,
            generator: torch.Generator | None = None) -> Certificate:
    """Cohen et al.'s CERTIFY on one image ``x`` [C, H, W]: pick c_A from ``n0`` samples, bound its probability
    from ``n`` fresh samples, certify the radius σ·Φ⁻¹(p̲_A) if p̲_A > ½, else abstain."""
    guess = sample_counts(model, x, options.n0, options.sigma, options.batch, num_classes, generator)
    c_a = int(guess.argmax())
    counts = sample_counts(model, x, options.n, options.sigma, options.batch, num_classes, generator)
    n_a = int(counts[c_a])
    p_lower = lower_confidence_bound(n_a, options.n, options.alpha)
    if p_lower <= 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, n_a)
    return Certificate(c_a, cohen_radius(p_lower, options.sigma), p_lower, n_a)


def certified_accuracy(predictions: list[int], radii: list[float], labels: list[int],
                       at: list[float]) -> list[float]:
    """Certified accuracy at each radius in ``at``: the fraction of images whose certificate names the true label
    (an abstention never does) with a radius >= r."""
    n = max(1, len(labels))
    return [sum(1 for p, rad, y in zip(predictions, radii, labels, strict=True) if p == y and rad >= r) / n
            for r in at]
