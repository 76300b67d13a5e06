"""Validation during training: clean and PGD accuracy on the held-out split, interruptible between batches.

A stop request (Ctrl-C, SIGTERM) is checked after every batch: validation of a large split under load can take
minutes, and the loops promise to stop within one batch. :class:`ValidationStopped` tells the trainer to save
its state as "epoch trained, validation pending"; a resume then validates the epoch from the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advbench.attacks.pgd import pgd_perturb
from advbench.core.passes import frozen
from advbench.core.seeding import make_generator
from advbench.data import TensorSplit, batches
from advbench.threat import ThreatModel

#: returns True when the loop should stop now (a signal arrived)
StopCheck = Callable[[], bool]


class ValidationStopped(Exception):
    """Validation was abandoned between two batches because a stop was requested."""


def _check(stop: StopCheck | None) -> None:
    if stop is not None and stop():
        raise ValidationStopped


def clean_accuracy(model: nn.Module, split: TensorSplit, n: int, batch_size: int, device: torch.device,
                   stop: StopCheck | None = None) -> float:
    """Accuracy on the first ``n`` images of ``split`` (eval mode, no grad); the model's mode is restored."""
    correct = 0
    with frozen(model, "eval"), torch.no_grad():
        for x, y, _ in batches(split.subset(slice(0, n)), batch_size, shuffle=False, device=device):
            correct += int((model(x).argmax(1) == y).sum())
            _check(stop)
    return correct / max(1, n)


def pgd_accuracy(model: nn.Module, split: TensorSplit, n: int, batch_size: int, device: torch.device,
                 threat: ThreatModel, *, steps: int, seed: Any, stop: StopCheck | None = None) -> float:
    """PGD-``steps`` accuracy (step eps/4, uniform start) on the first ``n`` images, eval mode."""
    correct = 0
    with frozen(model, "eval"):
        for b, (x, y, _) in enumerate(batches(split.subset(slice(0, n)), batch_size, shuffle=False, device=device)):
            gen = make_generator(x.device, seed, b)
            x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=threat.default_step(), generator=gen)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
            _check(stop)
    return correct / max(1, n)
