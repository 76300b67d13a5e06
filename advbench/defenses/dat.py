"""DAT (Wang et al. 2019, dynamic adversarial training), SAT's baseline: a sample's PGD stops once its
first-order stationarity condition (FOSC) drops to the threshold c_t, which decays linearly from 0.5 to 0.
Trains on plain mean CE at those points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.training import TrainingAttackOptions, curriculum_pgd
from advbench.core.passes import frozen
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy, check_positive


def fosc(delta: torch.Tensor, grad: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """First-order stationarity condition c = ε‖g‖_* − ⟨δ, g⟩ ≥ 0 per sample (DAT; SAT Table 4, negated).

    Linf sums ε|g_i| − δ_i g_i element by element, so c is exactly 0 at a vertex δ = ε·sign(g).
    """
    if norm == "linf":
        return (eps * grad.abs() - delta * grad).flatten(1).sum(dim=1)
    return eps * grad.flatten(1).norm(dim=1) - (delta * grad).flatten(1).sum(dim=1)


def fosc_active(delta: torch.Tensor, grad: torch.Tensor, eps: float, norm: str, c_t: float) -> torch.Tensor:
    """DAT's continue-mask: FOSC above ``c_t`` by more than 1e-5·ε‖g‖_* (at a vertex δ = x + ε·sign(g) − x
    carries rounding of x's magnitude, so an exact 0 is out of reach in floating point)."""
    dual = grad.flatten(1).abs().sum(dim=1) if norm == "linf" else grad.flatten(1).norm(dim=1)
    return fosc(delta, grad, eps, norm) > c_t + 1e-5 * eps * dual


@dataclass
class FOSCSchedule:
    """The FOSC threshold fields of DAT, listed before the training attack's options."""

    fosc_max: float = 0.5
    fosc_epochs: float = 80.0
    schedule_per_iteration: bool = False


@dataclass
class DATOptions(TrainingAttackOptions, FOSCSchedule):
    """DAT options: FOSC threshold c_t = ``fosc_max``·max(0, 1 − epoch/``fosc_epochs``) (0.5 over 80 epochs
    for CIFAR; SAT used 30 for MNIST, 50 for CIFAR-10 at 16/255 and 24/255, 40 for Imagenette), training
    PGD 10 × eps/4 from a uniform start with eval-mode BN."""

    init: Literal["uniform", "zero", "normal"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Non-negative threshold, positive decay period, sane attack."""
        check_positive(self.fosc_max, "dat fosc_max", allow_zero=True)
        check_positive(self.fosc_epochs, "dat fosc_epochs")
        self.check_attack("dat")


@DEFENSES.register("dat", help="DAT: dynamic AT, PGD stopped per sample once its FOSC falls to a decaying "
                               "threshold (Wang et al. 2019)")
class DAT(Defense):
    """min_θ E CE(f(x′), y), x′ = PGD stopped once c(x^k) = ε‖∇ℓ‖₁ − ⟨x^k − x⁰, ∇ℓ⟩ ≤ c_t (SAT Table 4)."""

    epoch_options = ("fosc_epochs",)

    Options = DATOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """At most PGD-AT's."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    def threshold(self, epoch: float) -> float:
        """c_t at ``epoch``: linear decay from fosc_max to 0 over fosc_epochs."""
        o = self.options
        return o.fosc_max * max(0.0, 1.0 - epoch / o.fosc_epochs)

    def describe(self) -> dict[str, Any]:
        """Options plus the step size."""
        return {**super().describe(), "resolved": {"step_size": self.options.step(self.threat)}}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Record the epoch's FOSC threshold."""
        return {"dat_fosc_threshold": self.threshold(float(epoch))}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, c_t: float) -> tuple[torch.Tensor, Any]:
        """FOSC-terminated PGD at threshold ``c_t``."""
        o = self.options
        eps, norm = self.threat.eps, self.threat.norm
        with frozen(model, o.attack_bn_mode):
            return curriculum_pgd(model, x, y, self.threat, steps=o.steps, alpha=o.step(self.threat), init=o.init,
                                  grad_mask=lambda d, g: fosc_active(d, g, eps, norm, c_t),
                                  permanent=o.attack_bn_mode == "eval")

    def loss(self, model, x, y, ctx: StepContext):
        """Mean CE at the FOSC-terminated PGD points."""
        o = self.options
        c_t = self.threshold(ctx.progress if o.schedule_per_iteration else float(ctx.epoch))
        x_adv, taken = self.perturb(model, x, y, c_t)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": accuracy(logits, y), "dat_fosc_threshold": c_t,
                                            "sat_mean_steps": float(taken.float().mean())}
