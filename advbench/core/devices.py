"""Devices: resolving ``--device`` to a torch device, with one clear line when it is not there, and the one
place a process picks its GPU (training, evaluation and the process group all take it from here)."""

from __future__ import annotations

import torch

from advbench.core import distributed
from advbench.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cpu``, ``cuda`` or ``cuda:N`` otherwise. Any other device type
    (mps, xpu, meta, ...), or a GPU that is not there, is a one-line UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"invalid device {str(name)[:60]!r}; use auto, cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {str(name)[:60]!r} is not supported; use auto, cpu or cuda[:N]")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise UserError(f"device {name!r}: there is one CPU device; use --device cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}': this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return dev


def rank_device(name: str = "auto") -> torch.device:
    """The device this process works on, made the current CUDA device.

    ``--device`` resolved as :func:`resolve_device`; CUDA without an index means GPU ``LOCAL_RANK`` under
    torchrun (one GPU per rank) and the current GPU for one process. Setting it current before the
    process group starts is what binds NCCL to the right GPU, so every command calls this first.
    """
    dev = resolve_device(name)
    if dev.type != "cuda":
        return dev
    if dev.index is None:
        index = distributed.local_rank() if distributed.env_world_size() > 1 else torch.cuda.current_device()
        dev = torch.device("cuda", index)
    torch.cuda.set_device(dev)
    return dev
