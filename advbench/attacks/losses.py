"""Per-sample attack losses on logits (higher = more adversarial for untargeted attacks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per sample (> 0 iff correctly classified, ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.max(dim=1).values


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """CW-inf margin loss as an ascent objective: -clamp(z_y - max_{j!=y} z_j + kappa, min=0)."""
    return -(margin(logits, y) + kappa).clamp(min=0.0)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020), per sample, ascent objective.

    -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12) with z sorted descending.
    """
    srt = logits.sort(dim=1, descending=True).values
    return -margin(logits, y) / (srt[:, 0] - srt[:, 2] + 1e-12)


LOSSES = {"ce": ce_loss, "cw": cw_loss, "dlr": dlr_loss}
