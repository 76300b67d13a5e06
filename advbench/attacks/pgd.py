"""Projected gradient descent (Madry et al. 2018) in Linf and L2, FGSM, and CW-inf (PGD on the CW margin).

``pgd_perturb`` is the shared primitive used by evaluation attacks and by adversarial training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.attacks.base import ATTACKS, SCALE_FREE_LOSSES, Attack, renorm_l2
from advbench.attacks.losses import LossFn, get_loss
from advbench.core.tensors import per_sample
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: how PGD picks each sample's result across iterates and restarts:
#:
#: - ``misclassified`` (evaluation): keep the first iterate that is misclassified (any restart); restarts only
#:   re-attack samples that are still correct, and a fooled sample leaves the batch (its passes are saved).
#:   Assumes independent samples: an eval-mode model (train-mode BN couples the batch; training-time attacks
#:   use ``last`` or ``max-loss``).
#: - ``max-loss`` (training, Rice et al.): keep the final iterate with the highest loss over restarts.
#: - ``best-loss`` (``use_best`` of the ``robustness`` library): the iterate with the best objective over all
#:   steps and restarts.
#: - ``last``: the last iterate of the last restart.
Select = Literal["misclassified", "max-loss", "last", "best-loss"]


def _rand(shape: torch.Size, x: torch.Tensor, generator: torch.Generator | None, normal: bool) -> torch.Tensor:
    if normal:
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def random_init(x: torch.Tensor, threat: ThreatModel, init: str,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial perturbation: ``uniform`` in the ball (Linf box; L2: random direction, radius U(0,1)·eps),
    ``normal`` (0.001·N(0,1), TRADES) or ``zero``; clipped so that x + delta is in [0, 1]."""
    if init == "zero":
        delta = torch.zeros_like(x)
    elif init == "normal":
        delta = 0.001 * _rand(x.shape, x, generator, normal=True)
    elif threat.norm == "linf":
        delta = (2 * _rand(x.shape, x, generator, normal=False) - 1) * threat.eps
    else:
        d = _rand(x.shape, x, generator, normal=True)
        d = d / per_sample(d.flatten(1).norm(dim=1).clamp_min(1e-12), x)
        r = per_sample(_rand(torch.Size([x.shape[0]]), x, generator, normal=False), x)
        delta = d * r * threat.eps
    return (x + delta).clamp(0, 1) - x


def input_grad(out: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """d out / d wrt for a scalar ``out``; zeros where no gradient reaches ``wrt`` (a model whose output carries no
    gradient, e.g. a numpy preprocessing step, gets zero gradients instead of an error: the checks flag it)."""
    if not out.requires_grad:
        return torch.zeros_like(wrt)
    (grad,) = torch.autograd.grad(out, wrt, allow_unused=True)
    return torch.zeros_like(wrt) if grad is None else grad


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, threat: ThreatModel, alpha: float) -> torch.Tensor:
    """One steepest-ascent step of size ``alpha`` in the threat's norm, then projection onto the ball."""
    if threat.norm == "linf":
        return (delta + alpha * grad.sign()).clamp(-threat.eps, threat.eps)
    g_norm = per_sample(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
    return renorm_l2(delta + alpha * grad / g_norm, threat.eps)


def pgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    alpha: float,
    loss: str | LossFn = "ce",
    init: str = "uniform",
    restarts: int = 1,
    select: Select = "misclassified",
    targeted: bool = False,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    check_every: int | None = None,
) -> torch.Tensor:
    """Run PGD from ``x`` and return adversarial images (x + delta, in [0, 1] and in the ball).

    ``loss`` is a name in ``LOSSES`` or a per-sample function of (logits, labels); gradients use the sum
    over the batch, so each sample gets its own input gradient. With ``targeted`` the loss to ``target``
    is minimised (success is still judged against the true label ``y``). ``select`` picks each sample's
    result across iterates and restarts (see :data:`Select`). ``check_every``: steps between the host's
    early-exit checks of ``misclassified`` (default: :func:`check_interval`; the result does not depend on it).
    """
    loss_fn = get_loss(loss)
    if targeted and target is None:
        raise ValueError("targeted PGD needs a target")
    labels = target if (targeted and target is not None) else y
    sign = -1.0 if targeted else 1.0
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    n_restarts = max(1, restarts)
    for r in range(n_restarts):
        last_restart = r == n_restarts - 1
        active = ~fooled if select == "misclassified" else torch.ones_like(fooled)
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        everyone = len(idx) == x.shape[0]
        xa, ya, la = (x, y, labels) if everyone else (x[idx], y[idx], labels[idx])
        delta = random_init(xa, threat, init, generator)
        if select == "misclassified":
            out, found = _pgd_until_misclassified(model, xa, ya, la, delta, threat, steps=steps, alpha=alpha,
                                                  loss_fn=loss_fn, sign=sign, check_final=not last_restart,
                                                  check_every=check_every)
            best[idx] = out
            fooled[idx] = found
            continue
        x_final, final_loss = _pgd_run(model, xa, la, delta, threat, steps=steps, alpha=alpha, loss_fn=loss_fn,
                                       sign=sign, select=select)
        if select in ("max-loss", "best-loss"):
            better = final_loss > best_loss[idx]
            best[idx[better]] = x_final[better]
            best_loss[idx[better]] = final_loss[better]
        else:
            best[idx] = x_final
    return best


def _pgd_run(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, threat: ThreatModel, *,
             steps: int, alpha: float, loss_fn: LossFn, sign: float, select: Select
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One PGD run of ``steps`` steps from ``x + delta``; returns (images, their loss or None).

    ``best-loss`` returns the iterate with the highest loss over all steps (the final one included),
    ``max-loss`` the final iterate with its loss, ``last`` the final iterate alone."""
    run_best = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    run_best_x = x.clone() if select == "best-loss" else x
    for _step in range(steps):
        delta.requires_grad_(True)
        sample_loss = sign * loss_fn(model(x + delta), labels)
        grad = input_grad(sample_loss.sum(), delta)
        if select == "best-loss":
            with torch.no_grad():
                better = sample_loss > run_best
                run_best_x = torch.where(per_sample(better, x), x + delta, run_best_x)
                run_best = torch.where(better, sample_loss, run_best)
        delta = ascent_step(delta.detach(), grad, threat, alpha)
        delta = (x + delta).clamp(0, 1) - x
    x_final = (x + delta).detach()
    if select not in ("max-loss", "best-loss"):
        return x_final, None
    with torch.no_grad():
        final_loss = sign * loss_fn(model(x_final), labels)
    if select == "max-loss":
        return x_final, final_loss
    better = final_loss > run_best
    return torch.where(per_sample(better, x), x_final, run_best_x), torch.where(better, final_loss, run_best)


#: how often evaluation PGD asks the device which samples are fooled (a host sync): every step on a CPU, where
#: the sync is free and dropping fooled samples at once saves their passes; every few steps on an accelerator,
#: where each sync stalls the queue. The result is the same for every value (see :func:`_pgd_until_misclassified`).
CHECK_EVERY = {"cpu": 1}
CHECK_EVERY_ACCELERATOR = 5


def check_interval(device: torch.device) -> int:
    """Steps between the early-exit checks of evaluation PGD on ``device`` (see :data:`CHECK_EVERY`)."""
    return CHECK_EVERY.get(device.type, CHECK_EVERY_ACCELERATOR)


def _pgd_until_misclassified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor,
                             delta: torch.Tensor, threat: ThreatModel, *, steps: int, alpha: float, loss_fn: LossFn,
                             sign: float, check_final: bool, check_every: int | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run that keeps each sample's first misclassified iterate and stops computing for it there.

    Samples are independent (per-sample losses, eval-mode model), so dropping the fooled ones from the
    batch changes nothing for the others; it only saves their forward and backward passes. Returns the
    images (first misclassified iterate, else the last iterate) and which samples were fooled; the
    last iterate is checked only when ``check_final`` (a later restart needs to know).

    Which samples are fooled is recorded on the device at every step (each sample's first misclassified
    iterate is kept with ``torch.where``); the host looks at it, and drops the fooled samples from the
    batch, only every ``check_every`` steps (default :func:`check_interval` of the device) and at the last
    step. A fooled sample rides along until the next check; its kept iterate does not change, so the
    result is the same for every ``check_every``.
    """
    k = max(1, check_every if check_every is not None else check_interval(x.device))
    out = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    live = torch.arange(x.shape[0], device=x.device)
    xl, yl, ll, dl = x, y, labels, delta
    first = x.clone() if k > 1 else x  # per live sample: its first misclassified iterate since the last check
    hit_l = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # fooled since the last check
    for step in range(steps):
        dl.requires_grad_(True)
        logits = model(xl + dl)
        grad = input_grad((sign * loss_fn(logits, ll)).sum(), dl)
        dl = dl.detach()
        with torch.no_grad():
            wrong = logits.argmax(1) != yl
            check = (step + 1) % k == 0 or step == steps - 1
            if k > 1:  # remember each sample's first misclassified iterate on the device until the next check
                new = wrong & ~hit_l
                hit_l = hit_l | wrong
                first = torch.where(per_sample(new, xl), xl + dl, first)
            if check:
                done = wrong if k == 1 else hit_l
                if bool(done.any()):  # the one host sync of the interval
                    hit = live[done]
                    out[hit] = xl[done] + dl[done] if k == 1 else first[done]
                    found[hit] = True
                    keep = ~done
                    live, xl, yl, ll, dl, grad = live[keep], xl[keep], yl[keep], ll[keep], dl[keep], grad[keep]
                    if k > 1:
                        first, hit_l = first[keep], torch.zeros_like(hit_l[keep])
                    if len(live) == 0:
                        return out, found
                elif k > 1:
                    hit_l = torch.zeros_like(hit_l)
        dl = ascent_step(dl, grad, threat, alpha)
        dl = (xl + dl).clamp(0, 1) - xl
    x_final = (xl + dl).detach()
    out[live] = x_final
    if check_final and len(live):
        with torch.no_grad():
            found[live] = model(x_final).argmax(1) != yl
    return out, found


def pick_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, how: str, target_class: int | None,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Target labels: ``random`` (uniform over the classes other than y), ``least-likely`` or ``class``."""
    with torch.no_grad():
        logits = model(x)
    k = logits.shape[1]
    if how == "random":
        if k < 2:
            raise UserError("a random target needs at least 2 classes")
        where = generator.device if generator is not None else y.device
        shift = torch.randint(1, k, y.shape, generator=generator, device=where).to(y.device)
        return (y + shift) % k
    if how == "least-likely":
        return logits.argmin(1)
    if target_class is None or not 0 <= target_class < k:
        raise UserError(f"target=class needs target_class in 0..{k - 1}, got {target_class}")
    return torch.full_like(y, target_class)


@dataclass
class PGDOptions:
    """Options of the ``pgd`` attack (step size defaults to eps/4, i.e. 2/255 at 8/255).

    ``loss``: ce, cw (margin ``kappa``), dlr, margin (unclamped logit margin), log-margin (SCORPIO M).
    ``target``: none (untargeted), random (uniform over wrong classes), least-likely, or class
    (``target_class``); targeted PGD minimises the loss to the target, success is judged against y.
    """

    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    loss: Literal["ce", "cw", "dlr", "margin", "log-margin"] = "ce"
    kappa: float = 50.0
    init: Literal["uniform", "zero", "normal"] = "uniform"
    select: Literal["misclassified", "last", "best-loss"] = "misclassified"
    target: Literal["none", "random", "least-likely", "class"] = "none"
    target_class: int | None = None

    def validate(self) -> None:
        """Steps and restarts must be >= 1; a step size > 0."""
        if self.steps < 1 or self.restarts < 1:
            raise UserError("pgd steps and restarts must be >= 1")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("pgd step_size must be > 0")


def run_pgd_options(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, o: PGDOptions,
                    generator: torch.Generator | None) -> torch.Tensor:
    """PGD with the settings in ``o`` (targets drawn from ``generator`` when ``o.target`` asks for them)."""
    alpha = o.step_size if o.step_size is not None else threat.default_step()
    loss = get_loss(o.loss, o.kappa)
    target = None if o.target == "none" else pick_targets(model, x, y, o.target, o.target_class, generator)
    return pgd_perturb(model, x, y, threat, steps=o.steps, alpha=alpha, loss=loss, init=o.init,
                       restarts=o.restarts, select=o.select, targeted=target is not None, target=target,
                       generator=generator)


@ATTACKS.register("pgd", help="PGD-k (Linf/L2), random start, restarts; ce/cw/dlr/margin loss; untargeted or targeted")
class PGD(Attack):
    """Projected gradient ascent on a per-sample loss (Madry et al. 2018)."""

    Options = PGDOptions

    def perturb(self, model, x, y, generator=None):
        """Run PGD with the configured loss, target, steps, step size, start and restarts."""
        return run_pgd_options(model, x, y, self.threat, self.options, generator)

    @classmethod
    def suited_to(cls, options, summary):
        """Saturated logits, with a scale-free loss (cw, dlr, margin, log-margin)."""
        return {"saturated"} if options.get("loss") in SCALE_FREE_LOSSES else set()


@dataclass
class CWInfOptions:
    """CW-inf ("CW-20", Randomized-AT ``eval_attack.py``): PGD on -clamp(z_y - max_{j!=y} z_j + kappa, 0)."""

    steps: int = 20
    step_size: float | None = None
    kappa: float = 50.0
    restarts: int = 1
    init: Literal["uniform", "zero", "normal"] = "uniform"
    select: Literal["misclassified", "last", "best-loss"] = "misclassified"

    def validate(self) -> None:
        """Steps and restarts must be >= 1; a step size > 0."""
        if self.steps < 1 or self.restarts < 1:
            raise UserError("cw-inf steps and restarts must be >= 1")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("cw-inf step_size must be > 0")


@ATTACKS.register("cw-inf", help="CW-inf: PGD on the CW margin loss with kappa=50 (the Randomized-AT paper's CW-20)",
                  aliases=("cw", "cw20"))
class CWInf(Attack):
    """PGD ascent of -clamp(margin + kappa, 0): the gradient vanishes once the margin is below -kappa."""

    Options = CWInfOptions

    def perturb(self, model, x, y, generator=None):
        """PGD on the CW margin loss."""
        o = self.options
        opts = PGDOptions(steps=o.steps, step_size=o.step_size, restarts=o.restarts, loss="cw", kappa=o.kappa,
                          init=o.init, select=o.select)
        return run_pgd_options(model, x, y, self.threat, opts, generator)

    @classmethod
    def suited_to(cls, options, summary):
        """Saturated logits (the CW margin needs no softmax)."""
        return {"saturated"}


@dataclass
class FGSMOptions:
    """Options of ``fgsm``: an optional random start (RS-FGSM) of size ``init_eps``."""

    random_start: bool = False


@ATTACKS.register("fgsm", help="Fast gradient sign method (one step of size eps; L2: normalized gradient)")
class FGSM(Attack):
    """x + eps·sign(∇x CE) (Goodfellow et al. 2015), clipped to [0, 1]."""

    Options = FGSMOptions

    def perturb(self, model, x, y, generator=None):
        """One ascent step of the full budget from x (or a uniform random start)."""
        init = "uniform" if self.options.random_start else "zero"
        return pgd_perturb(model, x, y, self.threat, steps=1, alpha=self.threat.eps, init=init,
                           select="last", generator=generator)
