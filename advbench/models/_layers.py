"""Small shared pieces for the architectures (no registrations here)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from advbench.errors import UserError
from advbench.models.base import parse_bool


def norm2d(channels: int, bn: bool) -> nn.Module:
    """A BatchNorm2d over ``channels``, or an identity when BatchNorm is switched off."""
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


def check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    """Return ``value`` as a lower-case string if it is one of ``choices``; UserError otherwise."""
    text = str(value).strip().lower()
    if text not in choices:
        raise UserError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return text


def resolve_stem(stem: object, input_size: int, what: str) -> str:
    """Resolve a ``stem`` option: "cifar", "imagenet", or "auto" (imagenet for inputs of 64 px or more)."""
    choice = check_choice(stem, ("auto", "cifar", "imagenet"), what)
    if choice == "auto":
        return "imagenet" if input_size >= 64 else "cifar"
    return choice


def resolve_conv_bias(conv_bias: object, bn: bool, what: str) -> bool:
    """Resolve a ``conv_bias`` option: "auto" means a bias exactly when there is no BatchNorm."""
    if isinstance(conv_bias, str) and conv_bias.strip().lower() == "auto":
        return not bn
    return parse_bool(conv_bias, what)


def check_positive(value: int | float, what: str) -> None:
    """UserError unless ``value`` > 0."""
    if value <= 0:
        raise UserError(f"{what} must be positive, got {value}")


def check_dropout(p: float, what: str) -> None:
    """UserError unless 0 <= p < 1."""
    if not 0.0 <= p < 1.0:
        raise UserError(f"{what} must be in [0, 1), got {p}")


@torch.no_grad()
def feature_size(features: nn.Module, in_channels: int, input_size: int) -> tuple[int, int]:
    """(channels, spatial side) of ``features`` applied to one ``input_size`` square image."""
    was_training = features.training
    features.eval()
    try:
        out = features(torch.zeros(1, in_channels, input_size, input_size))
    except RuntimeError as err:
        raise UserError(f"input size {input_size} is too small for this model ({err})") from None
    finally:
        features.train(was_training)
    if out.dim() != 4 or out.shape[-1] < 1:
        raise UserError(f"input size {input_size} is too small for this model")
    return int(out.shape[1]), int(out.shape[-1])


@contextmanager
def _kept_buffers(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers on exit (a recomputed forward must not update BN statistics twice)."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` with activation checkpointing: its activations are freed after the forward and
    recomputed in the backward (``torch.utils.checkpoint``, non-reentrant, so double backprop and
    ``torch.autograd.grad`` work). The RNG state is replayed, and BatchNorm running statistics are
    updated by the first forward only (restored after every recomputation)."""
    calls = [0]

    def run(inp: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 1:
            return block(inp)
        with _kept_buffers(block):
            return block(inp)

    return checkpoint(run, x, use_reentrant=False)


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Apply ``blocks`` in order, each under :func:`checkpointed` when ``checkpointing`` and autograd is
    recording (under ``no_grad`` there is nothing to save, so blocks run plainly)."""
    use = checkpointing and torch.is_grad_enabled()
    for block in blocks:
        x = checkpointed(block, x) if use else block(x)
    return x


class GradCheckpointing:
    """Mixin of the residual networks: ``set_grad_checkpointing(True)`` checkpoints every residual block."""

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each residual block's activations in the backward instead of storing them."""
        self.grad_checkpointing = bool(enabled)
