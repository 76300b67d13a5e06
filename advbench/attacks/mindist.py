"""Minimum-distance evaluation (Finlay & Oberman): per-sample smallest L2 / Linf adversarial perturbation.

PGD is made a minimum-distance attack by bisection over eps, per sample: PGD at eps_max first (a sample
not fooled there gets no distance: "not found"), then ``bisection`` halvings of [lo, hi], moving hi to
the size of the adversarial perturbation found whenever PGD succeeds. The distance of a sample is the
norm of the smallest adversarial perturbation found (0 if the clean image is misclassified). From the
distances come the paper's metrics: empirical % error at eps = 100·mean(d <= eps), mean distance, and
accuracy-vs-eps curves. Correctness at the evaluation's eps is d > eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.attacks.base import ATTACKS
from advbench.attacks.distances import (
    DistanceAttack,
    DistanceOptions,
    default_eps_max,
    perturbation_norm,
    pgd_per_sample_eps,
)
from advbench.errors import UserError


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def min_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *, eps_max: float, bisection: int,
                 steps: int, step_ratio: float, init: str, generator: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample minimum distance by bisection-PGD; returns (distance [B] with inf = not found, x_best)."""
    with torch.no_grad():
        wrong0 = model(x).argmax(1) != y
    dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
    dist[wrong0] = 0.0
    x_best = x.clone()
    todo = ~wrong0
    lo = torch.zeros_like(dist)
    hi = torch.full_like(dist, eps_max)
    for it in range(bisection + 1):
        rows = todo.nonzero().squeeze(1)
        if len(rows) == 0:
            break
        eps = hi[rows] if it == 0 else (lo[rows] + hi[rows]) / 2
        adv, fooled = pgd_per_sample_eps(model, x[rows], y[rows], norm, eps, steps=steps, step_ratio=step_ratio,
                                         init=init, generator=generator)
        size = perturbation_norm(adv - x[rows], norm)
        ok = rows[fooled]
        closer = size[fooled] < dist[ok]
        dist[ok[closer]] = size[fooled][closer]
        x_best[ok[closer]] = adv[fooled][closer]
        if it == 0:
            todo[rows[~fooled]] = False  # not fooled at eps_max: no distance found
            hi[ok] = torch.minimum(hi[ok], size[fooled])
        else:
            hi[ok] = torch.minimum(eps[fooled], size[fooled])
            lo[rows[~fooled]] = eps[~fooled]
    return dist, x_best


@dataclass
class MinDistOptions(DistanceOptions):
    """Bisection-PGD minimum distance: ``eps_max`` (default: 0.5 Linf, 10 L2), ``bisection`` halvings (12),
    PGD ``steps`` (20) with step = ``step_ratio``·eps, start, and the curve's number of eps points."""

    eps_max: float | None = None  # upper end of the bisection (default 0.5 Linf, 10 L2)
    bisection: int = 12  # halvings of [lo, hi]
    steps: int = 20  # PGD steps per bisection point
    step_ratio: float = 0.25  # PGD step = step_ratio * eps
    init: Literal["zero", "uniform"] = "zero"  # PGD start
    refine: int = 0  # bisection steps along the segment from the image to the adversarial point found

    def validate(self) -> None:
        """Positive budgets."""
        super().validate()
        if self.bisection < 0 or self.steps < 1:
            raise UserError("min-dist needs bisection >= 0, steps >= 1, curve_points >= 2")
        if self.eps_max is not None and self.eps_max <= 0:
            raise UserError("min-dist eps_max must be > 0")
        if self.step_ratio <= 0:
            raise UserError("min-dist step_ratio must be > 0")


@ATTACKS.register("min-dist", help="Minimum-distance evaluation: per-sample smallest L2/Linf perturbation by "
                  "bisection-PGD over eps, accuracy-vs-eps curve", aliases=("mindist",))
class MinDist(DistanceAttack):
    """Per-sample minimum adversarial distance in the threat's norm; correct at eps iff distance > eps."""

    Options = MinDistOptions

    def search(self, model, x, y, generator=None):
        """Bisection over eps with PGD: the closest adversarial image found (the clean image where none)."""
        o = self.options
        eps_max = o.eps_max if o.eps_max is not None else default_eps_max(self.threat.norm)
        _dist, x_best = min_distance(model, x, y, self.threat.norm, eps_max=eps_max, bisection=o.bisection,
                                     steps=o.steps, step_ratio=o.step_ratio, init=o.init, generator=generator)
        return x_best, {"eps_max": eps_max}
