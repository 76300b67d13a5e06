"""BPDA (Athalye et al. 2018): backward pass differentiable approximation of gradient-breaking components.

A component ``pre`` that breaks gradients (rounding, JPEG, a numpy denoiser, ``.detach()``) gives a gradient
attack zero or no input gradient. BPDA keeps ``pre``'s exact output on the forward pass and, on the
backward pass, uses the gradient of a differentiable approximation ``approx`` (the identity by default,
right when pre(x) ≈ x). Two ways to name the component, for any model (``--model-module`` ones included):

- a submodule by its dotted path (``prep``, ``features.0``): :func:`bpda_hooks` replaces its output by
  one with pre's value and approx's gradient (forward hooks, removed afterwards: the model is unchanged);
- elementary rounding ops called inline in a ``forward`` (``torch.round(x * 255) / 255``): :func:`straight_through_ops`
  gives ``round``, ``floor``, ``ceil`` and ``trunc`` the identity gradient while it is active.

:func:`find_gradient_breakers` finds such submodules: their output changes with their input while the
gradient through them is zero or absent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from advbench.errors import UserError

#: rounding-type ops whose straight-through (identity) gradient :func:`straight_through_ops` provides
ROUNDING_OPS = ("round", "floor", "ceil", "trunc")


class _ValueOf(torch.autograd.Function):
    """Forward: the value of ``exact``; backward: the incoming gradient goes to ``surrogate`` (same shape)."""

    @staticmethod
    def forward(ctx: Any, surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        return exact.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def with_surrogate_gradient(surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact``'s values (bit for bit) with ``surrogate``'s gradient; ``exact`` itself outside autograd."""
    if not (torch.is_grad_enabled() and surrogate.requires_grad):
        return exact
    if surrogate.shape != exact.shape:
        raise UserError(f"BPDA needs an approximation with the component's output shape {tuple(exact.shape)}, got "
                        f"{tuple(surrogate.shape)} (the identity fits only a component that keeps its input's shape)")
    return _ValueOf.apply(surrogate, exact.to(surrogate.dtype))


def submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; a one-line error naming the model's top-level children otherwise."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise UserError(f"the model has no submodule '{path}' for BPDA; its children: {', '.join(names) or 'none'}"
                        ) from None


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


@contextlib.contextmanager
def bpda_hooks(model: nn.Module, paths: list[str], approx: str = "identity") -> Iterator[None]:
    """While active, each submodule in ``paths`` keeps its forward value but back-propagates as ``approx``:
    ``identity`` or the dotted path of another submodule of the model (called on the same input)."""
    approx_fn: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda t: t) if approx == "identity" else submodule(model, approx))

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        inp = _first_tensor(args)
        if inp is None or not isinstance(output, torch.Tensor) or not torch.is_grad_enabled():
            return None
        return with_surrogate_gradient(approx_fn(inp), output)

    handles = [submodule(model, p).register_forward_hook(hook) for p in paths]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _StraightThrough(TorchFunctionMode):
    """Gives the listed rounding ops the identity gradient (their values unchanged)."""

    def __init__(self, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.funcs = set()
        for name in ops:
            self.funcs.update({getattr(torch, name), getattr(torch.Tensor, name)})

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        x = args[0] if args else None
        if func in self.funcs and isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) \
                and x.is_floating_point() and x.requires_grad and out.shape == x.shape:
            return _ValueOf.apply(x, out)
        return out


@contextlib.contextmanager
def straight_through_ops(ops: tuple[str, ...] = ROUNDING_OPS) -> Iterator[None]:
    """While active, ``torch.round`` and friends (function or method form) pass gradients as the identity."""
    bad = [o for o in ops if o not in ROUNDING_OPS]
    if bad:
        raise UserError(f"unknown straight-through op '{bad[0]}'; choose from {', '.join(ROUNDING_OPS)}")
    with _StraightThrough(tuple(ops)):
        yield


def _record_calls(model: nn.Module) -> tuple[dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]], list[Any]]:
    """Forward hooks on every proper submodule recording (module, first tensor input, tensor output)."""
    seen: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any, name: str = name) -> None:
            inp = _first_tensor(args)
            if inp is not None and isinstance(output, torch.Tensor) and name not in seen:
                seen[name] = (module, inp, output)

        handles.append(mod.register_forward_hook(hook))
    return seen, handles


def _breaks(module: nn.Module, inp: torch.Tensor, out: torch.Tensor, g: torch.Generator) -> bool:
    """The gradient through ``module`` is zero or absent while its output changes with its input."""
    if not (inp.is_floating_point() and inp.requires_grad and out.is_floating_point()):
        return False
    if out.requires_grad:
        r = torch.randn(out.shape, generator=g, device="cpu").to(out.device, out.dtype)
        try:
            (grad,) = torch.autograd.grad((out * r).sum(), inp, retain_graph=True, allow_unused=True)
        except RuntimeError:  # e.g. the input was later modified in place (ReLU(inplace=True)): no verdict
            return False
        if grad is not None and bool(grad.abs().sum() > 0):
            return False
    with torch.no_grad():
        scale = 0.05 * (float(inp.detach().float().std()) + 1e-3)
        noise = torch.randn(inp.shape, generator=g, device="cpu").to(inp.device, inp.dtype) * scale
        a, b = module(inp.detach()), module(inp.detach() + noise)
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool((a != b).any())


def find_gradient_breakers(model: nn.Module, x: torch.Tensor, seed: int = 0) -> list[str]:
    """Dotted paths of the innermost submodules that break gradients on images ``x`` (model frozen by the caller).

    A submodule breaks gradients if its output changes with its input while the gradient of a random
    projection of its output with respect to its input is zero or absent. Only modules whose input still
    carries a gradient are tested (the first breaker explains the rest); an enclosing module of a breaker
    (its parent ``Sequential``) is left out. Breakers inline in a ``forward`` are not submodules: see
    :func:`straight_through_ops`.
    """
    seen, handles = _record_calls(model)
    try:
        with torch.enable_grad():
            model(x.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    g = torch.Generator().manual_seed(seed)
    broken = [name for name, (mod, inp, out) in seen.items() if _breaks(mod, inp, out, g)]
    return [b for b in broken if not any(o.startswith(b + ".") for o in broken)]
