"""Forwards at perturbed weights without touching the stored weights: AWP's adversarial weight perturbation
(AWP, TRADES-AWP, RAT's AWP-TRADES base), the functional forward at w + v, and restoring BatchNorm buffers
after probe forwards (AWP's proxy step, H-SAT's θ ± ζ). A helper module: it registers no defense."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from advbench.attacks.training import Forward
from advbench.core.passes import module_mode


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every buffer (BN running statistics and counters) on exit: forwards inside leave no trace."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


class BufferStash:
    """A reusable copy of a model's buffers: :meth:`preserved` saves them into tensors allocated once (one
    batched copy per step instead of a fresh clone of every buffer) and copies them back on exit."""

    def __init__(self) -> None:
        self._saved: list[torch.Tensor] = []

    @contextmanager
    def preserved(self, model: nn.Module) -> Iterator[nn.Module]:
        """Like :func:`preserved_buffers`, into this stash's tensors."""
        bufs = [b for b in model.buffers()]
        if len(self._saved) != len(bufs) or any(s.shape != b.shape or s.dtype != b.dtype or s.device != b.device
                                                for s, b in zip(self._saved, bufs, strict=True)):
            self._saved = [torch.empty_like(b) for b in bufs]
        with torch.no_grad():
            if bufs:
                torch._foreach_copy_(self._saved, bufs)
        try:
            yield model
        finally:
            with torch.no_grad():
                if bufs:
                    torch._foreach_copy_(bufs, self._saved)


def weight_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named parameters that are weight matrices or kernels (ndim ≥ 2): conv and linear weights, no BN, no biases."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and "weight" in n.rsplit(".", 1)[-1]]


def awp_perturbation(model: nn.Module, objective: Callable[[nn.Module], torch.Tensor], gamma: float,
                     proxy_lr: float = 0.01, proxy_bn_mode: str = "train",
                     average: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
                     stash: BufferStash | None = None) -> dict[str, torch.Tensor]:
    """AWP weight perturbation (Wu et al. 2020, Eq. 8–9 as in the reference code's proxy step).

    One plain-SGD ascent step of ``objective(model)`` with learning rate ``proxy_lr`` gives d_k = lr·∇_{w_k};
    each conv/linear weight gets v_k = γ·‖w_k‖/(‖d_k‖ + 1e-20)·d_k. The objective is evaluated in
    ``proxy_bn_mode`` with BN statistics restored afterwards (the reference's proxy is a throwaway copy).
    ``average`` (distributed training: :meth:`StepContext.average`) turns each rank's proxy gradient into
    the gradient of the whole global batch, so every rank applies the same v. Returns {parameter name: v_k}
    (detached). ``stash`` keeps the BN statistics in tensors reused from step to step.
    """
    named = weight_params(model)
    if not named or gamma == 0:
        return {}
    keep = stash.preserved(model) if stash is not None else preserved_buffers(model)
    with module_mode(model, proxy_bn_mode), keep:
        obj = objective(model)
        grads = torch.autograd.grad(obj, [p for _, p in named], allow_unused=True)
    if average is not None:
        grads = tuple(torch.zeros_like(p) if g is None else g for (_, p), g in zip(named, grads, strict=True))
        grads = tuple(average(list(grads)))
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for (name, p), g in zip(named, grads, strict=True):
            if g is None:
                continue
            d = proxy_lr * g
            out[name] = gamma * p.norm() / (d.norm() + 1e-20) * d
    return out


def perturbed_forward(model: nn.Module, v: dict[str, torch.Tensor]) -> Forward:
    """A forward function of ``model`` at weights w + v whose gradient flows into w (v is a constant).
    w + v is built once here, not at every call (TRADES-AWP calls it twice per step)."""
    if not v:
        return model
    params = dict(model.named_parameters())
    shifted = {k: params[k] + dv for k, dv in v.items()}

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return functional_call(model, shifted, (inp,))

    return forward
