"""Input-gradient and curvature regularizers; spec ``gradient-regularization.md``.

- ``grad-reg-fd``: Finlay & Oberman, squared dual-norm input-gradient penalty by a finite difference along the
  detached gradient direction (Eq. 8 with the Prop. 3.2 / Eq. 9 surrogate), no double backprop.
- ``grad-reg``: the exact penalty by double backprop (Ross & Doshi-Velez 2018; Finlay's "DBP" rows).
- ``cure``: curvature regularization (Moosavi-Dezfooli et al. 2019), ‖∇ℓ(x + hz) − ∇ℓ(x)‖ along the
  normalised gradient sign z, through both gradients.
- ``llr``: local linearity regularization (Qin et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.pgd import ascent_step, random_init
from advbench.core.passes import frozen
from advbench.defenses._hvp import (
    LossFn,
    add_param_grads,
    autocast_off,
    bdot,
    bnorm,
    ce_per_sample,
    fd_hvp,
    input_grad,
    module_mode,
    trainable,
    unit_direction,
)
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.errors import UserError
from advbench.threat import ThreatModel

# --------------------------------------------------------------------------------------------- grad-reg-fd


def resolve_penalty(penalty: str, norm: str) -> str:
    """``auto`` -> the dual norm of the threat: l2 for L2 attacks, l1 for Linf attacks."""
    if penalty != "auto":
        return penalty
    return "l1" if norm == "linf" else "l2"


def fd_direction(g: torch.Tensor, penalty: str) -> torch.Tensor:
    """Detached FD direction d (Finlay & Oberman Prop. 3.2): l2: g/‖g‖₂; l1: sign(g)/√N (so the FD term
    approximates ‖g‖₁²/N); linf (code only): a signed one-hot at argmax |g|. Zero gradients give d = 0."""
    g = g.detach()
    if penalty == "l2":
        return unit_direction(g)
    if penalty == "l1":
        return g.sign() / math.sqrt(g[0].numel())
    flat = g.flatten(1)
    idx = flat.abs().argmax(dim=1, keepdim=True)
    return torch.zeros_like(flat).scatter(1, idx, flat.gather(1, idx).sign()).view_as(g)


@dataclass
class GradRegFDOptions:
    """Finlay-Oberman FD gradient regularization (paper defaults; ``cfinlay/tulip`` values as options).

    lam: λ (paper 0.1 or 1). h: FD step (0.01; 0.1 for the "λ = 1, h = 0.1" row; Table 4 sweeps 1e-4..1).
    penalty: auto (dual of the threat: l2 for L2, l1 for Linf) | l2 | l1 | linf (code only).
    fd_order: forward (O1, paper and code default) | central (code's O2).
    half: λ/2·R as Eq. 8 and the code (true) or λ·R as Algorithm 1 prints (false).
    """

    lam: float = 0.1
    h: float = 0.01
    penalty: Literal["auto", "l2", "l1", "linf"] = "auto"
    fd_order: Literal["forward", "central"] = "forward"
    half: bool = True

    def validate(self) -> None:
        """h > 0 and lam >= 0."""
        if not self.h > 0:
            raise UserError(f"grad-reg-fd h must be > 0, got {self.h}")
        if self.lam < 0:
            raise UserError(f"grad-reg-fd lam must be >= 0, got {self.lam}")


@dataclass
class FDTerms:
    """Pieces of one grad-reg-fd step: clean per-sample CE and output, the (detached) input gradient and
    direction, the per-sample FD slopes (differentiable), and clean CE parameter gradients when fused."""

    loss: torch.Tensor
    output: torch.Tensor
    grad: torch.Tensor
    direction: torch.Tensor
    slope: torch.Tensor
    param_grads: list[torch.Tensor | None] | None


def fd_gradient_terms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, h: float, penalty: str,
                      fd_order: str = "forward", params: list[nn.Parameter] | None = None,
                      loss_fn: LossFn = ce_per_sample) -> FDTerms:
    """Per-sample FD slopes (ℓ(x + h d) − ℓ(x))/h (forward) or (ℓ(x + h d) − ℓ(x − h d))/(2h) (central), whose
    squares approximate ‖∇ₓℓ‖² in the penalty's norm (Eq. 9). d is a constant: no double backprop.
    ``params`` (central only): the clean CE parameter gradients are taken in the input-gradient backward."""
    if fd_order != "central" and params is not None:
        raise ValueError("the forward-order slope needs ℓ(x) in the graph; fused clean gradients are central-only")
    with autocast_off(x.device.type):
        # without fused clean gradients the clean graph is kept for the weight backward (forward: ℓ(x) is in
        # the slope)
        base = input_grad(model, x, y, loss_fn=loss_fn, params=params, retain_graph=params is None)
        d = fd_direction(base.grad, penalty)
        x = x.detach()
        if fd_order == "central":
            both = loss_fn(model(torch.cat([x + h * d, x - h * d])), torch.cat([y, y]))
            plus, minus = both.chunk(2)
            slope = (plus - minus) / (2 * h)
        else:
            slope = (loss_fn(model(x + h * d), y) - base.loss) / h
    return FDTerms(loss=base.loss, output=base.output, grad=base.grad.detach(), direction=d, slope=slope,
                   param_grads=base.param_grads)


@DEFENSES.register("grad-reg-fd", help="Finlay-Oberman: CE + (λ/2)·(FD slope along the gradient direction)², "
                   "no double backprop", aliases=("gradreg-fd",))
class GradRegFD(Defense):
    """CE(x) + (λ/2)·mean_i ((ℓ_i(x + h d_i) − ℓ_i(x))/h)² (Eq. 8 with the Eq. 9 surrogate)."""

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True


    Options = GradRegFDOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """forward: clean forward, input-gradient backward, FD forward, weight backward through both forwards
        (2, 3). central: the clean weight gradient comes with the input gradient (3, 3)."""
        return (3.0, 3.0) if self.options.fd_order == "central" else (2.0, 3.0)

    def penalty(self) -> str:
        """The resolved penalty norm."""
        return resolve_penalty(self.options.penalty, self.threat.norm)

    def describe(self) -> dict:
        """Options plus the resolved penalty norm."""
        return {**super().describe(), "resolved": {"penalty": self.penalty()}}

    def _reg(self, slope: torch.Tensor) -> torch.Tensor:
        o = self.options
        return o.lam * (0.5 if o.half else 1.0) * slope.pow(2).mean()

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean CE plus the FD penalty (the central order's clean forward is then backpropagated twice)."""
        o = self.options
        t = fd_gradient_terms(model, x, y, h=o.h, penalty=self.penalty(), fd_order=o.fd_order)
        ce = t.loss.mean()
        reg = self._reg(t.slope)
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()), "acc": accuracy(t.output.detach(), y)}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, float]:
        """forward order: one backward of CE + penalty; central: penalty backward plus the fused clean gradient."""
        o = self.options
        optimizer.zero_grad(set_to_none=True)
        if o.fd_order == "central":
            params = trainable(model)
            t = fd_gradient_terms(model, x, y, h=o.h, penalty=self.penalty(), fd_order="central", params=params)
            ce = t.loss.detach().mean()
            reg = self._reg(t.slope)
            ctx.backward(reg)
            add_param_grads(params, t.param_grads or [], ctx.grad_scale / x.shape[0])
        else:
            t = fd_gradient_terms(model, x, y, h=o.h, penalty=self.penalty(), fd_order="forward")
            ce = t.loss.mean()
            reg = self._reg(t.slope)
            ctx.backward(ce + reg)
        optimizer.step()
        return {"loss": float((ce + reg).detach()), "ce": float(ce.detach()), "reg": float(reg.detach()),
                "acc": accuracy(t.output.detach(), y)}


# --------------------------------------------------------------------------------------------- grad-reg


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
    sq = bnorm(g, 1.0 if norm == "l1" else 2.0).pow(2)
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


# --------------------------------------------------------------------------------------------- cure


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
    return lam * bnorm(diff, 2).pow(norm_power).mean(), z


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


# --------------------------------------------------------------------------------------------- llr


@dataclass
class LLROptions:
    """LLR options (Qin et al. 2019; not among the seed papers: defaults from the third-party reimplementation
    the spec names, verify before relying on them).

    lam: weight λ of γ(ε, x) (4). mu: weight μ of |δᵀ∇ℓ| (3). steps: inner PGD steps on γ (10).
    step_size: inner step (None: eps/4). init: δ⁰ = 0.001·N(0, I) (normal) or uniform in the ball.
    attack_bn_mode: BN mode of the inner search (eval).
    """

    lam: float = 4.0
    mu: float = 3.0
    steps: int = 10
    step_size: float | None = None
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
    lin = bdot(delta, g)
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
        alpha = o.step_size if o.step_size is not None else self.threat.default_step()
        with frozen(model, o.attack_bn_mode):
            delta = llr_inner_max(model, x, y, base.loss, base.grad, self.threat, steps=o.steps, step_size=alpha,
                                  init=o.init)
        gam, lin = local_linearity(model, x.detach(), y, delta, base.loss, base.grad)
        ce = base.loss.mean()
        reg = o.lam * gam.mean() + o.mu * lin.abs().mean()
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()), "gamma": float(gam.detach().mean()),
                          "acc": accuracy(base.output.detach(), y)}


__all__ = ["CURE", "LLR", "GradReg", "GradRegFD", "cure_regularizer", "fd_direction", "fd_gradient_terms",
           "grad_norm_penalty", "llr_inner_max", "local_linearity", "resolve_penalty"]
