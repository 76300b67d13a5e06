"""Projected gradient descent (Madry et al. 2018) in Linf and L2, and FGSM.

``pgd_perturb`` is the shared primitive used by evaluation attacks and by adversarial training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from advbench.attacks.base import ATTACKS, Attack, renorm_l2
from advbench.attacks.losses import LOSSES
from advbench.threat import ThreatModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        r = _rand(torch.Size([x.shape[0]]), x, generator, normal=False).view(-1, *([1] * (x.dim() - 1)))
        delta = d * r * threat.eps
    return (x + delta).clamp(0, 1) - x


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, threat: ThreatModel, alpha: float) -> torch.Tensor:
    """One steepest-ascent step of size ``alpha`` in the threat's norm, then projection onto the ball."""
    if threat.norm == "linf":
        return (delta + alpha * grad.sign()).clamp(-threat.eps, threat.eps)
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
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
    select: Literal["misclassified", "max-loss", "last"] = "misclassified",
    targeted: bool = False,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run PGD from ``x`` and return adversarial images (x + delta, in [0, 1] and in the ball).

    ``loss`` is a name in ``LOSSES`` or a per-sample function of (logits, labels); gradients use the sum
    over the batch, so each sample gets its own input gradient. With ``targeted`` the loss to ``target``
    is minimised. Selection per sample across iterates and restarts:

    - ``misclassified`` (evaluation): keep the first iterate that is misclassified (any restart);
      restarts only re-attack samples that are still correct.
    - ``max-loss`` (training, Rice et al.): keep the final iterate with the highest loss over restarts.
    - ``last``: the last iterate of the last restart.
    """
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
    labels = target if targeted else y
    if targeted and target is None:
        raise ValueError("targeted PGD needs a target")
    sign = -1.0 if targeted else 1.0
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(max(1, restarts)):
        active = ~fooled if select == "misclassified" else torch.ones_like(fooled)
        if not active.any():
            break
        idx = active.nonzero().squeeze(1)
        xa, ya, la = x[idx], y[idx], labels[idx]
        delta = random_init(xa, threat, init, generator)
        found = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
        found_x = xa.clone()
        for _step in range(steps):
            delta.requires_grad_(True)
            logits = model(xa + delta)
            per_sample = sign * loss_fn(logits, la)
            (grad,) = torch.autograd.grad(per_sample.sum(), delta)
            if select == "misclassified":
                with torch.no_grad():
                    wrong = (logits.argmax(1) != ya) & ~found
                    found_x[wrong] = (xa + delta)[wrong].detach()
                    found |= wrong
            delta = ascent_step(delta.detach(), grad, threat, alpha)
            delta = (xa + delta).clamp(0, 1) - xa
        x_final = (xa + delta).detach()
        if select == "misclassified":
            with torch.no_grad():
                wrong = (model(x_final).argmax(1) != ya) & ~found
            found_x[wrong] = x_final[wrong]
            found |= wrong
            # samples never fooled keep the last iterate of the latest restart
            out = torch.where(found.view(-1, *([1] * (x.dim() - 1))), found_x, x_final)
            best[idx] = out
            fooled[idx] = found
        elif select == "max-loss":
            with torch.no_grad():
                final_loss = sign * loss_fn(model(x_final), la)
            better = final_loss > best_loss[idx]
            best[idx[better]] = x_final[better]
            best_loss[idx[better]] = final_loss[better]
        else:
            best[idx] = x_final
    return best


@dataclass
class PGDOptions:
    """Options of the ``pgd`` attack (step size defaults to eps/4, i.e. 2/255 at 8/255)."""

    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    loss: Literal["ce", "cw", "dlr"] = "ce"
    kappa: float = 50.0
    init: Literal["uniform", "zero", "normal"] = "uniform"
    select: Literal["misclassified", "last"] = "misclassified"


@ATTACKS.register("pgd", help="PGD-k (Linf/L2) with random start and restarts; CE, CW or DLR loss")
class PGD(Attack):
    """Projected gradient ascent on a per-sample loss (Madry et al. 2018)."""

    name = "pgd"
    Options = PGDOptions

    def perturb(self, model, x, y, generator=None):
        """Run PGD with the configured steps, step size, start and restarts."""
        o = self.options
        alpha = o.step_size if o.step_size is not None else self.threat.default_step()
        if o.loss == "cw":
            from advbench.attacks.losses import cw_loss

            loss: str | LossFn = lambda z, t: cw_loss(z, t, o.kappa)  # noqa: E731
        else:
            loss = o.loss
        return pgd_perturb(model, x, y, self.threat, steps=o.steps, alpha=alpha, loss=loss, init=o.init,
                           restarts=o.restarts, select=o.select, generator=generator)


@dataclass
class FGSMOptions:
    """Options of ``fgsm``: an optional random start (RS-FGSM) of size ``init_eps``."""

    random_start: bool = False


@ATTACKS.register("fgsm", help="Fast gradient sign method (one step of size eps; L2: normalized gradient)")
class FGSM(Attack):
    """x + eps·sign(∇x CE) (Goodfellow et al. 2015), clipped to [0, 1]."""

    name = "fgsm"
    Options = FGSMOptions

    def perturb(self, model, x, y, generator=None):
        """One ascent step of the full budget from x (or a uniform random start)."""
        init = "uniform" if self.options.random_start else "zero"
        return pgd_perturb(model, x, y, self.threat, steps=1, alpha=self.threat.eps, init=init, select="last",
                           generator=generator)
