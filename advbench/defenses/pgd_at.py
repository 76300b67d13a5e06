"""PGD adversarial training (Madry et al. 2018; Rice et al. 2020 recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from advbench.attacks.training import TrainingAttackOptions, pgd_examples
from advbench.defenses.base import DEFENSES, Defense, device_accuracy
from advbench.errors import UserError


@dataclass
class PGDATOptions(TrainingAttackOptions):
    """PGD-AT options. Defaults follow the Rice et al. recipe: 10 steps of 2/255 (eps/4 in general,
    which is 2/255 at 8/255), uniform random start, train-mode BN while crafting, restarts 1."""

    init: Literal["uniform", "zero", "normal"] = "uniform"
    restarts: int = 1
    attack_bn_mode: Literal["train", "eval"] = "train"

    def validate(self) -> None:
        """Steps and restarts must be positive."""
        if self.steps < 1 or self.restarts < 1:
            raise UserError("pgd-at steps and restarts must be >= 1")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("pgd-at step_size must be > 0")


@DEFENSES.register("pgd-at", help="PGD adversarial training (Madry/Rice): CE on PGD examples, Linf or L2")
class PGDAT(Defense):
    """min_theta E max_{||delta|| <= eps} CE(f(x + delta), y), trained on adversarial examples only."""

    Options = PGDATOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """K attack forward/backward passes plus one training forward/backward."""
        k = self.options.steps * self.options.restarts
        return (k + 1.0, k + 1.0)

    def loss(self, model, x, y, ctx):
        """Mean CE on PGD examples crafted against the current weights."""
        o = self.options
        x_adv = pgd_examples(model, x, y, self.threat, steps=o.steps, alpha=o.step(self.threat), init=o.init,
                             restarts=o.restarts, bn_mode=o.attack_bn_mode)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": device_accuracy(logits, y)}
