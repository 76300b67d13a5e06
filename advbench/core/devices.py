"""Devices: resolving ``--device`` to a torch device, with one clear line when it is not there, and the one
place a process picks its GPU (training, evaluation and the process group all take it from here)."""

from __future__ import annotations

import torch

from advbench.core import distributed
from advbench.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; an unavailable CUDA request is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"invalid device '{name}'; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available; use --device cpu")
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
