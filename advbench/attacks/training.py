"""Attack primitives used at training time: the inner maximisations of adversarial-training defenses.

Plain functions in the adv_lib style (tensors in, tensors out; a model or forward function, a batch and a
threat), so that every defense crafts its points through one home instead of private copies:

- :func:`pgd_examples`: CE-PGD with weights frozen (PGD-AT, AT-AWP, H-SAT at λ = 1).
- :func:`trades_kl_attack` / :func:`trades_examples`: TRADES's KL-PGD (TRADES, TRADES-AWP, RAT).
- :func:`curriculum_pgd`: CE-PGD with per-sample early termination (P-SAT, DAT).
- :func:`pgd_per_sample_eps`: PGD with a radius and step per sample (MMA, CAT).
- :func:`pgd1_point`: one noisy steepest-ascent step (SOAR's and FOAR's expansion point).

:class:`TrainingAttackOptions` holds the option fields every PGD-style inner attack shares and resolves the
step size in one place. Nothing here is registered as an evaluation attack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.pgd import ascent_step, pgd_perturb, random_init
from advbench.core.passes import frozen
from advbench.core.tensors import per_sample
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: a model or any function from inputs to logits (e.g. a forward at perturbed weights)
Forward = Callable[[torch.Tensor], torch.Tensor]
#: a per-sample mask from (a batch's logits or perturbation, labels or input gradient) -> [B] bool
MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def training_step_size(threat: ThreatModel, step_size: float | None, steps: int = 1, l2_rule: str = "eps/4") -> float:
    """The inner-maximisation step size: ``step_size`` if given, else eps/4 (2/255 at Linf 8/255,
    :meth:`ThreatModel.default_step`); for L2 with ``l2_rule="2eps/K"`` the TRADES code's SGD learning
    rate 2·eps/steps. The one place a training attack's default step is decided."""
    if step_size is not None:
        return float(step_size)
    if threat.norm == "l2" and l2_rule == "2eps/K":
        return 2.0 * threat.eps / max(1, steps)
    return threat.default_step()


@dataclass
class TrainingAttackOptions:
    """The option fields every PGD-style inner attack of a defense shares: ``steps`` (10) and ``step_size``
    (None = eps/4, see :func:`training_step_size`). The start (``init``/``init_std``) and the BatchNorm
    mode (``attack_bn_mode``) stay with each defense: their allowed values and defaults differ per method.

    A defense whose options list other fields before these keeps that order (stored configs and
    ``describe()`` show fields in declaration order) by naming its leading fields' dataclass after this
    one in its bases: dataclass fields follow the reversed MRO, so
    ``class X(TrainingAttackOptions, Lead)`` lists Lead's fields, then steps and step_size, then X's own.
    """

    steps: int = 10
    step_size: float | None = None

    def step(self, threat: ThreatModel, l2_rule: str = "eps/4") -> float:
        """The resolved step size under ``threat`` (see :func:`training_step_size`)."""
        return training_step_size(threat, self.step_size, self.steps, l2_rule)

    def check_attack(self, name: str) -> None:
        """Raise a one-line UserError unless steps ≥ 0 and the step size (if set) is > 0."""
        if self.steps < 0:
            raise UserError(f"{name} steps must be >= 0, got {self.steps}")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError(f"{name} step_size must be > 0, got {self.step_size}")


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int,
                 alpha: float, init: str, restarts: int, bn_mode: str) -> torch.Tensor:
    """Training-time CE-PGD examples (Madry et al. 2018; max-loss over restarts as in Rice et al. 2020) with
    the weights frozen and BatchNorm in ``bn_mode``; the model's modes are restored afterwards."""
    with frozen(model, bn_mode):
        return pgd_perturb(model, x, y, threat, steps=steps, alpha=alpha, init=init, restarts=restarts,
                           select="max-loss" if restarts > 1 else "last")


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


def trades_examples(model: nn.Module, x: torch.Tensor, threat: ThreatModel, *, steps: int, alpha: float,
                    init_std: float, init_clamp: bool, bn_mode: str) -> torch.Tensor:
    """TRADES adversarial examples for ``model`` with weights frozen and BatchNorm in ``bn_mode``."""
    with frozen(model, bn_mode):
        return trades_kl_attack(model, x, threat, steps=steps, alpha=alpha, init_std=init_std, clamp_init=init_clamp)


def curriculum_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int,
                   alpha: float, init: str = "uniform", logit_mask: MaskFn | None = None,
                   grad_mask: MaskFn | None = None, permanent: bool = True,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CE-PGD with early termination (SAT Eq. 10 by early termination, Alg. 1): returns (x′, steps taken).

    Before each step, ``logit_mask(logits, y)`` (P-SAT) and/or ``grad_mask(delta, grad)`` (DAT) say which
    samples may still move; the others keep their current point. With ``permanent`` (eval-mode BN, where a
    stopped sample's check cannot change) stopped samples leave the forward batch; otherwise the mask is
    recomputed over the whole batch each step. With every sample always allowed this is exactly
    :func:`advbench.attacks.pgd.pgd_perturb` with ``select="last"`` (same random start, same arithmetic).
    """
    delta = random_init(x, threat, init, generator)
    live = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(steps):
        whole = bool(live.all())
        li = None if whole else live.nonzero().squeeze(1)
        xs, ys = (x, y) if whole else (x[li], y[li])
        ds = (delta if whole else delta[li]).detach().requires_grad_(True)
        logits = model(xs + ds)
        ok = torch.ones(xs.shape[0], dtype=torch.bool, device=x.device)
        if logit_mask is not None:
            ok &= logit_mask(logits.detach(), ys)
        if not bool(ok.any()):
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, ys, reduction="none").sum(), ds)
        ds = ds.detach()
        if grad_mask is not None:
            ok &= grad_mask(ds, grad)
            if not bool(ok.any()):
                break
        new = ascent_step(ds, grad, threat, alpha)
        new = (xs + new).clamp(0, 1) - xs
        new = torch.where(per_sample(ok, new), new, ds)
        if whole:
            delta = new
            taken += ok.long()
        else:
            delta = delta.clone()
            delta[li] = new
            taken[li] += ok.long()
        if permanent:
            if whole:
                live = ok.clone()
            else:
                live[li] = ok
            if not bool(live.any()):
                break
    return (x + delta).detach(), taken


def project_ball(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` onto its own ball of radius ``eps[i]`` (Linf box or L2 sphere)."""
    e = per_sample(eps.to(delta.dtype), delta)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, e), -e)
    n = per_sample(delta.flatten(1).norm(dim=1), delta)
    return delta * torch.clamp(e / n.clamp_min(1e-12), max=1.0)


def _per_sample_start(x: torch.Tensor, eps: torch.Tensor, norm: str, init: str,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Random start of :func:`pgd_per_sample_eps`: uniform in each sample's ball (``uniform``) or 0 (``zero``),
    clamped so that x + δ is in [0, 1]."""
    if init != "uniform":
        delta = torch.zeros_like(x)
    elif norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (2 * u - 1) * per_sample(eps.to(x.dtype), x)
    else:
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = d / per_sample(d.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        delta = d * per_sample(r * eps.to(x.dtype), x)
    return (x + delta).clamp(0, 1) - x


def pgd_per_sample_eps(forward: Forward, x: torch.Tensor, eps: torch.Tensor, norm: str, *, steps: int,
                       step: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                       init: str = "uniform", generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD where sample i has its own radius ``eps[i]`` and step ``step[i]`` (MMA's ANPGD, CAT's per-sample ε).

    Ascends Σ_i loss_fn(logits)_i; Linf sign steps or L2 normalised-gradient steps, projection onto each
    ball, clamping to [0, 1]. ``init``: ``uniform`` (in the ball) or ``zero``. Returns detached x + δ.
    """
    delta = _per_sample_start(x, eps, norm, init, generator)
    s = per_sample(step.to(x.dtype), x)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(forward(x + delta)).sum(), delta)
        with torch.no_grad():
            if norm == "linf":
                delta = delta + s * grad.sign()
            else:
                delta = delta + s * grad / per_sample(grad.flatten(1).norm(dim=1).clamp_min(1e-12), x)
            delta = project_ball(delta, eps, norm)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


#: SOAR's expansion points x' (:func:`pgd1_point`): (noise, step, ball) as fractions of eps
INIT_FRACTIONS: dict[str, tuple[float, float, float]] = {
    "pgd1-half": (0.5, 0.5, 0.5),  # Sec. 4.1 text: eps/2 for PGD1 and eps/2 in the regularizer (default)
    "pgd1-full": (1.0, 1.0, 1.0),  # Algorithm 1 as printed
    "pgd1-code": (1.0, 0.25, 1.0),  # averyma/test-bench data_init("pgd1"): U(±8/255), 2/255 step, 8/255 ball
    "rand": (1.0, 0.0, 1.0),  # noise only (Table 5/7 gradient-masking ablation)
    "zero": (0.0, 0.0, 0.0),  # x' = x (Table 5/7 ablation)
}


def pgd1_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
               fractions: tuple[float, float, float], *, bn_mode: str = "eval",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One noisy CE-ascent step (SOAR Algorithm 1 lines 1-2): uniform noise, one steepest-ascent step,
    projection onto the ball and [0, 1]; weights frozen, BatchNorm in ``bn_mode``. ``fractions`` are the
    (noise, step, ball) sizes as fractions of eps; a zero step takes no gradient (no forward)."""
    noise, step, ball = (f * threat.eps for f in fractions)
    x = x.detach()
    if noise > 0:
        delta = random_init(x, dataclasses.replace(threat, eps=noise), "uniform", generator)
    else:
        delta = torch.zeros_like(x)
    if step > 0:
        with frozen(model, bn_mode):
            xr = (x + delta).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="none").sum(), xr)
        delta = ascent_step(delta, g, dataclasses.replace(threat, eps=ball), step)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()
