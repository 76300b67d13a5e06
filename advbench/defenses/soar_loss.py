"""SOAR Table 8 (App. E.4): the value of SOAR's regularized loss ℓ(x', y) + λ·R(x'; z, h) on test images, with R
averaged over ``n_z`` draws of z, at the beginning of SOAR (the standard model it fine-tunes) and at its end.

A diagnostic that runs like an attack (a suite entry, a stored result: the accuracy at the expansion point x' and
the loss in the result's ``summary``). It lives with the defense because it evaluates the defense's own objective
(the attacks layer sits below the defenses); it is registered in the attack registry when the defenses load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.attacks.base import ATTACKS, Attack, Perturbation
from advbench.defenses.expansion_point import INIT_FRACTIONS, expansion_point, resolve_reg_eps
from advbench.defenses.soar import soar_factor, soar_regularizer
from advbench.errors import UserError


@dataclass
class SoarLossOptions:
    """n_z: draws of z averaged in R (Table 8: 1, 10, 100); h, lam, init: SOAR's FD step, weight and expansion
    point (its defaults; reg_eps follows the init as in training)."""

    n_z: int = 1
    h: float = 0.01
    lam: float = 1.0
    init: str = "pgd1-half"

    def validate(self) -> None:
        """n_z >= 1, h > 0, lam >= 0, a known init."""
        if self.n_z < 1 or not self.h > 0 or self.lam < 0:
            raise UserError("soar-loss needs n_z >= 1, h > 0 and lam >= 0")
        if self.init not in INIT_FRACTIONS:
            raise UserError(f"soar-loss init must be one of {', '.join(INIT_FRACTIONS)}, got {self.init!r}")


@ATTACKS.register("soar-loss", help="Diagnostic: SOAR's regularized loss l(x') + lam*R(x'; z, h), R averaged over "
                  "n_z draws of z (SOAR Table 8)")
class SoarLoss(Attack):
    """Per image ℓ(x', y) + λ·R(x'; z, h) at SOAR's expansion point x' (z drawn from the attack's generator)."""

    Options = SoarLossOptions

    def perturb_ex(self, model, x, y, generator=None):
        """The expansion points and each image's regularized loss there."""
        o, t = self.options, self.threat
        xp = expansion_point(model, x, y, t, o.init).detach()
        draws = [(torch.randn(xp.shape, generator=generator, device="cpu").to(xp),
                  torch.randn(xp.shape[0], generator=generator, device="cpu").to(xp)) for _ in range(o.n_z)]
        factor = soar_factor(t.norm, resolve_reg_eps(t, o.init, None), x[0].numel())
        terms = soar_regularizer(model, xp, y, factor=factor, h=o.h, z=draws)
        value = (terms.loss + o.lam * terms.reg).detach()
        return Perturbation(xp, per_sample={"soar_loss": [float(v) for v in value]})

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean over images of the regularized loss."""
        values = per_sample.get("soar_loss", [])
        return {"soar_loss_mean": sum(values) / len(values) if values else None}
