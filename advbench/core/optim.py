"""The optimizer every training step goes through: AMP loss scaling and gradient averaging across ranks.

Distributed training does **not** wrap the model in ``DistributedDataParallel``. DDP's reducer hooks
into the backward pass of the wrapped module's forward and expects one forward and one backward per
step with every parameter used once. advbench's defenses break that pattern: inner attacks run with
frozen parameters, SOAR / grad-reg / FOAR differentiate an input gradient again (``create_graph``),
AWP evaluates the loss at perturbed weights through ``torch.func.functional_call``, Free-AT steps the
optimizer m times per batch and SCORPIO adds parameter gradients computed by ``torch.autograd.grad``.

Instead every rank starts from rank 0's weights (:func:`broadcast_module`), computes its step on its
part of the global batch exactly as a single process would, and :class:`SyncedOptimizer` all-reduces
the gradients before each ``optimizer.step()``. Rank r weighs its gradient by n_r / N (its share of
the global batch of N examples), so for a loss that is a mean over the batch the summed gradient is
the single-process gradient of the whole batch up to float rounding. Every rank then applies the
same update to the same weights, so the weights stay identical without further communication.
BatchNorm running statistics are local to each rank and are averaged by :func:`average_buffers`
before validation and checkpoints.

With ``--amp fp16`` the wrapper also owns the ``GradScaler``: defenses call ``ctx.backward(loss)``
(scaled), and ``step()`` averages the scaled gradients, unscales them (so every rank sees the same
inf/NaN check and makes the same skip decision), steps and updates the scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advbench.core import distributed


def _flat_all_reduce(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Sum same-dtype tensors over ranks with one collective; returns new tensors (float32 on the wire for
    half precision, which gloo does not reduce)."""
    if not tensors:
        return []
    wire = torch.float32 if tensors[0].dtype in (torch.float16, torch.bfloat16) else tensors[0].dtype
    flat = torch.cat([t.reshape(-1).to(wire) for t in tensors])
    dist.all_reduce(flat)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset: offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


Indexed = list[tuple[int, torch.Tensor]]


def _by_dtype_device(items: Iterable[tuple[int, torch.Tensor]]) -> dict[tuple[Any, Any], Indexed]:
    groups: dict[tuple[Any, Any], Indexed] = {}
    for i, t in items:
        groups.setdefault((t.dtype, t.device), []).append((i, t))
    return groups


def weighted_all_reduce(tensors: Sequence[torch.Tensor], weight: float) -> list[torch.Tensor]:
    """Σ_r weight_r · tensors_r over ranks (identity for one process); returns new tensors."""
    if not distributed.is_distributed():
        return list(tensors)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for group in _by_dtype_device(enumerate(tensors)).values():
        reduced = _flat_all_reduce([t * weight for _, t in group])
        for (i, _), r in zip(group, reduced, strict=True):
            out[i] = r
    return [t for t in out if t is not None]


def average_gradients(params: Sequence[torch.Tensor], weight: float) -> None:
    """Replace each ``p.grad`` by Σ_r weight_r · grad_r over ranks, in place.

    A parameter whose gradient is None on every rank keeps None (the optimizer skips it as it would in
    one process); one with a gradient on some rank only gets the sum of the ranks that have one. The
    gradients and a has-gradient count travel in one buffer per dtype: one collective per step."""
    if not distributed.is_distributed():
        return
    for group in _by_dtype_device(enumerate(params)).values():
        ps = [p for _, p in group]
        grads = [p.grad.detach() * weight if p.grad is not None else torch.zeros_like(p) for p in ps]
        mask = torch.tensor([1.0 if p.grad is not None else 0.0 for p in ps], dtype=grads[0].dtype,
                            device=grads[0].device)
        *reduced, count = _flat_all_reduce([*grads, mask])
        for p, g, c in zip(ps, reduced, count.tolist(), strict=True):
            if c == 0:
                p.grad = None
            elif p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)


def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (no-op for one process)."""
    if not distributed.is_distributed():
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype in (torch.float16, torch.bfloat16):
                tmp = t.detach().float()
                dist.broadcast(tmp, src)
                t.copy_(tmp)
            else:
                dist.broadcast(t.data, src)


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running mean/var) over ranks; integer buffers (batch
    counters) are equal on every rank and stay as they are. No-op for one process."""
    if not distributed.is_distributed():
        return
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not bufs:
        return
    w = 1.0 / distributed.world_size()
    with torch.no_grad():
        for b, avg in zip(bufs, weighted_all_reduce(bufs, w), strict=True):
            b.copy_(avg)


def max_param_difference(model: nn.Module) -> float:
    """Largest |w_rank - w_rank0| over all parameters and ranks (0.0 for one process): a consistency check."""
    if not distributed.is_distributed():
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])
    ref = flat.to(_wire_device())
    dist.broadcast(ref, 0)
    diff = float((flat - ref.cpu()).abs().max()) if flat.numel() else 0.0
    return max(distributed.all_gather_objects(diff))


def _wire_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class SyncedOptimizer:
    """Wraps a ``torch.optim.Optimizer``; ``step()`` = average gradients over ranks (weighted by this rank's
    share of the global batch), unscale (fp16), step, update the loss scale.

    With one process and no loss scaler it adds nothing: ``backward`` is ``loss.backward()`` and ``step``
    is the inner ``step`` (bit-identical to using the optimizer directly).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, scaler: Any | None = None,
                 sync: bool | None = None) -> None:
        self.optimizer = optimizer
        self.scaler = scaler
        self.sync = distributed.is_distributed() if sync is None else sync
        #: this rank's share n_r / N of the current global batch (set by the trainer every step)
        self.weight = 1.0
        self._ready = False  # gradients already averaged and unscaled in this step
        self.steps = 0

    # ---- what defenses and the trainer use of an optimizer
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups (the trainer sets the LR here)."""
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        """The inner optimizer's per-parameter state."""
        return self.optimizer.state

    def params(self) -> list[torch.Tensor]:
        """Every parameter the optimizer updates, in a fixed order (the same on every rank)."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients (and the per-step state of this wrapper)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._ready = False

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()``, through the loss scaler when fp16 AMP is on."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)

    @property
    def grad_scale(self) -> float:
        """The factor the ``.grad`` fields carry right now: the fp16 loss scale until :meth:`finalize`, else 1.
        A defense that adds gradients computed outside :meth:`backward` multiplies them by this."""
        if self.scaler is None or self._ready or not self.scaler.is_enabled():
            return 1.0
        return float(self.scaler.get_scale())

    def finalize(self) -> None:
        """Make ``.grad`` the final gradient of the global batch now (average over ranks, unscale); idempotent
        within a step. Needed before anything that reads gradients as a whole, e.g. clipping by norm."""
        if self._ready:
            return
        if self.sync:
            average_gradients(self.params(), self.weight)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self._ready = True

    def average(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Σ_r (n_r / N) · tensors_r over ranks for gradients a defense adds after :meth:`finalize`
        (identity for one process)."""
        return weighted_all_reduce(tensors, self.weight) if self.sync else list(tensors)

    def step(self) -> None:
        """Average (and unscale) the gradients, then step the inner optimizer."""
        self.finalize()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._ready = False
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict (the checkpoint format does not change)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner optimizer's state."""
        self.optimizer.load_state_dict(state)
