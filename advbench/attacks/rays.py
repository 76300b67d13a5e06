"""RayS (Chen & Gu 2020): hard-label Linf ray search, and the average decision-boundary distance (ADBD).

RayS searches over sign directions d ∈ {-1, +1}^D. For a direction, the boundary radius
r(d) = min{r : f(clip(x + r·d)) != y} is found by bisection (hard labels only). Starting from one
direction, it flips the signs of blocks of coordinates, coarse to fine (1, 2, 4, ... blocks), and keeps
a flip when the flipped direction is already misclassified at the current best radius (one query:
its own radius is then no larger), then bisects to its new radius. The smallest radius found is the
sample's Linf distance to the decision boundary; robust at eps iff that distance exceeds eps.

Randomized-AT Table 7 reports RayS accuracy and ADBD; budget and rules are not stated there — the
defaults follow the RayS reference usage (10 000 queries) and are recorded with the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.attacks.base import ATTACKS, Attack, Perturbation
from advbench.errors import UserError


@dataclass
class RaySOutcome:
    """Per-sample boundary distance (0 if misclassified, inf if none found), best direction and queries."""

    distance: torch.Tensor  # [B] Linf radius along the best direction (upper end of the bisection)
    direction: torch.Tensor  # [B, D] signs
    queries: torch.Tensor  # [B]


class _RaySearch:
    """The state of one batch's ray search: best direction and radius per sample, queries spent."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, tol: float) -> None:
        self.model, self.y, self.tol, self.shape = model, y, tol, x.shape
        self.flat = x.flatten(1)
        b = x.shape[0]
        self.queries = torch.ones(b, dtype=torch.long, device=x.device)
        self.correct = model(x).argmax(1) == y
        self.r_best = torch.full((b,), float("inf"), device=x.device, dtype=x.dtype)
        self.r_best[~self.correct] = 0.0
        self.d_best = torch.ones_like(self.flat)

    def adversarial(self, rows: torch.Tensor, d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Whether x + r·d (clipped to [0, 1]) is misclassified, for the samples ``rows``."""
        xa = (self.flat[rows] + r[:, None] * d).clamp(0, 1).view(len(rows), *self.shape[1:])
        return self.model(xa).argmax(1) != self.y[rows]

    def search(self, rows: torch.Tensor, d: torch.Tensor) -> None:
        """Check d at the current best radius (1 where none yet); bisect where it is adversarial."""
        r_best = self.r_best
        hi = torch.where(torch.isinf(r_best[rows]), torch.ones_like(r_best[rows]), r_best[rows])
        adv = self.adversarial(rows, d, hi)
        self.queries[rows] += 1
        if not bool(adv.any()):
            return
        sel, dc, h = rows[adv], d[adv], hi[adv]
        lo = torch.zeros_like(h)
        while True:
            need = (h - lo) > self.tol
            if not bool(need.any()):
                break
            idx = need.nonzero().squeeze(1)
            mid = (lo[idx] + h[idx]) / 2
            a = self.adversarial(sel[idx], dc[idx], mid)
            self.queries[sel[idx]] += 1
            h[idx] = torch.where(a, mid, h[idx])
            lo[idx] = torch.where(a, lo[idx], mid)
        # adversarial at the best radius => its own radius is no larger: keep it (small gains add up)
        r_best[sel] = torch.minimum(h, r_best[sel])
        self.d_best[sel] = dc


@torch.no_grad()
def rays_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_queries: int, tol: float,
                stop_at: float | None = None, init: str = "random",
                generator: torch.Generator | None = None) -> RaySOutcome:
    """Hard-label ray search for the smallest Linf boundary distance of each sample (see module doc).

    ``stop_at``: stop a sample once its distance is <= this (enough for accuracy at eps, not for ADBD).
    """
    state = _RaySearch(model, x, y, tol)
    b, dim = state.flat.shape
    if init == "random":
        gdev = generator.device if generator is not None else x.device
        state.d_best = (torch.randint(0, 2, (b, dim), generator=generator, device=gdev).to(x.device, x.dtype) * 2 - 1)
    rows_all = torch.arange(b, device=x.device)
    first = state.correct.nonzero().squeeze(1)
    if len(first):
        state.search(first, state.d_best[first].clone())
    level, block = 0, 0
    while True:
        active = state.correct & (state.queries < max_queries)
        if stop_at is not None:
            active &= state.r_best > stop_at
        if not bool(active.any()):
            break
        n_blocks = min(2**level, dim)
        size = math.ceil(dim / n_blocks)
        start, end = block * size, min(dim, (block + 1) * size)
        rows = rows_all[active]
        d = state.d_best[rows].clone()
        d[:, start:end] *= -1  # flip one block of the sign vector (hierarchical search, coarse to fine)
        state.search(rows, d)
        block += 1
        if block >= n_blocks or end >= dim:
            block = 0
            level = level + 1 if n_blocks < dim else 0
    return RaySOutcome(state.r_best, state.d_best, state.queries)


@dataclass
class RaySOptions:
    """RayS: query budget per image (10 000), bisection tolerance on the Linf radius, initial direction
    (random signs or all +1) and ``early_stop`` (stop at distance <= eps: faster, but ADBD is then an upper
    bound and is not reported)."""

    max_queries: int = 10000
    tol: float = 1e-4
    init: Literal["random", "ones"] = "random"
    early_stop: bool = False

    def validate(self) -> None:
        """Positive budget and tolerance."""
        if self.max_queries < 2:
            raise UserError("rays max_queries must be >= 2")
        if self.tol <= 0:
            raise UserError("rays tol must be > 0")


@ATTACKS.register("rays", help="RayS hard-label Linf ray search; robust accuracy and average decision-boundary "
                  "distance (ADBD)")
class RayS(Attack):
    """Hard-label black-box attack; records each sample's Linf distance to the decision boundary."""

    expensive = True

    kind = "black-box"
    Options = RaySOptions

    def perturb_ex(self, model, x, y, generator=None):
        """Ray search; returns x + min(distance, eps)·d_best (adversarial iff distance <= eps)."""
        if self.threat.norm != "linf":
            raise UserError("rays is an Linf attack; use --norm linf")
        o = self.options
        out = rays_search(model, x, y, max_queries=o.max_queries, tol=o.tol, init=o.init, generator=generator,
                          stop_at=self.threat.eps if o.early_stop else None)
        r = torch.where(out.distance <= self.threat.eps, out.distance, torch.full_like(out.distance, self.threat.eps))
        x_adv = (x.flatten(1) + r[:, None] * out.direction).clamp(0, 1).view_as(x)
        dist = [None if math.isinf(v) else v for v in out.distance.tolist()]
        return Perturbation(x_adv, per_sample={"distance": dist, "queries": out.queries.tolist()},
                            info={"max_queries": o.max_queries, "tol": o.tol, "early_stop": o.early_stop})

    def perturb(self, model, x, y, generator=None):
        """Adversarial images (see :meth:`perturb_ex`)."""
        return self.perturb_ex(model, x, y, generator).x_adv

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """ADBD over clean-correct points (distance > 0); a point with no boundary found counts as 1.0."""
        dist = per_sample.get("distance", [])
        early = bool(info and info[0].get("early_stop"))
        attacked = [d for d in dist if d is None or d > 0]
        found = [d for d in attacked if d is not None]
        q = per_sample.get("queries", [])
        out = {"adbd_rule": "mean Linf boundary distance over correctly classified points; no boundary found "
                            "within the budget counts as 1.0 (the Linf diameter of [0,1]^d)",
               "n_attacked": len(attacked), "n_not_found": len(attacked) - len(found),
               "mean_queries": sum(q) / len(q) if q else None}
        if not early and attacked:
            out["adbd"] = sum(d if d is not None else 1.0 for d in attacked) / len(attacked)
            out["adbd_found_only"] = sum(found) / len(found) if found else None
        return out
