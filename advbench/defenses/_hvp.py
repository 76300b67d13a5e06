"""Shared numerics of the input-gradient and curvature regularizers.

Per-sample input gradients (of the *summed* loss, so each sample gets its own gradient), finite-difference
Hessian-vector products used by SOAR (Eq. 10), SCORPIO (Eqs. 10-11) and CURE, per-sample norms, the
linear-maximisation oracle of Frank-Wolfe (SCORPIO Eq. 8) and a mode switch that keeps parameter grads on.
The leading underscore keeps this module out of the defense auto-import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.passes import module_mode  # noqa: F401  (re-exported for the defenses)

#: per-sample loss of (model output, labels) -> [B]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ℓ_i = CE(f(x_i), y_i)."""
    return F.cross_entropy(logits, y, reduction="none")


def bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector [B] so that it broadcasts against ``like`` [B, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product <a_i, b_i> -> [B]."""
    return (a * b).flatten(1).sum(1)


def bnorm(a: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm ||a_i||_p -> [B] (p = inf for the max norm)."""
    return torch.linalg.vector_norm(a.flatten(1), ord=p, dim=1)


def dual_exponent(p: float) -> float:
    """Hölder conjugate q of p (1/p + 1/q = 1): 2 -> 2, inf -> 1, 1 -> inf."""
    if p == float("inf"):
        return 1.0
    if p == 1:
        return float("inf")
    return p / (p - 1)


def norm_order(norm: str) -> float:
    """Threat norm name ("linf", "l2") as a number p."""
    return float("inf") if norm == "linf" else 2.0


def unit_direction(g: torch.Tensor) -> torch.Tensor:
    """g_i / ||g_i||_2 per sample, and 0 where g_i = 0."""
    n = bnorm(g, 2)
    return g / bview(torch.where(n > 0, n, torch.ones_like(n)), g)


def lmo(d: torch.Tensor, p: float) -> torch.Tensor:
    """Linear-maximisation oracle: argmax_{||s||_p <= 1} <s, d> per sample (SCORPIO Eq. 8).

    p = inf: sign(d); p = 2: d/||d||_2; p = 1: a signed one-hot at argmax |d|; otherwise
    sign(d)|d|^(q-1) normalised to unit p-norm (the paper prints the exponent p/q, a typo: only q - 1
    attains <s, d> = ||d||_q). Samples with d = 0 get s = 0.
    """
    if p == float("inf"):
        return d.sign()
    if p == 2:
        return unit_direction(d)
    flat = d.flatten(1)
    if p == 1:
        idx = flat.abs().argmax(dim=1, keepdim=True)
        s = torch.zeros_like(flat).scatter(1, idx, flat.gather(1, idx).sign())
        return s.view_as(d)
    q = dual_exponent(p)
    s = flat.sign() * flat.abs().pow(q - 1)
    n = torch.linalg.vector_norm(s, ord=p, dim=1, keepdim=True)
    return (s / torch.where(n > 0, n, torch.ones_like(n))).view_as(d)


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
