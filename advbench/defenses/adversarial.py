"""PGD adversarial training (Madry et al. 2018; Rice et al. 2020 recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from advbench.attacks.pgd import pgd_perturb
from advbench.core.passes import frozen
from advbench.defenses.base import DEFENSES, Defense, accuracy


@dataclass
class PGDATOptions:
    """PGD-AT options. Defaults follow the Rice et al. recipe: 10 steps of 2/255 (eps/4 in general,
    which is 2/255 at 8/255), uniform random start, train-mode BN while crafting, restarts 1."""

    steps: int = 10
    step_size: float | None = None  # default eps/4
    init: Literal["uniform", "zero", "normal"] = "uniform"
    restarts: int = 1
    attack_bn_mode: Literal["train", "eval"] = "train"

    def validate(self) -> None:
        """Steps and restarts must be positive."""
        from advbench.errors import UserError

        if self.steps < 1 or self.restarts < 1:
            raise UserError("pgd-at steps and restarts must be >= 1")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("pgd-at step_size must be > 0")


def craft(model, x, y, threat, *, steps, step_size, init, restarts, bn_mode):
    """Training-time PGD examples (max-loss over restarts) with BN in ``bn_mode`` and weights frozen."""
    alpha = step_size if step_size is not None else threat.default_step()
    with frozen(model, bn_mode):
        return pgd_perturb(model, x, y, threat, steps=steps, alpha=alpha, init=init, restarts=restarts,
                           select="max-loss" if restarts > 1 else "last")


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
        x_adv = craft(model, x, y, self.threat, steps=o.steps, step_size=o.step_size, init=o.init,
                      restarts=o.restarts, bn_mode=o.attack_bn_mode)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": accuracy(logits, y)}
