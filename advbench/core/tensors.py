"""Per-sample tensor helpers: a batch [B, ...] holds one example per row, and attacks and defenses keep
per-example scalars (radii, step sizes, norms, masks) as vectors [B] that must act row by row.

These lived under several private names (``_bcast``, ``bview``, ...) in the attack and defense modules;
this is their one home.
"""

from __future__ import annotations

import torch


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-sample vector ``v`` [B] as [B, 1, ..., 1] so that it broadcasts against ``like`` [B, ...]
    row by row (a view: no copy)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product ⟨a_i, b_i⟩ -> [B]."""
    return (a * b).flatten(1).sum(1)


def per_sample_norm(a: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm ‖a_i‖_p -> [B] (p = inf for the max norm)."""
    return torch.linalg.vector_norm(a.flatten(1), ord=p, dim=1)


def unit_direction(g: torch.Tensor) -> torch.Tensor:
    """g_i / ‖g_i‖₂ per sample, and 0 where g_i = 0."""
    n = per_sample_norm(g, 2)
    return g / per_sample(torch.where(n > 0, n, torch.ones_like(n)), g)
