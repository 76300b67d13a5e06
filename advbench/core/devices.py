"""Devices: resolving ``--device`` to a torch device, with one clear line when it is not there."""

from __future__ import annotations

import torch

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
