"""SimBA (Guo et al. 2019): a score-based black-box attack on the true-class probability.

Each iteration takes a new direction q from an orthonormal basis (pixels, or low-frequency-first 2-D
DCT basis images), tries x - step·q and, if that does not lower the true-class probability, x + step·q,
and keeps the candidate that lowers it. An iteration costs at most two queries; a sample stops once it
is misclassified or its budget is spent. Candidates are projected onto the threat's ball ∩ [0, 1]
(SOAR clips to B∞(x, 8/255)); SCORPIO's Fig. 4 uses 200 iterations of step 0.2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.base import ATTACKS, Attack, Perturbation, project
from advbench.errors import UserError
from advbench.threat import ThreatModel


def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix: row u is the u-th cosine basis vector of length n."""
    k = torch.arange(n, device=device, dtype=torch.float64)
    m = torch.cos(math.pi * (k[None, :] + 0.5) * k[:, None] / n) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(dtype)


def direction_order(shape: tuple[int, int, int], variant: str, batch: int, stride: int,
                    generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Per-sample order of basis indices (into C·H·W): random for ``pixel``; for ``dct`` random within
    frequency bands of width ``stride`` (band = max(u, v) // stride), low bands first."""
    c, h, w = shape
    d = c * h * w
    gdev = generator.device if generator is not None else device
    noise = torch.rand(batch, d, generator=generator, device=gdev).to(device)
    if variant == "dct":
        u = torch.arange(h, device=device).view(1, h, 1).expand(c, h, w)
        v = torch.arange(w, device=device).view(1, 1, w).expand(c, h, w)
        band = (torch.maximum(u, v) // max(1, stride)).reshape(-1).to(noise.dtype)
        noise = noise + band[None, :]
    return noise.argsort(dim=1)


def basis_images(idx: torch.Tensor, shape: tuple[int, int, int], variant: str, dct_h: torch.Tensor | None,
                 dct_w: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Unit-L2 basis images for flat indices ``idx`` [B]: one-hot pixels or 2-D DCT basis images."""
    c, h, w = shape
    b = idx.shape[0]
    if variant == "pixel":
        q = torch.zeros(b, c * h * w, device=idx.device, dtype=dtype)
        q.scatter_(1, idx[:, None], 1.0)
        return q.view(b, c, h, w)
    assert dct_h is not None and dct_w is not None
    ch, rest = idx // (h * w), idx % (h * w)
    u, v = rest // w, rest % w
    img = dct_h[u][:, :, None] * dct_w[v][:, None, :]  # [B, H, W]
    q = torch.zeros(b, c, h, w, device=idx.device, dtype=dtype)
    q[torch.arange(b, device=idx.device), ch] = img
    return q


@dataclass
class SimBAOutcome:
    """Result of :func:`simba`: images, queries and iterations per sample, true-class probability trace."""

    x_adv: torch.Tensor
    queries: torch.Tensor  # [B] int
    iterations: torch.Tensor  # [B] int
    prob: torch.Tensor  # [B] final true-class probability
    trace: list[torch.Tensor] | None  # per iteration: true-class probability [B] (when asked for)
    queries_per_iteration: list[torch.Tensor] | None


def _prob(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1), logits.argmax(1)


@torch.no_grad()
def simba(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, variant: str = "pixel",
          step: float, max_iters: int, max_queries: int | None = None, dct_stride: int = 4,
          generator: torch.Generator | None = None, record: bool = False) -> SimBAOutcome:
    """Run SimBA on a batch; every candidate is projected onto the threat's ball ∩ [0, 1].

    A sample is attacked while it is still classified as y, has iterations left and, with
    ``max_queries``, has at least two queries left; the clean query counts as one.
    """
    b = x.shape[0]
    shape = tuple(x.shape[1:])
    if len(shape) != 3:
        raise UserError("simba needs image batches [B, C, H, W]")
    c, h, w = shape  # type: ignore[misc]
    order = direction_order((c, h, w), variant, b, dct_stride, generator, x.device)
    n_dirs = order.shape[1]
    dct_h = dct_matrix(h, x.device, x.dtype) if variant == "dct" else None
    dct_w = dct_matrix(w, x.device, x.dtype) if variant == "dct" else None
    cur = x.clone()
    p, pred = _prob(model, cur, y)
    queries = torch.ones(b, dtype=torch.long, device=x.device)
    iterations = torch.zeros(b, dtype=torch.long, device=x.device)
    trace = [p.clone()] if record else None
    qpi: list[torch.Tensor] | None = [] if record else None
    rows = torch.arange(b, device=x.device)
    for t in range(min(max_iters, n_dirs)):
        active = pred == y
        if max_queries is not None:
            active &= queries + 2 <= max_queries
        if not bool(active.any()):
            break
        ia = rows[active]
        q = basis_images(order[ia, t], (c, h, w), variant, dct_h, dct_w, x.dtype)
        spent = torch.zeros(b, dtype=torch.long, device=x.device)
        minus = project(cur[ia] - step * q, x[ia], threat)
        p_minus, pred_minus = _prob(model, minus, y[ia])
        spent[ia] += 1
        take = p_minus < p[ia]
        new_x, new_p, new_pred = minus, p_minus, pred_minus
        retry = ~take
        if bool(retry.any()):
            ir = ia[retry]
            plus = project(cur[ir] + step * q[retry], x[ir], threat)
            p_plus, pred_plus = _prob(model, plus, y[ir])
            spent[ir] += 1
            better = p_plus < p[ir]
            new_x, new_p, new_pred = new_x.clone(), new_p.clone(), new_pred.clone()
            sel = retry.nonzero().squeeze(1)[better]
            new_x[sel], new_p[sel], new_pred[sel] = plus[better], p_plus[better], pred_plus[better]
            take = take.clone()
            take[sel] = True
        it = ia[take]
        cur[it], p[it], pred[it] = new_x[take], new_p[take], new_pred[take]
        queries += spent
        iterations[ia] += 1
        if record:
            assert trace is not None and qpi is not None
            trace.append(p.clone())
            qpi.append(spent)
    return SimBAOutcome(cur, queries, iterations, p, trace, qpi)


@dataclass
class SimBAOptions:
    """SimBA: ``variant`` pixel or dct, per-coordinate ``step`` (default: eps for Linf, min(0.2, eps) for L2),
    ``max_iters`` iterations per image (<= 2 queries each), optional ``max_queries`` cap, DCT band width."""

    variant: Literal["pixel", "dct"] = "pixel"
    step: float | None = None
    max_iters: int = 1000
    max_queries: int | None = None
    dct_stride: int = 4

    def validate(self) -> None:
        """Positive budgets and step."""
        if self.max_iters < 1:
            raise UserError("simba max_iters must be >= 1")
        if self.max_queries is not None and self.max_queries < 3:
            raise UserError("simba max_queries must be >= 3 (one clean query plus one iteration)")
        if self.step is not None and self.step <= 0:
            raise UserError("simba step must be > 0")


@ATTACKS.register("simba", help="SimBA score-based black-box attack (pixel or DCT basis), <= 2 queries per iteration")
class SimBA(Attack):
    """Simple black-box attack on the true-class probability (Guo et al. 2019)."""

    expensive = True

    kind = "black-box"
    Options = SimBAOptions

    def perturb_ex(self, model, x, y, generator=None):
        """SimBA on the batch; per-sample queries and iterations are recorded."""
        o = self.options
        step = o.step if o.step is not None else (self.threat.eps if self.threat.norm == "linf"
                                                  else min(0.2, self.threat.eps))
        out = simba(model, x, y, self.threat, variant=o.variant, step=step, max_iters=o.max_iters,
                    max_queries=o.max_queries, dct_stride=o.dct_stride, generator=generator)
        return Perturbation(out.x_adv, per_sample={"queries": out.queries.tolist(),
                                                   "iterations": out.iterations.tolist()},
                            info={"step": step})

    def perturb(self, model, x, y, generator=None):
        """Adversarial images (see :meth:`perturb_ex`)."""
        return self.perturb_ex(model, x, y, generator).x_adv

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean and median queries per image."""
        q = sorted(per_sample.get("queries", []))
        if not q:
            return {}
        return {"mean_queries": sum(q) / len(q), "median_queries": q[len(q) // 2], "max_queries_used": q[-1],
                "step": info[0].get("step") if info else None}
