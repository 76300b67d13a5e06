"""SOAR (second-order adversarial regularizer) and FOAR (its first-order analogue).

SOAR, anonymous ICLR 2021 submission (Ma, Faghri, Papernot, Farahmand); spec ``soar-foar.md``.
Both regularize the loss at a one-step PGD point x' (Sec. 4.1), Eq. 13:

    ℓ_SOAR(x, y) = ℓ(x', y) + λ·R(x'; z, h),
    R = ((d·ε_r² + 1)/2) · ‖[ ‖z_d‖(∇ℓ(x'+h ẑ_d) − ∇ℓ(x'))/h + z_1 ∇ℓ(x') ;  ∇ℓ(x')ᵀz_d + z_1 ]‖₂   (Eq. 11)

with z ~ N(0, I_{d+1}), ẑ_d = z_d/‖z_d‖, the Hessian-vector product by forward differences (Eq. 10) and the
parameter gradient flowing through both input gradients (double backprop). For the L2 threat the factor
is (ε_r² + 1)/2. FOAR (Eq. 4): ℓ(x') + ε_r·‖∇ℓ(x')‖_q with q the dual norm (1 for Linf, 2 for L2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.attacks.pgd import ascent_step, random_init
from advbench.core.passes import frozen
from advbench.defenses._hvp import (
    add_param_grads,
    autocast_off,
    bdot,
    bnorm,
    bview,
    ce_per_sample,
    fd_hvp,
    input_grad,
    trainable,
)
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.errors import UserError
from advbench.threat import ThreatModel

SoarInit = Literal["pgd1-half", "pgd1-full", "pgd1-code", "rand", "zero"]

#: (uniform noise, sign-step size, projection ball) of the PGD1 expansion point, as fractions of eps
INIT_FRACTIONS: dict[str, tuple[float, float, float]] = {
    "pgd1-half": (0.5, 0.5, 0.5),  # Sec. 4.1 text: eps/2 for PGD1 and eps/2 in the regularizer (default)
    "pgd1-full": (1.0, 1.0, 1.0),  # Algorithm 1 as printed
    "pgd1-code": (1.0, 0.25, 1.0),  # averyma/test-bench data_init("pgd1"): U(±8/255), 2/255 step, 8/255 ball
    "rand": (1.0, 0.0, 1.0),  # noise only (Table 5/7 gradient-masking ablation)
    "zero": (0.0, 0.0, 0.0),  # x' = x (Table 5/7 ablation)
}


def resolve_reg_eps(threat: ThreatModel, init: str, reg_eps: float | None) -> float:
    """Radius used inside the regularizer: the explicit ``reg_eps``, else eps/2 with ``pgd1-half`` (so that
    PGD1 + regularizer cover the eps ball, Sec. 4.1) and eps for every other init."""
    if reg_eps is not None:
        return reg_eps
    return threat.eps / 2 if init == "pgd1-half" else threat.eps


def soar_factor(norm: str, reg_eps: float, d: int) -> float:
    """(d·ε² + 1)/2 for Linf (Prop. 1, Eq. 9: the Linf ball inside the L2 ball of radius √d·ε), (ε² + 1)/2 for L2."""
    return 0.5 * ((d if norm == "linf" else 1) * reg_eps**2 + 1.0)


def pgd1_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               init: str | tuple[float, float, float], *, bn_mode: str = "eval",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Expansion point x' (Algorithm 1 lines 1-2): uniform noise, one steepest-ascent step, projection onto
    the ball and [0, 1]; weights frozen. ``init`` names a row of :data:`INIT_FRACTIONS` or gives the
    (noise, step, ball) fractions of eps directly."""
    fractions = INIT_FRACTIONS[init] if isinstance(init, str) else init
    noise, step, ball = (f * threat.eps for f in fractions)
    x = x.detach()
    if noise > 0:
        delta = random_init(x, dataclasses.replace(threat, eps=noise), "uniform", generator)
    else:
        delta = torch.zeros_like(x)
    if step > 0:
        with frozen(model, bn_mode):
            g = input_grad(model, x + delta, y).grad
        delta = ascent_step(delta, g, dataclasses.replace(threat, eps=ball), step)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def soar_hz(model: nn.Module, xp: torch.Tensor, y: torch.Tensor, g: torch.Tensor, z_d: torch.Tensor,
            z_1: torch.Tensor, h: float, *, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two blocks of Hz for the augmented H of Eq. 6, HVP by finite differences (Eq. 10):
    top = ‖z_d‖·(∇ℓ(x'+hẑ_d) − ∇ℓ(x'))/h + z_1·∇ℓ(x'),  bot = ∇ℓ(x')ᵀz_d + z_1.

    ``g`` is the per-sample ∇ℓ(x') of the summed loss with its graph (create_graph=True); ``scale`` = 1/B
    reproduces gradients of a batch-mean loss (option ``input_grad_reduction=mean``).
    """
    nz = bnorm(z_d, 2)
    zh = z_d / bview(nz, z_d)
    hzd = bview(nz, z_d) * fd_hvp(model, xp, y, zh, h, g0=g, create_graph=True) * scale
    gs = g * scale
    top = hzd + bview(z_1, gs) * gs
    bot = bdot(gs, z_d) + z_1
    return top, bot


@dataclass
class SoarTerms:
    """Per-sample CE at x', its output, SOAR's R (mean over the z draws, factor included, λ excluded), the
    input gradient and, if requested, the CE parameter gradients of the summed loss."""

    loss: torch.Tensor
    output: torch.Tensor
    reg: torch.Tensor
    grad: torch.Tensor
    param_grads: list[torch.Tensor | None] | None


def soar_regularizer(model: nn.Module, xp: torch.Tensor, y: torch.Tensor, *, factor: float, h: float,
                     n_z: int = 1, reduction: str = "sum", params: list[nn.Parameter] | None = None,
                     z: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> SoarTerms:
    """R(x'; z, h) of Eq. 11 per sample, averaged over ``n_z`` draws of z ~ N(0, I_{d+1}) (App. E.4),
    differentiable in the weights through ∇ℓ(x') and ∇ℓ(x'+hẑ_d). ``z`` fixes the draws (tests)."""
    base = input_grad(model, xp, y, create_graph=True, params=params)
    scale = 1.0 / xp.shape[0] if reduction == "mean" else 1.0
    draws = z if z is not None else [
        (torch.randn_like(xp), torch.randn(xp.shape[0], device=xp.device, dtype=xp.dtype)) for _ in range(n_z)]
    reg = torch.zeros(xp.shape[0], device=xp.device, dtype=xp.dtype)
    for z_d, z_1 in draws:
        top, bot = soar_hz(model, xp, y, base.grad, z_d, z_1, h, scale=scale)
        reg = reg + factor * torch.linalg.vector_norm(torch.cat([top.flatten(1), bot[:, None]], dim=1), dim=1)
    return SoarTerms(loss=base.loss, output=base.output, reg=reg / len(draws), grad=base.grad,
                     param_grads=base.param_grads)


@dataclass
class SOAROptions:
    """SOAR options; defaults follow the paper (Sec. 4.1, App. E.2), the authors' code values are options.

    init: PGD1 expansion point (pgd1-half = eps/2 noise, step and ball | pgd1-full | pgd1-code | rand | zero).
    reg_eps: radius inside the regularizer (None: eps/2 with pgd1-half, else eps; code: 0.03).
    lam: weight of R (paper 1; code 0.5). h: FD step (0.01). n_z: z draws per sample (1; Table 8: 10, 100).
    reg_grad_clip: global-norm clip of the regularizer's parameter gradient only (paper 10, code 30; None: off).
    clip_mode: reg-grad-norm (clip the gradient) | reg-value (alternative reading: clamp λ·R per sample).
    input_grad_reduction: per-sample gradients of the summed loss (sum) or of the batch mean (mean).
    attack_bn_mode: BN mode of the PGD1 forward (code: eval).
    """

    init: SoarInit = "pgd1-half"
    reg_eps: float | None = None
    lam: float = 1.0
    h: float = 0.01
    n_z: int = 1
    reg_grad_clip: float | None = 10.0
    clip_mode: Literal["reg-grad-norm", "reg-value"] = "reg-grad-norm"
    input_grad_reduction: Literal["sum", "mean"] = "sum"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """h > 0, n_z >= 1, lam >= 0, a positive clip and reg_eps >= 0."""
        if not self.h > 0:
            raise UserError(f"soar h must be > 0, got {self.h}")
        if self.n_z < 1:
            raise UserError(f"soar n_z must be >= 1, got {self.n_z}")
        if self.lam < 0:
            raise UserError(f"soar lam must be >= 0, got {self.lam}")
        if self.reg_grad_clip is not None and not self.reg_grad_clip > 0:
            raise UserError("soar reg_grad_clip must be > 0 (or none to disable clipping)")
        if self.reg_eps is not None and self.reg_eps < 0:
            raise UserError(f"soar reg_eps must be >= 0, got {self.reg_eps}")


def _pgd1_passes(init: str, eps: float) -> float:
    """1 when the PGD1 point takes a gradient step, else 0."""
    return 1.0 if INIT_FRACTIONS[init][1] * eps > 0 else 0.0


@DEFENSES.register("soar", help="SOAR: CE + FD Hessian-vector-product regularizer at a PGD1 point (Linf/L2)")
class SOAR(Defense):
    """ℓ(x') + λ·R(x'; z, h) (Eq. 13), the regularizer's gradient clipped on its own before the CE gradient
    is added (the paper's "clipping of 10 on the regularizer")."""

    double_backward = True

    Options = SOAROptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """PGD1 (1 fwd + 1 bwd), x' (1 fwd; its backward gives ∇ℓ(x') and the CE weight gradient), n_z FD
        points (1 fwd + 1 bwd each), and the double backprop through the 1 + n_z input-gradient graphs."""
        p, n = _pgd1_passes(self.options.init, self.threat.eps), self.options.n_z
        return (p + 1 + n, p + 1 + n + (1 + n))

    def reg_eps(self) -> float:
        """The resolved regularizer radius."""
        return resolve_reg_eps(self.threat, self.options.init, self.options.reg_eps)

    def describe(self) -> dict:
        """Options plus the resolved regularizer radius."""
        return {**super().describe(), "resolved": {"reg_eps": self.reg_eps()}}

    def _terms(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               params: list[nn.Parameter] | None) -> tuple[SoarTerms, torch.Tensor]:
        o = self.options
        xp = pgd1_point(model, x, y, self.threat, o.init, bn_mode=o.attack_bn_mode)
        factor = soar_factor(self.threat.norm, self.reg_eps(), x[0].numel())
        with autocast_off(x.device.type):
            terms = soar_regularizer(model, xp, y, factor=factor, h=o.h, n_z=o.n_z,
                                     reduction=o.input_grad_reduction, params=params)
        reg_vec = o.lam * terms.reg
        if o.clip_mode == "reg-value" and o.reg_grad_clip is not None:
            reg_vec = reg_vec.clamp(max=o.reg_grad_clip)
        return terms, reg_vec.mean()

    def _logs(self, terms: SoarTerms, y: torch.Tensor, reg: torch.Tensor) -> dict[str, float]:
        key = "acc" if self.options.init == "zero" else "adv_acc"
        return {"ce": float(terms.loss.detach().mean()), "reg": float(reg.detach()),
                key: accuracy(terms.output.detach(), y)}

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """ℓ(x') + λ·R(x') without the gradient clip (the clip lives in :meth:`train_step`)."""
        terms, reg = self._terms(model, x, y, None)
        return terms.loss.mean() + reg, self._logs(terms, y, reg)

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, float]:
        """Regularizer backward, clip its parameter gradient to ``reg_grad_clip``, add the (unclipped) CE
        gradient, step. The CE weight gradient is taken in the backward that computes ∇ℓ(x'), so the split
        needs no second backward through the x' forward."""
        o = self.options
        clip = o.clip_mode == "reg-grad-norm" and o.reg_grad_clip is not None
        params = trainable(model)
        terms, reg = self._terms(model, x, y, params if clip else None)
        ce = terms.loss.mean()
        optimizer.zero_grad(set_to_none=True)
        logs = self._logs(terms, y, reg)
        if clip:
            ctx.backward(reg)
            ctx.finalize_grads()  # the clip acts on the regularizer gradient of the whole (global) batch
            norm = torch.nn.utils.clip_grad_norm_(params, o.reg_grad_clip)
            ce_grads, scale = list(terms.param_grads or []), 1.0 / x.shape[0]
            if ctx.distributed:  # the CE gradient is added after the averaging: average it on its own
                averaged = iter(ctx.average([g * scale for g in ce_grads if g is not None]))
                ce_grads, scale = [next(averaged) if g is not None else None for g in ce_grads], 1.0
            add_param_grads(params, ce_grads, scale)
            logs["reg_grad_norm"] = float(norm)
        else:
            ctx.backward(ce + reg)
        optimizer.step()
        return {"loss": float((ce + reg).detach()), **logs}


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
    return reg_eps * bnorm(g, 1.0 if norm == "linf" else 2.0)


@DEFENSES.register("foar", help="FOAR: CE + eps·||grad_x CE||_dual at a PGD1 point, by double backprop")
class FOAR(Defense):
    """ℓ(x') + λ·ε_r‖∇ₓℓ(x')‖_q (Eq. 4 at the PGD1 point), differentiated by double backprop."""

    double_backward = True

    Options = FOAROptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """PGD1 (1 + 1), the x' forward, ∇ℓ(x') with its graph, one double-backprop weight backward."""
        p = _pgd1_passes(self.options.init, self.threat.eps)
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
        xp = pgd1_point(model, x, y, self.threat, o.init, bn_mode=o.attack_bn_mode)
        base = input_grad(model, xp, y, loss_fn=ce_per_sample, create_graph=True)
        g = base.grad / xp.shape[0] if o.input_grad_reduction == "mean" else base.grad
        reg = o.lam * foar_penalty(g, self.threat.norm, self.reg_eps()).mean()
        ce = base.loss.mean()
        key = "acc" if o.init == "zero" else "adv_acc"
        return ce + reg, {"ce": float(ce.detach()), "reg": float(reg.detach()),
                          key: accuracy(base.output.detach(), y)}


__all__ = ["FOAR", "INIT_FRACTIONS", "SOAR", "foar_penalty", "pgd1_point", "soar_factor", "soar_hz",
           "soar_regularizer"]
