"""Counting forward and backward passes through a model, and freezing a model for attacks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class PassCounter:
    """Counts examples sent forward and backward through ``model``.

    A forward hook on the root module adds the batch size of every forward call; when its output
    requires grad, a tensor hook on the output adds the batch size each time a backward pass reaches
    it (so a double-backprop step counts every backward through the logits).
    Divide by the batch size to get passes per step.
    """

    def __init__(self, model: nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            return
        n = int(output.shape[0])
        self.forward += n
        if output.requires_grad:
            output.register_hook(self._make_backward_hook(n))

    def _make_backward_hook(self, n: int):
        def hook(grad: torch.Tensor) -> None:
            self.backward += n

        return hook

    def reset(self) -> None:
        """Zero both counters."""
        self.forward = 0
        self.backward = 0

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()

    def __enter__(self) -> PassCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def frozen(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in ``mode`` ("eval" or "train") with parameter grads off; restore both after.

    Attacks run inside this so they never change the model's mode or accumulate parameter grads.
    Per-module training flags and per-parameter ``requires_grad`` are restored exactly.
    """
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        with module_mode(model, mode):
            for p in grads:
                p.requires_grad_(False)
            yield model
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)


@contextmanager
def module_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in ``mode`` ("train" or "eval") and restore every module's flag afterwards.

    Parameter gradients are untouched (for forwards that are differentiated in the weights but run in
    another BatchNorm mode); :func:`frozen` adds freezing on top.
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.train(mode == "train")
        yield model
    finally:
        for m, flag in modes.items():
            m.training = flag
