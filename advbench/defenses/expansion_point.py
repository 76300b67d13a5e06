"""The PGD1 expansion point x′ of SOAR and FOAR (SOAR Sec. 4.1): its variants, the radius inside the
regularizer, and what the point costs. The point itself is :func:`advbench.attacks.training.pgd1_point`.
A helper module: it registers no defense."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from advbench.attacks.training import INIT_FRACTIONS, pgd1_point
from advbench.threat import ThreatModel

SoarInit = Literal["pgd1-half", "pgd1-full", "pgd1-code", "rand", "zero"]

def expansion_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, init: str, *,
                    bn_mode: str = "eval") -> torch.Tensor:
    """x′ for the ``init`` variant of :data:`INIT_FRACTIONS` (Algorithm 1 lines 1-2), weights frozen."""
    return pgd1_point(model, x, y, threat, INIT_FRACTIONS[init], bn_mode=bn_mode)


def resolve_reg_eps(threat: ThreatModel, init: str, reg_eps: float | None) -> float:
    """Radius used inside the regularizer: the explicit ``reg_eps``, else eps/2 with ``pgd1-half`` (so that
    PGD1 + regularizer cover the eps ball, Sec. 4.1) and eps for every other init."""
    if reg_eps is not None:
        return reg_eps
    return threat.eps / 2 if init == "pgd1-half" else threat.eps


def pgd1_passes(init: str, eps: float) -> float:
    """Forward/backward passes of the expansion point: 1 when it takes a gradient step, else 0."""
    return 1.0 if INIT_FRACTIONS[init][1] * eps > 0 else 0.0
