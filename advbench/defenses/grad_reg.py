"""grad-reg: the exact input-gradient penalty by double backprop (Ross & Doshi-Velez 2018; Finlay & Oberman's
"DBP" rows); spec ``gradient-regularization.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from advbench.core.tensors import per_sample_norm
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.input_gradients import input_grad, resolve_penalty
from advbench.errors import UserError


@dataclass
class GradRegOptions:
    """Exact input-gradient penalty by double backprop.

    lam: λ (Finlay's DBP rows: 0.1 and 1; SCORPIO tuned it to AT's clean accuracy, value not given).
    norm: auto (dual of the threat: l2 for L2, l1 for Linf) | l2 | l1.
    scale: finlay = (λ/2)·mean_i ‖g_i‖² | ross = (λ/2)·(1/B²)·Σ_i ‖g_i‖² (Ross's code: l2_loss of the batch-mean
    gradient). l1_normalise_by_n: divide ‖g‖₁² by the input dimension N (what the FD sign direction matches).
    """

    lam: float = 0.1
    norm: Literal["auto", "l2", "l1"] = "auto"
    scale: Literal["finlay", "ross"] = "finlay"
    l1_normalise_by_n: bool = False

    def validate(self) -> None:
        """lam >= 0."""
        if self.lam < 0:
            raise UserError(f"grad-reg lam must be >= 0, got {self.lam}")


def grad_norm_penalty(g: torch.Tensor, norm: str, lam: float, scale: str = "finlay",
                      l1_normalise_by_n: bool = False) -> torch.Tensor:
    """(λ/2)·mean_i ‖g_i‖_q² (``finlay``, Finlay Eq. 8) or (λ/2)·Σ_i ‖g_i‖_q²/B² (``ross``); ‖·‖₁² optionally /N."""
    sq = per_sample_norm(g, 1.0 if norm == "l1" else 2.0).pow(2)
    if norm == "l1" and l1_normalise_by_n:
        sq = sq / g[0].numel()
    b = g.shape[0]
    return 0.5 * lam * (sq.mean() if scale == "finlay" else sq.sum() / b**2)


@DEFENSES.register("grad-reg", help="Gradient regularization (Ross & Doshi-Velez): CE + (λ/2)·||grad_x CE||² by "
                   "double backprop", aliases=("gradreg-dbp", "grad-reg-dbp"))
class GradReg(Defense):
    """CE(x) + (λ/2)·mean_i ‖∇ₓℓ_i(x)‖_q², the input gradient kept in the graph (double backprop)."""

    double_backward = True

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True

    Options = GradRegOptions
    inherent_passes = (1.0, 2.0)  # forward; input-gradient backward + the double-backprop weight backward

    def norm(self) -> str:
        """The resolved penalty norm."""
        return resolve_penalty(self.options.norm, self.threat.norm)

    def describe(self) -> dict:
        """Options plus the resolved penalty norm."""
        return {**super().describe(), "resolved": {"norm": self.norm()}}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean CE plus the exact squared dual-norm input-gradient penalty."""
        o = self.options
        base = input_grad(model, x, y, create_graph=True)
        ce = base.loss.mean()
        reg = grad_norm_penalty(base.grad, self.norm(), o.lam, o.scale, o.l1_normalise_by_n)
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()),
                          "acc": accuracy(base.output.detach(), y)}
