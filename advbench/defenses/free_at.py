"""Free adversarial training (Shafahi et al. 2019), Finlay & Oberman's baseline; spec
``adversarial-training-baselines.md`` §7.

Each minibatch is replayed m times; every replay does ONE forward/backward whose gradient serves both the
weight update and an ascent step on a perturbation δ that persists across minibatches (never reset):

    x_in = clamp(x + δ, 0, 1);  L = CE(f(x_in), y);  δ ← Π_ε(δ + ε·sign(∇_δ L));  θ ← SGD(θ, ∇_θ L)

One engine epoch performs m passes of updates over the data: divide the epoch budget by m to match the
paper's cost (the code's 80k replays with m = 8 are about 25.6 epochs of data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.pgd import ascent_step
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.errors import UserError
from advbench.threat import ThreatModel


@dataclass
class FreeATOptions:
    """Free-AT options. replay_m: replays per minibatch (code default 8; Finlay & Oberman use 2 and 8).
    step_size: δ step (None: eps, as in the code)."""

    replay_m: int = 8
    step_size: float | None = None

    def validate(self) -> None:
        """replay_m >= 1 and a positive step."""
        if self.replay_m < 1:
            raise UserError(f"free-at replay_m must be >= 1, got {self.replay_m}")
        if self.step_size is not None and not self.step_size > 0:
            raise UserError("free-at step_size must be > 0")


@DEFENSES.register("free-at", help="Free adversarial training (Shafahi et al.): m replays per batch, persistent δ")
class FreeAT(Defense):
    """Minibatch replay with a persistent perturbation updated from the same backward as the weights."""

    Options = FreeATOptions

    def __init__(self, threat: ThreatModel, options: FreeATOptions | None = None, **overrides: Any) -> None:
        super().__init__(threat, options, **overrides)
        self.delta: torch.Tensor | None = None

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """m replays of one forward and one backward each."""
        m = float(self.options.replay_m)
        return (m, m)

    def _delta_for(self, x: torch.Tensor) -> torch.Tensor:
        """The persistent δ for a batch shaped like ``x`` (its first B rows; zero rows where missing)."""
        d = self.delta
        if d is None or d.shape[1:] != x.shape[1:]:
            d = torch.zeros_like(x)
        d = d.to(device=x.device, dtype=x.dtype)
        if d.shape[0] < x.shape[0]:
            d = torch.cat([d, torch.zeros_like(x[d.shape[0]:])])
        self.delta = d
        return d[: x.shape[0]]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """CE at clamp(x + δ) for the current persistent δ (no update; :meth:`train_step` does the replays)."""
        delta = self._delta_for(x)
        logits = model((x + delta).clamp(0, 1))
        return F.cross_entropy(logits, y), {"adv_acc": accuracy(logits, y)}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, float]:
        """m replays: forward at clamp(x + δ), one backward for ∇_θ and ∇_δ, δ ascent step, optimizer step."""
        alpha = self.options.step_size if self.options.step_size is not None else self.threat.eps
        delta = self._delta_for(x)
        losses, accs = [], []
        for _ in range(self.options.replay_m):
            delta = delta.detach().requires_grad_(True)
            logits = model((x + delta).clamp(0, 1))
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            ctx.backward(loss)
            grad = delta.grad  # scaled by ctx.grad_scale under fp16 AMP: the sign / L2 direction is unchanged
            delta = ascent_step(delta.detach(), grad if grad is not None else torch.zeros_like(delta),
                                self.threat, alpha)
            optimizer.step()
            losses.append(float(loss.detach()))
            accs.append(accuracy(logits.detach(), y))
        assert self.delta is not None
        self.delta[: x.shape[0]] = delta.detach()
        return {"loss": sum(losses) / len(losses), "adv_acc": sum(accs) / len(accs)}

    def state_dict(self) -> dict[str, Any]:
        """The persistent perturbation (so that a resumed run continues from it)."""
        return {"delta": None if self.delta is None else self.delta.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the persistent perturbation."""
        d = state.get("delta")
        self.delta = None if d is None else d.clone()
