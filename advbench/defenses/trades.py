"""TRADES (Zhang et al. 2019): clean cross-entropy plus β times the KL between clean and adversarial outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from advbench.core.passes import frozen
from advbench.defenses._common import (
    KLReduction,
    check_attack,
    check_positive,
    trades_kl_attack,
    trades_objective,
    unit_step,
)
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.threat import ThreatModel


@dataclass
class TRADESOptions:
    """TRADES options; defaults follow ``yaodongyu/TRADES`` (β 6, 10 KL-PGD steps, eval-mode BN while
    crafting, 0.001·N(0, I) start, batch-mean KL). The reference code uses step 0.007 at eps 0.031; the
    default here is eps/4 (2/255 at 8/255, as RAT and SAT use); L2 uses the code's 2·eps/steps."""

    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None
    init_std: float = 0.001
    init_clamp: bool = False  # reference: the Gaussian start is not clamped to [0, 1] before the first step
    attack_bn_mode: Literal["eval", "train"] = "eval"
    kl_reduction: KLReduction = "batchmean"  # "mean" (÷B·C) = ATES code's TRADES
    detach_target: bool = False  # reference: the clean KL target keeps its gradient
    reference_forwards: bool = False  # reference runs model(x) twice (CE, KL target): BN stats see x twice

    def validate(self) -> None:
        """β ≥ 0, steps ≥ 0, positive step size, init_std ≥ 0."""
        check_positive(self.beta, "trades beta", allow_zero=True)
        check_attack(self.steps, self.step_size, "trades")
        check_positive(self.init_std, "trades init_std", allow_zero=True)


def trades_craft(model: nn.Module, x: torch.Tensor, threat: ThreatModel, *, steps: int, step_size: float | None,
                 init_std: float, init_clamp: bool, bn_mode: str) -> torch.Tensor:
    """TRADES adversarial examples for ``model`` with weights frozen and BN in ``bn_mode`` (Eq. 5 inner max)."""
    alpha = unit_step(threat, steps, step_size, l2_rule="2eps/K")
    with frozen(model, bn_mode):
        return trades_kl_attack(model, x, threat, steps=steps, alpha=alpha, init_std=init_std, clamp_init=init_clamp)


@DEFENSES.register("trades", help="TRADES: CE(f(x)) + beta * KL(f(x) || f(x')), x' from KL-PGD (Zhang et al. 2019)")
class TRADES(Defense):
    """min_θ E[ CE(f(x), y) + β · max_{x′ ∈ B(x, ε)} KL(f(x) ‖ f(x′)) ]."""

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True


    Options = TRADESOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """Attack: one clean target forward + K forward/backward; training: clean and adversarial forward/backward."""
        k = self.options.steps
        extra = 1.0 if self.options.reference_forwards else 0.0
        return (k + 3.0 + extra, k + 2.0 + extra)

    def describe(self) -> dict[str, Any]:
        """Options plus the resolved step size."""
        o = self.options
        return {**super().describe(), "resolved": {"step_size": unit_step(self.threat, o.steps, o.step_size, "2eps/K")}}

    def craft(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The KL-PGD adversarial batch."""
        o = self.options
        return trades_craft(model, x, self.threat, steps=o.steps, step_size=o.step_size, init_std=o.init_std,
                            init_clamp=o.init_clamp, bn_mode=o.attack_bn_mode)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """CE_mean(f(x), y) + β·KL_batchmean(f(x) ‖ f(x′)) with x′ crafted against the current weights."""
        o = self.options
        x_adv = self.craft(model, x)
        logits = model(x)
        logits_adv = model(x_adv)
        target = model(x) if o.reference_forwards else None
        loss, ce, kl = trades_objective(logits, logits_adv, y, o.beta, o.kl_reduction, o.detach_target, target)
        return loss, {"acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y), "ce": float(ce.detach()),
                      "kl": float(kl.detach())}
