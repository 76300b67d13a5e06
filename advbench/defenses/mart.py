"""MART (Wang et al. 2020): misclassification-aware boosted CE plus a confidence-weighted KL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from advbench.attacks.training import TrainingAttackOptions, pgd_examples
from advbench.defenses.base import DEFENSES, Defense, StepContext, check_positive, device_accuracy
from advbench.defenses.kl_divergence import per_sample_kl


@dataclass
class MARTWeight:
    """MART's KL weight β (6 for WRN-34-10), listed before the training attack's options."""

    beta: float = 6.0


@dataclass
class MARTOptions(TrainingAttackOptions, MARTWeight):
    """MART options; defaults follow ``YisenWang/MART`` (β 6 for WRN-34-10, 10 CE-PGD steps from
    x + 0.001·N(0, I), eval-mode BN while crafting). Step: eps/4 (the code's 0.007 at eps 0.031 is
    ``--set step_size=0.007``). ``detach_weight``/``detach_target`` are off in the code."""

    init: Literal["normal", "uniform", "zero"] = "normal"
    attack_bn_mode: Literal["eval", "train"] = "eval"
    detach_weight: bool = False
    detach_target: bool = False

    def validate(self) -> None:
        """β ≥ 0 and a sane attack."""
        check_positive(self.beta, "mart beta", allow_zero=True)
        self.check_attack("mart")


def mart_objective(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                   detach_weight: bool = False, detach_target: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MART loss (Wang et al. 2020, Eq. 11 as in the reference code); returns (loss, bce, weighted KL).

    BCE = CE(f(x′), y) − log(1.0001 − p′_{y′}) with y′ the most likely wrong class of f(x′); the KL term
    is (1/B) Σ_i KL(p_i ‖ p′_i)·(1.0000001 − p_i[y_i]) with p = softmax f(x) (p′ in the KL is offset by 1e-12).
    """
    p_adv = F.softmax(logits_adv, dim=1)
    p_nat = F.softmax(logits, dim=1)
    top2 = p_adv.topk(2, dim=1).indices
    new_y = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    bce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), new_y)
    log_p_nat = F.log_softmax(logits, dim=1)  # log-space target: finite gradients when softmax underflows
    kl = per_sample_kl(torch.log(p_adv + 1e-12), log_p_nat.detach() if detach_target else log_p_nat, log_target=True)
    w = 1.0000001 - p_nat.gather(1, y[:, None]).squeeze(1)
    if detach_weight:
        w = w.detach()
    robust = (kl * w).sum() / y.shape[0]
    return bce + beta * robust, bce, robust


@DEFENSES.register("mart", help="MART: boosted CE on adversarial examples + beta * (1 - p_y) weighted KL (Wang 2020)")
class MART(Defense):
    """min_θ E[ BCE(f(x′), y) + β · KL(f(x) ‖ f(x′)) · (1 − f_y(x)) ], x′ from CE-PGD."""

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True

    Options = MARTOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """K attack forward/backward passes, then clean and adversarial forward/backward."""
        k = self.options.steps
        return (k + 2.0, k + 2.0)

    def describe(self) -> dict[str, Any]:
        """Options plus the resolved step size."""
        return {**super().describe(), "resolved": {"step_size": self.options.step(self.threat)}}

    def loss(self, model, x, y, ctx: StepContext):
        """MART loss on CE-PGD examples crafted against the current weights."""
        o = self.options
        x_adv = pgd_examples(model, x, y, self.threat, steps=o.steps, alpha=o.step(self.threat), init=o.init,
                             restarts=1, bn_mode=o.attack_bn_mode)
        logits = model(x)
        logits_adv = model(x_adv)
        loss, bce, robust = mart_objective(logits, logits_adv, y, o.beta, o.detach_weight, o.detach_target)
        return loss, {"acc": device_accuracy(logits, y), "adv_acc": device_accuracy(logits_adv, y), "bce": bce.detach(),
                      "kl": robust.detach()}
