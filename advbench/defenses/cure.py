"""CURE: curvature regularization (Moosavi-Dezfooli et al. 2019), ‖∇ℓ(x + hz) − ∇ℓ(x)‖ along the normalised
gradient sign z, differentiated through both gradients; spec ``gradient-regularization.md``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.passes import module_mode
from advbench.core.tensors import per_sample_norm, unit_direction
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.input_gradients import LossFn, autocast_off, ce_per_sample, fd_hvp, input_grad
from advbench.errors import UserError


@dataclass
class CUREOptions:
    """CURE options: defaults are the paper form; the ``F-Salehi/CURE_robustness`` code values are options.

    lam: γ (4; the code's class default is 4, its notebook 1). h: FD step (1.5).
    h_schedule: per-epoch h, last value repeated (code notebook: 0.1,0.4,0.8,1.8,3); empty = constant h.
    norm_power: 2 = ‖Δ∇ℓ‖² (paper) | 1 = ‖Δ∇ℓ‖ (code).
    reduction: mean = γ·mean_i (paper) | code = gradients of the batch-mean CE, γ·(1/B)Σ_i ‖Δ∇ℓ_i/B‖^power.
    bn_mode_reg: BN mode of the regularizer's forwards (train; the code uses eval, one extra forward).
    """

    lam: float = 4.0
    h: float = 1.5
    h_schedule: list[float] = field(default_factory=list)
    norm_power: int = 2
    reduction: Literal["mean", "code"] = "mean"
    bn_mode_reg: Literal["train", "eval"] = "train"

    def validate(self) -> None:
        """h > 0 (also in the schedule), lam >= 0, norm_power in {1, 2}."""
        if not self.h > 0 or any(not v > 0 for v in self.h_schedule):
            raise UserError("cure h (and every h_schedule value) must be > 0")
        if self.lam < 0:
            raise UserError(f"cure lam must be >= 0, got {self.lam}")
        if self.norm_power not in (1, 2):
            raise UserError(f"cure norm_power must be 1 or 2, got {self.norm_power}")


def cure_direction(g: torch.Tensor) -> torch.Tensor:
    """z = sign(∇ℓ)/‖sign(∇ℓ)‖₂ per sample (constant; 0 where the gradient is 0)."""
    return unit_direction(g.detach().sign())


def cure_regularizer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, *, h: float, lam: float,
                     norm_power: int = 2, reduction: str = "mean",
                     loss_fn: LossFn = ce_per_sample) -> tuple[torch.Tensor, torch.Tensor]:
    """γ·mean_i ‖∇ℓ_i(x + h z_i) − ∇ℓ_i(x)‖^power (``mean``) or γ·(1/B)Σ_i ‖(∇ℓ_i(x + h z_i) − ∇ℓ_i(x))/B‖^power
    (``code``), z = normalised gradient sign; ``g`` = ∇ℓ(x) with its graph. Returns (value, z)."""
    z = cure_direction(g)
    diff = h * fd_hvp(model, x, y, z, h, g0=g, loss_fn=loss_fn, create_graph=True)
    if reduction == "code":
        diff = diff / x.shape[0]
    return lam * per_sample_norm(diff, 2).pow(norm_power).mean(), z


@DEFENSES.register("cure", help="CURE: CE + γ·||grad(x + h·z) − grad(x)||², z = normalised gradient sign")
class CURE(Defense):
    """CE(x) + γ‖∇ℓ(x + hz) − ∇ℓ(x)‖₂² (paper form), differentiated through both gradients."""

    double_backward = True

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True

    Options = CUREOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """x (1 fwd + input-gradient bwd), x + hz (1 + 1), double backprop through both gradients (2); the
        eval-mode regularizer needs its own forward of x (3, 5)."""
        return (3.0, 5.0) if self.options.bn_mode_reg == "eval" else (2.0, 4.0)

    def current_h(self, epoch: int) -> float:
        """h for ``epoch`` (0-based): the schedule's entry (last one repeated) or the constant h."""
        s = self.options.h_schedule
        return s[min(epoch, len(s) - 1)] if s else self.options.h

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean CE plus the curvature penalty at the epoch's h."""
        with autocast_off(x.device.type):
            return self._loss(model, x, y, self.current_h(ctx.epoch))

    def _loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              h: float) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        if o.bn_mode_reg == "eval":
            out = model(x)
            ce = F.cross_entropy(out, y)
            with module_mode(model, "eval"):
                base = input_grad(model, x, y, create_graph=True)
                reg, _ = cure_regularizer(model, x, y, base.grad, h=h, lam=o.lam, norm_power=o.norm_power,
                                          reduction=o.reduction)
        else:
            base = input_grad(model, x, y, create_graph=True)
            out = base.output
            ce = base.loss.mean()
            reg, _ = cure_regularizer(model, x, y, base.grad, h=h, lam=o.lam, norm_power=o.norm_power,
                                      reduction=o.reduction)
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()), "h": h,
                          "acc": accuracy(out.detach(), y)}
