"""Standard (empirical risk minimisation) training."""

from __future__ import annotations

import torch.nn.functional as F

from advbench.defenses.base import DEFENSES, Defense, device_accuracy


@DEFENSES.register("standard", help="Standard training: cross-entropy on clean images")
class Standard(Defense):
    """Minimise CE(f(x), y) on clean images."""

    default_select = "val-clean"

    inherent_passes = (1.0, 1.0)

    def loss(self, model, x, y, ctx):
        """Mean cross-entropy on the clean batch."""
        logits = model(x)
        return F.cross_entropy(logits, y), {"acc": device_accuracy(logits, y)}
