"""MMA training (Ding et al. 2020): maximise each correctly classified sample's input-space margin.

Per batch (reference ``BorealisAI/mma_training``): a train-mode clean forward; for correctly classified
samples an adaptive-norm PGD (ANPGD) on the soft logit margin starting from the radius the sample had on its
previous visit, then a bisection along the found direction for the smallest radius that flips the margin;
CE at those minimum-margin points (only where the radius is below the hinge ``margin``), CE on the
misclassified samples, mixed with the clean CE. Per-sample radii are kept by dataset index and saved with
checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.training import pgd_per_sample_eps
from advbench.core.passes import frozen
from advbench.core.tensors import per_sample
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy, check_positive
from advbench.defenses.per_sample_state import PerSampleStore, batch_indices
from advbench.errors import UserError


def soft_logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logsumexp_{j≠y} z_j − z_y per sample (< 0: confidently correct; MMA's ANPGD loss)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf"))
    return torch.logsumexp(other, dim=1) - true


def bisect_margin(forward: Any, x: torch.Tensor, y: torch.Tensor, unit: torch.Tensor, eps0: torch.Tensor,
                  max_eps: float, steps: int) -> torch.Tensor:
    """Smallest t with soft margin(x + t·unit) ≥ 0 along each direction ``unit`` (MMA bisection).

    Bracket [0, eps0] where x + eps0·unit already flips the margin, else [eps0, max_eps]; ``steps`` halvings;
    returns the upper end (a flipping radius, or max_eps if none flips). Points are clamped to [0, 1].
    """
    def flips(t: torch.Tensor) -> torch.Tensor:
        return soft_logit_margin(forward((x + per_sample(t, x) * unit).clamp(0, 1)), y) >= 0

    with torch.no_grad():
        adv = flips(eps0)
        lo = torch.where(adv, torch.zeros_like(eps0), eps0)
        hi = torch.where(adv, eps0, torch.full_like(eps0, max_eps))
        for _ in range(steps):
            mid = (lo + hi) / 2
            f = flips(mid)
            hi = torch.where(f, mid, hi)
            lo = torch.where(f, lo, mid)
    return hi


@dataclass
class MMAOptions:
    """MMA options (reference defaults): hinge ``margin`` (None: 32/255 for Linf, SOAR's selected MMA-32;
    2.0 for L2), ``min_eps`` (None: 0.005 Linf, 0.5 L2), max radius 1.05·margin, 10 PGD steps of
    2.5·ε_i/10 on the soft logit margin in eval mode, 10 bisection steps in train mode (the code's
    forwards outside the eval context update BN statistics), clean-loss weight 1/3."""

    margin: float | None = None
    min_eps: float | None = None
    max_eps_factor: float = 1.05
    steps: int = 10
    step_factor: float = 2.5
    bisection_steps: int = 10
    clean_loss_coeff: float = 1.0 / 3.0
    init: Literal["uniform", "zero"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"
    bisection_bn_mode: Literal["train", "eval"] = "train"

    def validate(self) -> None:
        """Positive radii and factors; coefficient in [0, 1]."""
        for key in ("margin", "min_eps"):
            value = getattr(self, key)
            if value is not None:
                check_positive(value, f"mma {key}")
        check_positive(self.max_eps_factor, "mma max_eps_factor")
        check_positive(self.step_factor, "mma step_factor")
        if self.steps < 0 or self.bisection_steps < 0:
            raise UserError("mma steps and bisection_steps must be >= 0")
        if not 0.0 <= self.clean_loss_coeff <= 1.0:
            raise UserError(f"mma clean_loss_coeff must be in [0, 1], got {self.clean_loss_coeff}")


@DEFENSES.register("mma", help="MMA: max-margin adversarial training with per-sample eps search (Ding et al. 2020)")
class MMA(Defense):
    """min_θ (1 − c)·[Σ_{correct, ε_i < margin} CE(f(x_i + δ_i*), y_i) + Σ_{wrong} CE(f(x_i), y_i)]/B
    + c·CE(f(x), y)."""

    Options = MMAOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = PerSampleStore(0.0)

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """Upper bound (every sample correct): clean, K attack, 1 + bisection forwards, MMA forward; 2 + K backward."""
        o = self.options
        return (o.steps + o.bisection_steps + 3.0, o.steps + 2.0)

    @property
    def margin(self) -> float:
        """The hinge radius (resolved default)."""
        if self.options.margin is not None:
            return float(self.options.margin)
        return 32 / 255 if self.threat.norm == "linf" else 2.0

    @property
    def min_eps(self) -> float:
        """The smallest starting radius (resolved default)."""
        if self.options.min_eps is not None:
            return float(self.options.min_eps)
        return 0.005 if self.threat.norm == "linf" else 0.5

    def describe(self) -> dict[str, Any]:
        """Options plus the norm-dependent hinge and smallest radius."""
        return {**super().describe(), "resolved": {"margin": self.margin, "min_eps": self.min_eps,
                                                   "max_eps": self.options.max_eps_factor * self.margin}}

    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               eps_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ANPGD + bisection for correctly classified samples: (minimum-margin points, their radii)."""
        o = self.options
        max_eps = o.max_eps_factor * self.margin
        eps0 = eps_prev.to(x.device, x.dtype).clamp(min=self.min_eps, max=max_eps)
        with frozen(model, o.attack_bn_mode):
            x_pgd = pgd_per_sample_eps(model, x, eps0, self.threat.norm, steps=o.steps,
                                       step=o.step_factor * eps0 / max(1, o.steps),
                                       loss_fn=lambda z: soft_logit_margin(z, y), init=o.init)
        unit = (x_pgd - x) / per_sample(eps0, x)
        with frozen(model, o.bisection_bn_mode):
            eps = bisect_margin(model, x, y, unit, eps0, max_eps, o.bisection_steps)
        return (x + per_sample(eps, x) * unit).clamp(0, 1).detach(), eps

    def loss(self, model, x, y, ctx: StepContext):
        """MMA loss (Ding et al. 2020, Eq. 7 with the reference code's clean-loss mixing)."""
        o = self.options
        idx = batch_indices(x, ctx.idx).detach().cpu()
        logits = model(x)
        clean = F.cross_entropy(logits, y)
        correct = soft_logit_margin(logits.detach(), y) < 0
        eps_all = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        x_mma = x
        if bool(correct.any()):
            ci = correct.nonzero().squeeze(1)
            x_found, eps = self.search(model, x[ci], y[ci], self.store.get(idx[ci.cpu()]))
            x_mma = x.clone()
            x_mma[ci] = x_found
            eps_all[ci] = eps
        self.store.set(idx, eps_all)
        ce = F.cross_entropy(model(x_mma), y, reduction="none")
        use = (correct & (eps_all < self.margin)) | ~correct
        mma_loss = (ce * use).sum() / x.shape[0]
        loss = (1 - o.clean_loss_coeff) * mma_loss + o.clean_loss_coeff * clean
        n_corr = max(1, int(correct.sum()))
        return loss, {"acc": accuracy(logits, y), "mma_loss": float(mma_loss.detach()),
                      "mma_avg_eps": float(eps_all[correct].sum()) / n_corr,
                      "mma_frac_in_hinge": float((correct & (eps_all < self.margin)).float().mean())}

    def state_dict(self) -> dict[str, Any]:
        """Per-sample radii by dataset index."""
        return {"eps": self.store.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the per-sample radii."""
        if "eps" in state:
            self.store.load_state_dict(state["eps"])
