"""Private helpers shared by the adversarial-training family (TRADES, MART, AWP, MMA, SAT, RAT).

Nothing here is registered; the public defenses import what they need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.pgd import ascent_step
from advbench.core.passes import module_mode  # noqa: F401  (re-exported for the defenses)
from advbench.errors import UserError
from advbench.threat import ThreatModel

Forward = Callable[[torch.Tensor], torch.Tensor]
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


def unit_step(threat: ThreatModel, steps: int, step_size: float | None, l2_rule: str = "eps/4") -> float:
    """The inner-maximisation step size: ``step_size`` if given, else eps/4 (2/255 at Linf 8/255); for L2
    with ``l2_rule="2eps/K"`` the TRADES code's SGD learning rate 2·eps/steps."""
    if step_size is not None:
        return float(step_size)
    if threat.norm == "l2" and l2_rule == "2eps/K":
        return 2.0 * threat.eps / max(1, steps)
    return threat.default_step()


def trades_kl_attack(forward: Forward, x: torch.Tensor, threat: ThreatModel, *, steps: int, alpha: float,
                     init_std: float = 0.001, clamp_init: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES inner maximisation (Zhang et al. 2019, Eq. 5): ascend Σ_i KL(f(x_i) ‖ f(x_i′)) over the ball.

    Starts at x + init_std·N(0, I) (not clamped unless ``clamp_init``, as in the reference code), then
    ``steps`` steepest-ascent steps of size ``alpha`` (Linf: sign; L2: normalised gradient), each followed
    by projection onto the ball and clamping to [0, 1]. The target f(x) is computed once: the caller runs
    this with frozen weights, so it is the same on every step. Returns detached x′.
    """
    with torch.no_grad():
        p_nat = F.softmax(forward(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    delta = init_std * noise
    if clamp_init:
        delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        log_q = F.log_softmax(forward(x + delta), dim=1)
        kl = F.kl_div(log_q, p_nat, reduction="sum")
        (grad,) = torch.autograd.grad(kl, delta)
        delta = ascent_step(delta.detach(), grad, threat, alpha)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def trades_objective(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                     reduction: KLReduction = "batchmean", detach_target: bool = False,
                     logits_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRADES outer objective (Zhang et al. 2019, Eq. 5): CE(f(x), y) + β·KL(f(x) ‖ f(x′)).

    Returns (loss, ce, kl). The KL target softmax(f(x)) keeps its gradient unless ``detach_target``
    (the reference code does not detach it); ``logits_target`` replaces the logits of the target
    branch (the reference code runs model(x) a second time for it).
    """
    ce = F.cross_entropy(logits_nat, y)
    tgt = logits_nat if logits_target is None else logits_target
    log_p_nat = F.log_softmax(tgt.detach() if detach_target else tgt, dim=1)
    kl = kl_to_log_target(F.log_softmax(logits_adv, dim=1), log_p_nat, reduction)
    return ce + beta * kl, ce, kl



@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every buffer (BN running statistics and counters) on exit: forwards inside leave no trace."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def weight_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named parameters that are weight matrices or kernels (ndim ≥ 2): conv and linear weights, no BN, no biases."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and "weight" in n.rsplit(".", 1)[-1]]


def check_positive(value: float | int, what: str, allow_zero: bool = False) -> None:
    """Raise a one-line UserError unless ``value`` > 0 (or ≥ 0 with ``allow_zero``)."""
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_attack(steps: int, step_size: float | None, name: str) -> None:
    """Validate the usual inner-maximisation options."""
    if steps < 0:
        raise UserError(f"{name} steps must be >= 0, got {steps}")
    if step_size is not None and step_size <= 0:
        raise UserError(f"{name} step_size must be > 0, got {step_size}")


class PerSampleStore:
    """A per-dataset-index float store (MMA's eps_i, CAT's eps_i) that grows on demand and survives resume.

    Under distributed training every rank updates the samples of its part of each batch; the trainer
    calls :meth:`sync_ranks` (through :meth:`Defense.sync_ranks`) so that every rank sees every update.
    """

    def __init__(self, default: float = 0.0) -> None:
        self.default = default
        self.values = torch.empty(0)
        self._touched: list[torch.Tensor] = []

    def _grow(self, n: int) -> None:
        if n > self.values.numel():
            extra = torch.full((n - self.values.numel(),), self.default)
            self.values = torch.cat([self.values, extra])

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """Values at dataset indices ``idx`` (the default for indices never seen)."""
        idx = idx.detach().long().cpu()
        self._grow(int(idx.max()) + 1 if idx.numel() else 0)
        return self.values[idx].clone()

    def set(self, idx: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values`` at dataset indices ``idx``."""
        idx = idx.detach().long().cpu()
        self._grow(int(idx.max()) + 1 if idx.numel() else 0)
        self.values[idx] = values.detach().to(self.values.dtype).cpu()
        from advbench.core.distributed import is_distributed

        if is_distributed():
            self._touched.append(idx)

    def sync_ranks(self) -> None:
        """Apply every rank's updates since the last sync on every rank (a no-op for one process).

        Within an epoch each sample belongs to exactly one rank's part of one batch, so the updates of
        different ranks never touch the same index between two syncs at epoch boundaries."""
        from advbench.core import distributed

        touched = torch.cat(self._touched) if self._touched else torch.empty(0, dtype=torch.long)
        self._touched = []
        if not distributed.is_distributed():
            return
        mine = (touched, self.values[touched].clone())
        for rank, (idx, vals) in enumerate(distributed.all_gather_objects(mine)):
            if rank != distributed.rank() and idx.numel():
                self._grow(int(idx.max()) + 1)
                self.values[idx] = vals

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored values."""
        return {"values": self.values.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        self.values = torch.as_tensor(state["values"]).clone().float()


def batch_indices(x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Dataset indices of the batch, or 0..B-1 when the caller gave none (direct calls, benchmarks)."""
    if idx is not None:
        return idx
    return torch.arange(x.shape[0])


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project_ball(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` onto its own ball of radius ``eps[i]`` (Linf box or L2 sphere)."""
    e = _bcast(eps.to(delta.dtype), delta)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, e), -e)
    n = _bcast(delta.flatten(1).norm(dim=1), delta)
    return delta * torch.clamp(e / n.clamp_min(1e-12), max=1.0)


def pgd_per_sample_eps(forward: Forward, x: torch.Tensor, eps: torch.Tensor, norm: str, *, steps: int,
                       step: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                       init: str = "uniform", generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD where sample i has its own radius ``eps[i]`` and step ``step[i]`` (MMA's ANPGD, CAT's per-sample ε).

    Ascends Σ_i loss_fn(logits)_i; Linf sign steps or L2 normalised-gradient steps, projection onto each
    ball, clamping to [0, 1]. ``init``: ``uniform`` (in the ball) or ``zero``. Returns detached x + δ.
    """
    if init == "uniform":
        if norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * _bcast(eps.to(x.dtype), x)
        else:
            d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            d = d / _bcast(d.flatten(1).norm(dim=1).clamp_min(1e-12), x)
            r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            delta = d * _bcast(r * eps.to(x.dtype), x)
    else:
        delta = torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    s = _bcast(step.to(x.dtype), x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(forward(x + delta)).sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                delta = delta + s * grad.sign()
            else:
                delta = delta + s * grad / _bcast(grad.flatten(1).norm(dim=1).clamp_min(1e-12), x)
            delta = project_ball(delta, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
