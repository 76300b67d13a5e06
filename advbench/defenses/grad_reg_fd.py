"""grad-reg-fd (Finlay & Oberman): the squared dual-norm input-gradient penalty by a finite difference along
the detached gradient direction (Eq. 8 with the Prop. 3.2 / Eq. 9 surrogate), no double backprop; spec
``gradient-regularization.md``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from advbench.core.tensors import unit_direction
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.input_gradients import (
    LossFn,
    add_param_grads,
    autocast_off,
    ce_per_sample,
    input_grad,
    resolve_penalty,
    trainable,
)
from advbench.errors import UserError


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
