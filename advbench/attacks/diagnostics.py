"""Diagnostics that papers print as tables (evaluation spec A12): statistics of the model at perturbed inputs.

They run like attacks (a suite entry, a stored result, the accuracy at the perturbed inputs) and store their
statistic in the result's ``summary``, which a paper grid's column reads (``ColumnRecipe.value``):

- ``confidence`` (SOAR Table 5): the mean over test images of the largest softmax probability (%) at the clean
  input (``perturb=none``), at a uniform random point of the eps box/ball (``random``) or after one signed-gradient
  step of size eps (``pgd1``, the one-step PGD of SOAR's Table 5; L2: the normalised gradient).
- ``adv-loss`` (SOAR Table 4): the cross-entropy at PGD's adversarial point (``steps`` of PGD, step eps/4 unless
  set), as a mean over images and a sum per batch of ``sum_batch`` images (the paper does not say which).
- ``soar-loss`` (SOAR Table 8): SOAR's regularized loss ℓ(x', y) + λ·R(x'; z, h) (its Eq. 11, the Hessian-vector
  product by forward differences) at the PGD1 expansion point x', R averaged over ``n_z`` draws of z. It evaluates
  the defense's objective on its own (the defense's training code is not used), so a test can hold both to the
  exact Hessian.
- ``grad-norm`` (gradient-reg Table 3): mean and max over images of ``‖∇ℓ(x)‖₂`` for Finlay and Oberman's modified
  loss on softmax probabilities, ℓ(x) = max_{i≠c} p_i(x) − p_c(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from advbench.attacks.base import ATTACKS, Attack, Perturbation, project, renorm_l2
from advbench.attacks.pgd import PGDOptions, input_grad, run_pgd_options
from advbench.core.tensors import per_sample, per_sample_dot, per_sample_norm
from advbench.errors import UserError


def _mean_std(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var)}


@dataclass
class ConfidenceOptions:
    """Where the model is read: ``none`` (clean), ``random`` (uniform in the eps box / ball) or ``pgd1``."""

    perturb: Literal["none", "random", "pgd1"] = "none"


@ATTACKS.register("confidence", help="Diagnostic: mean max softmax probability (%) at clean, random or one-step "
                  "PGD inputs (SOAR Table 5)")
class Confidence(Attack):
    """The model's confidence at (perturbed) test inputs; accuracy is measured at the same inputs."""

    Options = ConfidenceOptions

    def perturb_ex(self, model, x, y, generator=None):
        """The perturbed inputs and each image's max softmax probability there."""
        mode, t = self.options.perturb, self.threat
        if mode == "none":
            x_adv = x
        elif mode == "random":
            noise = torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2 - 1
            if t.norm == "l2":  # a uniform direction scaled uniformly in radius: a point of the ball
                flat = torch.randn(x.shape, generator=generator, device="cpu").to(x).flatten(1)
                flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
                radius = torch.rand(x.shape[0], generator=generator, device="cpu").to(x) ** (1 / flat.shape[1])
                noise = (flat * radius[:, None]).view_as(x)
            x_adv = project((x + t.eps * noise).clamp(0, 1), x, t)
        else:
            x_req = x.clone().requires_grad_(True)
            grad = input_grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
            step = grad.sign() if t.norm == "linf" else renorm_l2(grad * 1e12, 1.0)
            x_adv = project((x + t.eps * step).clamp(0, 1), x, t)
        with torch.no_grad():
            prob = F.softmax(model(x_adv), dim=1).amax(dim=1)
        return Perturbation(x_adv.detach(), per_sample={"max_prob": [float(p) for p in prob]})

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean and std over images of the max softmax probability, in percent."""
        stats = _mean_std([100.0 * p for p in per_sample.get("max_prob", [])])
        return {"mean_max_prob": stats["mean"], "std_max_prob": stats["std"]}


@dataclass
class AdvLossOptions:
    """PGD's steps and step size (default eps/4), and the batch size the per-batch sum is taken over."""

    steps: int = 20
    step_size: float | None = None
    sum_batch: int = 128

    def validate(self) -> None:
        """At least one step and a positive batch."""
        if self.steps < 1 or self.sum_batch < 1:
            raise UserError("adv-loss steps and sum_batch must be >= 1")


@ATTACKS.register("adv-loss", help="Diagnostic: cross-entropy at PGD's adversarial point, mean and per-batch sum "
                  "(SOAR Table 4)")
class AdvLoss(Attack):
    """The loss the adversary reaches: CE at a PGD-k point (uniform start, last iterate)."""

    Options = AdvLossOptions

    def perturb_ex(self, model, x, y, generator=None):
        """PGD's last iterate and each image's CE there."""
        o = self.options
        opts = PGDOptions(steps=o.steps, step_size=o.step_size, select="last")
        x_adv = run_pgd_options(model, x, y, self.threat, opts, generator)
        with torch.no_grad():
            loss = F.cross_entropy(model(x_adv), y, reduction="none")
        return Perturbation(x_adv, per_sample={"loss": [float(v) for v in loss]},
                            info={"sum_batch": o.sum_batch})

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean CE over images and its sum over ``sum_batch`` images (mean x sum_batch)."""
        losses = per_sample.get("loss", [])
        batch = int(info[0].get("sum_batch", 128)) if info else 128
        mean = sum(losses) / len(losses) if losses else None
        return {"loss_mean": mean, "loss_sum_per_batch": None if mean is None else mean * batch, "sum_batch": batch}


def modified_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Finlay and Oberman's loss on softmax probabilities: max_{i≠y} p_i − p_y (per image; > 0 iff misclassified)."""
    p = F.softmax(logits, dim=1)
    p_true = p.gather(1, y[:, None]).squeeze(1)
    others = p.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - p_true


@ATTACKS.register("grad-norm", help="Diagnostic: mean and max of the L2 input-gradient norm of the modified loss "
                  "max_{i!=c} p_i - p_c (gradient-reg Table 3)")
class GradNorm(Attack):
    """‖∇ₓℓ(x)‖₂ per image at the clean input (no perturbation: the accuracy is the clean accuracy)."""

    def perturb_ex(self, model, x, y, generator=None):
        """The clean images and each one's gradient norm."""
        x_req = x.clone().requires_grad_(True)
        grad = input_grad(modified_loss(model(x_req), y).sum(), x_req)
        return Perturbation(x, per_sample={"grad_norm": [float(v) for v in grad.flatten(1).norm(dim=1)]})

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean and max over images."""
        norms = per_sample.get("grad_norm", [])
        return {"grad_norm_mean": sum(norms) / len(norms) if norms else None,
                "grad_norm_max": max(norms) if norms else None}


@dataclass
class SoarLossOptions:
    """n_z: draws of z averaged in R (Table 8: 1, 10, 100); h, lam, init: SOAR's FD step, weight and expansion
    point (its defaults; the regularizer's radius is eps/2 with pgd1-half and eps otherwise, as in training)."""

    n_z: int = 1
    h: float = 0.01
    lam: float = 1.0
    init: str = "pgd1-half"

    def validate(self) -> None:
        """n_z >= 1, h > 0, lam >= 0, a known init."""
        from advbench.attacks.training import INIT_FRACTIONS

        if self.n_z < 1 or not self.h > 0 or self.lam < 0:
            raise UserError("soar-loss needs n_z >= 1, h > 0 and lam >= 0")
        if self.init not in INIT_FRACTIONS:
            raise UserError(f"soar-loss init must be one of {', '.join(INIT_FRACTIONS)}, got {self.init!r}")


def _ce_grad(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image CE and its input gradient (of the summed loss: each image's own gradient)."""
    xr = x.detach().clone().requires_grad_(True)
    ce = F.cross_entropy(model(xr), y, reduction="none")
    return ce.detach(), input_grad(ce.sum(), xr)


@ATTACKS.register("soar-loss", help="Diagnostic: SOAR's regularized loss l(x') + lam*R(x'; z, h), R averaged over "
                  "n_z draws of z (SOAR Table 8)")
class SoarLoss(Attack):
    """Per image ℓ(x', y) + λ·R(x'; z, h) at SOAR's expansion point x' (z drawn from the attack's generator)."""

    Options = SoarLossOptions

    def perturb_ex(self, model, x, y, generator=None):
        """The expansion points and each image's regularized loss there."""
        from advbench.attacks.training import INIT_FRACTIONS, pgd1_point

        o, t = self.options, self.threat
        xp = pgd1_point(model, x, y, t, INIT_FRACTIONS[o.init], generator=generator)
        reg_eps = t.eps / 2 if o.init == "pgd1-half" else t.eps
        factor = 0.5 * ((xp[0].numel() if t.norm == "linf" else 1) * reg_eps**2 + 1.0)
        ce, g = _ce_grad(model, xp, y)
        reg = torch.zeros_like(ce)
        for _ in range(o.n_z):
            z_d = torch.randn(xp.shape, generator=generator, device="cpu").to(xp)
            z_1 = torch.randn(xp.shape[0], generator=generator, device="cpu").to(xp)
            norm = per_sample(per_sample_norm(z_d, 2), z_d)
            hv = (_ce_grad(model, xp + o.h * z_d / norm, y)[1] - g) / o.h  # H ẑ_d by forward differences (Eq. 10)
            top = norm * hv + per_sample(z_1, g) * g
            bot = per_sample_dot(g, z_d) + z_1
            reg = reg + factor * torch.cat([top.flatten(1), bot[:, None]], dim=1).norm(dim=1)
        value = ce + o.lam * reg / o.n_z
        return Perturbation(xp, per_sample={"soar_loss": [float(v) for v in value]})

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Mean over images of the regularized loss."""
        values = per_sample.get("soar_loss", [])
        return {"soar_loss_mean": sum(values) / len(values) if values else None}
