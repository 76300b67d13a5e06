"""TRADES (Zhang et al. 2019): clean cross-entropy plus β times the KL between clean and adversarial outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.training import TrainingAttackOptions, trades_examples
from advbench.defenses.base import DEFENSES, Defense, StepContext, check_positive, device_accuracy
from advbench.defenses.kl_divergence import KLReduction, kl_to_log_target


def trades_objective(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                     reduction: KLReduction = "batchmean", detach_target: bool = False,
                     logits_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRADES outer objective (Zhang et al. 2019, Eq. 5): CE(f(x), y) + β·KL(f(x) ‖ f(x′)).

    Returns (loss, ce, kl). The KL target softmax(f(x)) keeps its gradient unless ``detach_target``
    (the reference code does not detach it); ``logits_target`` replaces the logits of the target
    branch (the reference code runs model(x) a second time for it).
    """
    ce = F.cross_entropy(logits_nat, y)
    tgt = logits_nat if logits_target is None else logits_target
    log_p_nat = F.log_softmax(tgt.detach() if detach_target else tgt, dim=1)
    kl = kl_to_log_target(F.log_softmax(logits_adv, dim=1), log_p_nat, reduction)
    return ce + beta * kl, ce, kl


@dataclass
class TRADESWeight:
    """TRADES's KL weight β (6), listed before the training attack's options."""

    beta: float = 6.0


@dataclass
class TRADESOptions(TrainingAttackOptions, TRADESWeight):
    """TRADES options; defaults follow ``yaodongyu/TRADES`` (β 6, 10 KL-PGD steps, eval-mode BN while
    crafting, 0.001·N(0, I) start, batch-mean KL). The reference code uses step 0.007 at eps 0.031; the
    default here is eps/4 (2/255 at 8/255, as RAT and SAT use); L2 uses the code's 2·eps/steps."""

    init_std: float = 0.001
    init_clamp: bool = False  # reference: the Gaussian start is not clamped to [0, 1] before the first step
    attack_bn_mode: Literal["eval", "train"] = "eval"
    kl_reduction: KLReduction = "batchmean"  # "mean" (÷B·C) = ATES code's TRADES
    detach_target: bool = False  # reference: the clean KL target keeps its gradient
    reference_forwards: bool = False  # reference runs model(x) twice (CE, KL target): BN stats see x twice

    def validate(self) -> None:
        """β ≥ 0, steps ≥ 0, positive step size, init_std ≥ 0."""
        check_positive(self.beta, "trades beta", allow_zero=True)
        self.check_attack("trades")
        check_positive(self.init_std, "trades init_std", allow_zero=True)


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
        return {**super().describe(), "resolved": {"step_size": self.options.step(self.threat, "2eps/K")}}

    def craft(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The KL-PGD adversarial batch (step 2·eps/steps for L2 unless set, as the TRADES code)."""
        o = self.options
        return trades_examples(model, x, self.threat, steps=o.steps, alpha=o.step(self.threat, "2eps/K"),
                               init_std=o.init_std, init_clamp=o.init_clamp, bn_mode=o.attack_bn_mode)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """CE_mean(f(x), y) + β·KL_batchmean(f(x) ‖ f(x′)) with x′ crafted against the current weights."""
        o = self.options
        x_adv = self.craft(model, x)
        logits = model(x)
        logits_adv = model(x_adv)
        target = model(x) if o.reference_forwards else None
        loss, ce, kl = trades_objective(logits, logits_adv, y, o.beta, o.kl_reduction, o.detach_target, target)
        return loss, {"acc": device_accuracy(logits, y), "adv_acc": device_accuracy(logits_adv, y), "ce": ce.detach(),
                      "kl": kl.detach()}
