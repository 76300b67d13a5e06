"""SOAR: the second-order adversarial regularizer, anonymous ICLR 2021 submission (Ma, Faghri, Papernot,
Farahmand); spec ``soar-foar.md``. It regularizes the loss at a one-step PGD point x' (Sec. 4.1), Eq. 13:

    ℓ_SOAR(x, y) = ℓ(x', y) + λ·R(x'; z, h),
    R = ((d·ε_r² + 1)/2) · ‖[ ‖z_d‖(∇ℓ(x'+h ẑ_d) − ∇ℓ(x'))/h + z_1 ∇ℓ(x') ;  ∇ℓ(x')ᵀz_d + z_1 ]‖₂   (Eq. 11)

with z ~ N(0, I_{d+1}), ẑ_d = z_d/‖z_d‖, the Hessian-vector product by forward differences (Eq. 10) and the
parameter gradient flowing through both input gradients (double backprop). For the L2 threat the factor
is (ε_r² + 1)/2. Its first-order analogue FOAR is ``foar.py``; the expansion point is ``expansion_point.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.core.tensors import per_sample, per_sample_dot, per_sample_norm
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.expansion_point import SoarInit, expansion_point, pgd1_passes, resolve_reg_eps
from advbench.defenses.input_gradients import add_param_grads, autocast_off, fd_hvp, input_grad, trainable
from advbench.errors import UserError


def soar_factor(norm: str, reg_eps: float, d: int) -> float:
    """(d·ε² + 1)/2 for Linf (Prop. 1, Eq. 9: the Linf ball inside the L2 ball of radius √d·ε), (ε² + 1)/2 for L2."""
    return 0.5 * ((d if norm == "linf" else 1) * reg_eps**2 + 1.0)


def soar_hz(model: nn.Module, xp: torch.Tensor, y: torch.Tensor, g: torch.Tensor, z_d: torch.Tensor,
            z_1: torch.Tensor, h: float, *, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two blocks of Hz for the augmented H of Eq. 6, HVP by finite differences (Eq. 10):
    top = ‖z_d‖·(∇ℓ(x'+hẑ_d) − ∇ℓ(x'))/h + z_1·∇ℓ(x'),  bot = ∇ℓ(x')ᵀz_d + z_1.

    ``g`` is the per-sample ∇ℓ(x') of the summed loss with its graph (create_graph=True); ``scale`` = 1/B
    reproduces gradients of a batch-mean loss (option ``input_grad_reduction=mean``).
    """
    nz = per_sample_norm(z_d, 2)
    zh = z_d / per_sample(nz, z_d)
    hzd = per_sample(nz, z_d) * fd_hvp(model, xp, y, zh, h, g0=g, create_graph=True) * scale
    gs = g * scale
    top = hzd + per_sample(z_1, gs) * gs
    bot = per_sample_dot(gs, z_d) + z_1
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
        p, n = pgd1_passes(self.options.init, self.threat.eps), self.options.n_z
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
        xp = expansion_point(model, x, y, self.threat, o.init, bn_mode=o.attack_bn_mode)
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
