"""P-SAT (Sitawarin et al. 2021, SAT): a sample's PGD stops once its softmax probability gap
ψ_P = max_{j≠y} p_j − p_y exceeds λ (checked before each step, Alg. 1); λ = 1 is PGD-AT. Trains on plain
mean CE at those points (SAT Eq. 10, 12). The λ schedules (App. A) live in ``sat_curriculum.py``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.training import curriculum_pgd
from advbench.core.passes import frozen
from advbench.defenses.base import DEFENSES, StepContext, accuracy
from advbench.defenses.sat_curriculum import LambdaCurriculum, SATOptions


def prob_gap(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax probability gap ψ_P(x) = max_{j≠y} f(x)_j − f(x)_y ∈ [−1, 1] (SAT Eq. 12)."""
    p = F.softmax(logits, dim=1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    other = p.scatter(1, y[:, None], float("-inf"))
    return other.max(dim=1).values - p_y


@DEFENSES.register("p-sat", help="P-SAT: PGD stopped per sample once its probability gap exceeds lambda "
                                 "(Sitawarin et al. 2021)", aliases=("psat",))
class PSAT(LambdaCurriculum):
    """min_θ E CE(f(x + δ*), y), δ* = PGD on CE stopped once ψ_P(x + δ) > λ (SAT Eq. 10, 12, Alg. 1)."""

    epoch_options = ("schedule_scale",)

    Options = SATOptions
    linear_schedule = "linear-psat"

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """At most PGD-AT's: K attack forward/backward passes and one training forward/backward."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, Any]:
        """P-SAT's curriculum PGD at difficulty ``lam`` (returns x′ and per-sample steps taken)."""
        o = self.options
        with frozen(model, o.attack_bn_mode):
            return curriculum_pgd(model, x, y, self.threat, steps=o.steps, alpha=self.alpha, init=o.init,
                                  logit_mask=lambda z, t: prob_gap(z, t) <= lam,
                                  permanent=o.attack_bn_mode == "eval")

    def loss(self, model, x, y, ctx: StepContext):
        """Mean CE at the curriculum points."""
        lam = self.lam_at(ctx)
        x_adv, taken = self.perturb(model, x, y, lam)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {
            "adv_acc": accuracy(logits, y), "sat_lambda": lam,
            "sat_mean_steps": float(taken.float().mean()),
            "sat_frac_stopped": float((taken < self.options.steps).float().mean())}
