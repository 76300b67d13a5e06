"""CAT (Cheng et al. 2020, ``cat20``), SAT's baseline: a per-sample radius ε_i grown by η on every visit the
sample survives, with ε-dependent label smoothing (sketch from a third-party reimplementation, see the spec).
The radii are kept by dataset index and saved with checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from advbench.attacks.training import TrainingAttackOptions, pgd_per_sample_eps
from advbench.core.passes import frozen
from advbench.defenses.base import DEFENSES, Defense, StepContext, check_positive
from advbench.defenses.per_sample_state import PerSampleStore, batch_indices


@dataclass
class CATRadius:
    """The radius and label-smoothing fields of CAT, listed before the training attack's options."""

    eta: float = 0.005
    smoothing: float = 10.0
    dirichlet: float = 1.0
    max_eps: float | None = None


@dataclass
class CATOptions(TrainingAttackOptions, CATRadius):
    """CAT20 options (third-party reimplementation defaults, see the spec): per-visit radius increment
    ``eta`` 0.005, label-smoothing factor ``smoothing`` c = 10 (mass c·ε_i on a Dirichlet(``dirichlet``)
    draw), radius cap ``max_eps`` (None = the threat's eps), PGD 10 × eps/4 on soft-label CE, eval-mode BN."""

    init: Literal["uniform", "zero"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Positive increment and Dirichlet concentration, non-negative smoothing."""
        check_positive(self.eta, "cat eta")
        check_positive(self.dirichlet, "cat dirichlet")
        check_positive(self.smoothing, "cat smoothing", allow_zero=True)
        if self.max_eps is not None:
            check_positive(self.max_eps, "cat max_eps")
        self.check_attack("cat")


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy to a soft label: −Σ_c t_c log softmax(z)_c."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


@DEFENSES.register("cat", help="CAT20: customized AT, per-sample eps grown while the sample survives, "
                               "eps-dependent label smoothing (Cheng et al. 2020)", aliases=("cat20",))
class CAT(Defense):
    """min_θ E soft-CE(f(x + δ_i), ỹ_i), ‖δ_i‖ ≤ ε_i, ỹ_i = (1 − cε_i)·onehot(y) + cε_i·Dir(1)."""

    Options = CATOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = PerSampleStore(0.0)

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """PGD-AT's: K attack forward/backward passes, one training forward/backward."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    @property
    def max_eps(self) -> float:
        """The radius cap (the threat's eps unless set)."""
        return self.options.max_eps if self.options.max_eps is not None else self.threat.eps

    def describe(self) -> dict[str, Any]:
        """Options plus the radius cap and step size."""
        resolved = {"max_eps": self.max_eps, "step_size": self.options.step(self.threat)}
        return {**super().describe(), "resolved": resolved}

    def smooth_labels(self, y: torch.Tensor, eps: torch.Tensor, num_classes: int) -> torch.Tensor:
        """ỹ = (1 − c·ε_i)·onehot(y) + c·ε_i·Dirichlet(α·1) (mixing weight clipped to [0, 1]); rows sum to 1."""
        o = self.options
        w = (o.smoothing * eps).clamp(0, 1).to(torch.float32)[:, None]
        conc = torch.full((num_classes,), float(o.dirichlet))
        noise = torch.distributions.Dirichlet(conc).sample((y.shape[0],)).to(y.device)
        onehot = F.one_hot(y, num_classes).float()
        return (1 - w.to(y.device)) * onehot + w.to(y.device) * noise

    def loss(self, model, x, y, ctx: StepContext):
        """Soft-label CE at the per-sample-radius PGD points; radii grow by η for samples that stay correct."""
        o = self.options
        idx = batch_indices(x, ctx.idx).detach().cpu()
        c = ctx.num_classes
        eps = (self.store.get(idx) + o.eta).clamp(max=self.max_eps).to(x.device, x.dtype)
        target = self.smooth_labels(y, eps, c).to(x.dtype)
        with frozen(model, o.attack_bn_mode):
            x_adv = pgd_per_sample_eps(model, x, eps, self.threat.norm, steps=o.steps,
                                       step=torch.full_like(eps, o.step(self.threat)),
                                       loss_fn=lambda z: soft_ce(z, target), init=o.init)
        logits = model(x_adv)
        wrong = (logits.detach().argmax(1) != y)
        new_eps = torch.where(wrong, eps - o.eta, eps).clamp(min=0.0, max=self.max_eps)
        self.store.set(idx, new_eps)
        loss = soft_ce(logits, self.smooth_labels(y, eps, c).to(x.dtype)).mean()
        return loss, {"adv_acc": 1.0 - float(wrong.float().mean()), "cat_avg_eps": float(new_eps.mean())}

    def state_dict(self) -> dict[str, Any]:
        """Per-sample radii by dataset index."""
        return {"eps": self.store.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the per-sample radii."""
        if "eps" in state:
            self.store.load_state_dict(state["eps"])
