"""Input gradients and finite-difference Hessian-vector products, shared by the input-gradient and curvature
regularizers (grad-reg, grad-reg-fd, CURE, LLR, SOAR, FOAR, SCORPIO).

Per-sample input gradients (of the *summed* loss, so each sample gets its own gradient), finite-difference
Hessian-vector products used by SOAR (Eq. 10), SCORPIO (Eqs. 10-11) and CURE, the penalty norm of an
input-gradient penalty, and the bookkeeping of parameter gradients a defense adds to ``.grad`` itself.
A helper module: it registers no defense.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: per-sample loss of (model output, labels) -> [B]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ℓ_i = CE(f(x_i), y_i)."""
    return F.cross_entropy(logits, y, reduction="none")


def resolve_penalty(penalty: str, norm: str) -> str:
    """Norm of an input-gradient penalty: ``auto`` -> the dual norm of the threat (l2 for L2 attacks, l1 for
    Linf attacks); any other value is kept."""
    if penalty != "auto":
        return penalty
    return "l1" if norm == "linf" else "l2"


@dataclass
class InputGrad:
    """Result of :func:`input_grad`: per-sample losses, model output, ∇_x of the summed loss, and the
    parameter gradients of the summed loss when they were requested in the same backward pass."""

    loss: torch.Tensor
    output: torch.Tensor
    grad: torch.Tensor
    param_grads: list[torch.Tensor | None] | None = None


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn = ce_per_sample,
               create_graph: bool = False, retain_graph: bool | None = None,
               params: Sequence[torch.Tensor] | None = None) -> InputGrad:
    """One forward and one backward: ℓ_i(x) and ∇_x Σ_i ℓ_i (= per-sample input gradients).

    ``x`` is treated as a constant (detached). ``create_graph`` keeps the gradient differentiable in the
    parameters (double backprop). ``params``: also return ∇_θ Σ_i ℓ_i from the *same* backward pass
    (detached), so a defense that needs both never pays a second backward through this forward.
    """
    xr = x.detach().requires_grad_(True)
    out = model(xr)
    loss = loss_fn(out, y)
    inputs = [xr, *(params or [])]
    grads = torch.autograd.grad(loss.sum(), inputs, create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=bool(params))
    g = grads[0]
    if g is None:  # the output does not depend on x (degenerate model)
        g = torch.zeros_like(xr)
    pgrads = [None if t is None else t.detach() for t in grads[1:]] if params else None
    return InputGrad(loss=loss, output=out, grad=g, param_grads=pgrads)


def fd_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, h: float, *,
           scheme: Literal["forward", "central"] = "forward", g0: torch.Tensor | None = None,
           loss_fn: LossFn = ce_per_sample, create_graph: bool = False) -> torch.Tensor:
    """Finite-difference Hessian-vector product ∇²_x ℓ_i(x) v_i per sample.

    forward (SOAR Eq. 10, SCORPIO Eq. 10): (∇ℓ(x + h v) − ∇ℓ(x)) / h, with ∇ℓ(x) = ``g0`` when given
    (recycled, so only one extra forward/backward); central (SCORPIO Eq. 11):
    (∇ℓ(x + h v) − ∇ℓ(x − h v)) / (2h), both points in one batched forward. Error O(h) and O(h²).
    The FD points are not clamped to [0, 1]. ``create_graph`` keeps the result differentiable in the
    parameters (SOAR, CURE); ``g0`` must then carry its own graph.
    """
    x = x.detach()
    v = v.detach()
    if scheme == "central":
        both = input_grad(model, torch.cat([x + h * v, x - h * v]), torch.cat([y, y]), loss_fn=loss_fn,
                          create_graph=create_graph).grad
        g_plus, g_minus = both.chunk(2)
        return (g_plus - g_minus) / (2 * h)
    if g0 is None:
        g0 = input_grad(model, x, y, loss_fn=loss_fn, create_graph=create_graph).grad
    g_plus = input_grad(model, x + h * v, y, loss_fn=loss_fn, create_graph=create_graph).grad
    return (g_plus - g0) / h


@contextmanager
def autocast_off(device_type: str) -> Iterator[None]:
    """Disable fp16/bf16 autocast: finite differences with h ~ 0.01 lose every significant digit in half
    precision (soar-foar.md §5), so FD regularizers run in the inputs' dtype (float32 or float64)."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients."""
    return [p for p in model.parameters() if p.requires_grad]


def add_param_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], scale: float) -> None:
    """p.grad += scale · g for each parameter (creating .grad where absent)."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g * scale
        else:
            p.grad.add_(g, alpha=scale)
