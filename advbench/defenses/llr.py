"""LLR: local linearity regularization (Qin et al. 2019); spec ``gradient-regularization.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from advbench.attacks.pgd import ascent_step, random_init
from advbench.attacks.training import TrainingAttackOptions
from advbench.core.passes import frozen
from advbench.core.tensors import per_sample_dot
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.input_gradients import LossFn, ce_per_sample, input_grad
from advbench.errors import UserError
from advbench.threat import ThreatModel


@dataclass
class LLRWeights:
    """The LLR penalty weights, listed before the training attack's options."""

    lam: float = 4.0
    mu: float = 3.0


@dataclass
class LLROptions(TrainingAttackOptions, LLRWeights):
    """LLR options (Qin et al. 2019; not among the seed papers: defaults from the third-party reimplementation
    the spec names, verify before relying on them).

    lam: weight λ of γ(ε, x) (4). mu: weight μ of |δᵀ∇ℓ| (3). steps: inner PGD steps on γ (10).
    step_size: inner step (None: eps/4). init: δ⁰ = 0.001·N(0, I) (normal) or uniform in the ball.
    attack_bn_mode: BN mode of the inner search (eval).
    """

    init: Literal["normal", "uniform"] = "normal"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """steps >= 1, weights >= 0, step_size > 0."""
        if self.steps < 1:
            raise UserError(f"llr steps must be >= 1, got {self.steps}")
        if self.lam < 0 or self.mu < 0:
            raise UserError("llr lam and mu must be >= 0")
        if self.step_size is not None and not self.step_size > 0:
            raise UserError("llr step_size must be > 0")


def local_linearity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, loss_x: torch.Tensor,
                    g: torch.Tensor, loss_fn: LossFn = ce_per_sample) -> tuple[torch.Tensor, torch.Tensor]:
    """g(δ; x) = |ℓ(x + δ) − ℓ(x) − δᵀ∇ℓ(x)| per sample (Qin et al. Eq. 5) and the inner product δᵀ∇ℓ(x)."""
    lin = per_sample_dot(delta, g)
    return (loss_fn(model(x + delta), y) - loss_x - lin).abs(), lin


def llr_inner_max(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_x: torch.Tensor, g: torch.Tensor,
                  threat: ThreatModel, *, steps: int, step_size: float, init: str = "normal",
                  loss_fn: LossFn = ce_per_sample, generator: torch.Generator | None = None) -> torch.Tensor:
    """δ_LLR ≈ argmax_{δ ∈ B(ε)} γ(δ; x) by projected steepest ascent (x + δ kept in [0, 1]); ``loss_x`` and
    ``g`` are constants. Call with the weights frozen. Returns δ detached."""
    x, loss_x, g = x.detach(), loss_x.detach(), g.detach()
    delta = random_init(x, threat, init, generator)
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        gam, _ = local_linearity(model, x, y, delta, loss_x, g, loss_fn)
        (grad,) = torch.autograd.grad(gam.sum(), delta)
        delta = ascent_step(delta.detach(), grad, threat, step_size)
        delta = (x + delta).clamp(0, 1) - x
    return delta.detach()


@DEFENSES.register("llr", help="LLR (Qin et al.): CE + λ·local-linearity error at its inner max + μ·|δᵀ∇ℓ|")
class LLR(Defense):
    """ℓ(x) + λ·γ(ε, x) + μ·|δ_LLRᵀ∇ℓ(x)| with δ_LLR from an inner PGD on γ (constant), ∇ℓ(x) kept in the graph."""

    double_backward = True

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True

    Options = LLROptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """Clean forward + input-gradient backward, K inner steps, the x + δ forward, and a weight backward
        through both forwards (the clean one doubly, for ∇ℓ(x) in the loss)."""
        k = float(self.options.steps)
        return (k + 2.0, k + 3.0)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean of ℓ(x) + λ·γ(δ_LLR; x) + μ·|δ_LLRᵀ∇ℓ(x)|."""
        o = self.options
        base = input_grad(model, x, y, create_graph=True)
        with frozen(model, o.attack_bn_mode):
            delta = llr_inner_max(model, x, y, base.loss, base.grad, self.threat, steps=o.steps,
                                  step_size=o.step(self.threat), init=o.init)
        gam, lin = local_linearity(model, x.detach(), y, delta, base.loss, base.grad)
        ce = base.loss.mean()
        reg = o.lam * gam.mean() + o.mu * lin.abs().mean()
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()), "gamma": float(gam.detach().mean()),
                          "acc": accuracy(base.output.detach(), y)}
