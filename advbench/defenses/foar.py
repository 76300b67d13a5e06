"""FOAR: SOAR's first-order analogue (SOAR Eq. 4), ℓ(x') + λ·ε_r‖∇ₓℓ(x')‖_q at the PGD1 point x' with q the
dual norm (1 for Linf, 2 for L2), differentiated by double backprop; spec ``soar-foar.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.core.tensors import per_sample_norm
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.expansion_point import SoarInit, expansion_point, pgd1_passes, resolve_reg_eps
from advbench.defenses.input_gradients import ce_per_sample, input_grad
from advbench.errors import UserError


@dataclass
class FOAROptions:
    """FOAR options (settings beyond the PGD1 init are not stated in the paper: SOAR's are used).

    init / reg_eps / input_grad_reduction / attack_bn_mode: as for SOAR. lam: weight of the penalty (1).
    """

    init: SoarInit = "pgd1-half"
    reg_eps: float | None = None
    lam: float = 1.0
    input_grad_reduction: Literal["sum", "mean"] = "sum"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """lam >= 0 and reg_eps >= 0."""
        if self.lam < 0:
            raise UserError(f"foar lam must be >= 0, got {self.lam}")
        if self.reg_eps is not None and self.reg_eps < 0:
            raise UserError(f"foar reg_eps must be >= 0, got {self.reg_eps}")


def foar_penalty(g: torch.Tensor, norm: str, reg_eps: float) -> torch.Tensor:
    """ε·‖∇ℓ‖_q per sample (Eq. 4): q = 1 for Linf (the maximum of the linearisation over the box), 2 for L2."""
    return reg_eps * per_sample_norm(g, 1.0 if norm == "linf" else 2.0)


@DEFENSES.register("foar", help="FOAR: CE + eps·||grad_x CE||_dual at a PGD1 point, by double backprop")
class FOAR(Defense):
    """ℓ(x') + λ·ε_r‖∇ₓℓ(x')‖_q (Eq. 4 at the PGD1 point), differentiated by double backprop."""

    double_backward = True

    Options = FOAROptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """PGD1 (1 + 1), the x' forward, ∇ℓ(x') with its graph, one double-backprop weight backward."""
        p = pgd1_passes(self.options.init, self.threat.eps)
        return (p + 1.0, p + 2.0)

    def reg_eps(self) -> float:
        """The resolved penalty radius."""
        return resolve_reg_eps(self.threat, self.options.init, self.options.reg_eps)

    def describe(self) -> dict:
        """Options plus the resolved penalty radius."""
        return {**super().describe(), "resolved": {"reg_eps": self.reg_eps()}}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean over the batch of ℓ(x') + λ·ε_r‖∇ₓℓ(x')‖_q."""
        o = self.options
        xp = expansion_point(model, x, y, self.threat, o.init, bn_mode=o.attack_bn_mode)
        base = input_grad(model, xp, y, loss_fn=ce_per_sample, create_graph=True)
        g = base.grad / xp.shape[0] if o.input_grad_reduction == "mean" else base.grad
        reg = o.lam * foar_penalty(g, self.threat.norm, self.reg_eps()).mean()
        ce = base.loss.mean()
        key = "acc" if o.init == "zero" else "adv_acc"
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()),
                          key: accuracy(base.output.detach(), y)}
