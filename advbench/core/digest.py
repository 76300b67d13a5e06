"""Content digests that key stored results: a result is reused only when every input that decides it is equal.

- :func:`weights_digest`: the values, names, dtypes and shapes of a model's parameters and buffers;
- :func:`code_identity`: which classes make up the model (its code, as far as Python can name it);
- :func:`data_digest`: the evaluated images and labels themselves.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


def _update_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def weights_digest(model: nn.Module) -> str:
    """Hash of every parameter and buffer of ``model`` (names, dtypes, shapes and values), 16 hex digits."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode() + b"\0")
        if isinstance(t, torch.Tensor):
            _update_tensor(h, t)
        else:
            h.update(repr(t).encode())
    return h.hexdigest()[:16]


def code_identity(model: nn.Module) -> list[str]:
    """The qualified class name of every module of ``model``, in order (two models of one architecture with
    other layer classes, or a wrapper around another network, differ here)."""
    return [f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()]


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """Hash of images ``x`` and labels ``y`` (dtype, shape and values), 16 hex digits."""
    h = hashlib.sha256()
    _update_tensor(h, torch.as_tensor(x))
    _update_tensor(h, torch.as_tensor(y))
    return h.hexdigest()[:16]
