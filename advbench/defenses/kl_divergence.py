"""KL divergences between a clean and an adversarial output distribution, in the reductions the TRADES,
MART and RAT reference codes use. A helper module: it registers no defense."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KLReduction = Literal["batchmean", "mean"]


def kl_to_target(log_q: torch.Tensor, p: torch.Tensor, reduction: KLReduction = "batchmean") -> torch.Tensor:
    """KL(p ‖ q) from log q (PyTorch ``kl_div`` argument order): ``batchmean`` = Σ/B, ``mean`` = Σ/(B·C)."""
    if reduction == "mean":
        return F.kl_div(log_q, p, reduction="sum") / log_q.numel()
    return F.kl_div(log_q, p, reduction="batchmean")


def kl_to_log_target(log_q: torch.Tensor, log_p: torch.Tensor, reduction: KLReduction = "batchmean") -> torch.Tensor:
    """KL(p ‖ q) from log p and log q: the same value as :func:`kl_to_target`, but a target that keeps its
    gradient stays finite where softmax underflows (p_c = 0 makes ∂(p log p)/∂p = log 0 in the probability
    form, which turns the whole gradient to NaN for a confident model)."""
    if reduction == "mean":
        return F.kl_div(log_q, log_p, reduction="sum", log_target=True) / log_q.numel()
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def per_sample_kl(log_q: torch.Tensor, p: torch.Tensor, log_target: bool = False) -> torch.Tensor:
    """Σ_c p_c (log p_c − log q_c) per row (0·log 0 = 0); ``log_target``: ``p`` is given as log p (finite
    gradients for a target that keeps its graph, see :func:`kl_to_log_target`)."""
    return F.kl_div(log_q, p, reduction="none", log_target=log_target).sum(dim=1)
