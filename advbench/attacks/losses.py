"""Per-sample attack losses on logits (higher = more adversarial for untargeted attacks).

Every loss maps (logits [B, K], labels [B]) to a per-sample value [B]. Untargeted attacks ascend it
with the true label; targeted attacks descend it with the target label.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per sample (> 0 iff correctly classified, ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.max(dim=1).values


def log_margin(logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """SCORPIO's margin M(x, c) = log p_c(x) - max_{j != c} log p_j(x) (Eq. 12); > 0 iff argmax = c.

    Equal to the logit margin (the log-partition cancels) but computed from log-probabilities as printed.
    """
    return margin(F.log_softmax(logits, dim=1), c)


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """CW-inf margin loss as an ascent objective: -clamp(z_y - max_{j!=y} z_j + kappa, min=0)."""
    return -(margin(logits, y) + kappa).clamp(min=0.0)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020), per sample, ascent objective.

    -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12) with z sorted descending.
    """
    srt = logits.sort(dim=1, descending=True).values
    return -margin(logits, y) / (srt[:, 0] - srt[:, 2] + 1e-12)


def neg_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ascent objective -(z_y - max_{j!=y} z_j): the unclamped logit margin, negated."""
    return -margin(logits, y)


def neg_log_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ascent objective -M(x, y) (SCORPIO's UM minimises M(x, y); TM maximises M(x, r))."""
    return -log_margin(logits, y)


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss, "dlr": dlr_loss, "margin": neg_margin_loss,
                             "log-margin": neg_log_margin_loss}


def get_loss(name: str | LossFn, kappa: float = 50.0) -> LossFn:
    """The per-sample loss called ``name`` (``cw`` with margin ``kappa``), or ``name`` if it is callable."""
    if callable(name):
        return name
    if name == "cw":
        return lambda z, t: cw_loss(z, t, kappa)
    return LOSSES[name]
