"""Diagnostics that papers print as tables (evaluation spec A12): statistics of the model at perturbed inputs.

They run like attacks (a suite entry, a stored result, the accuracy at the perturbed inputs) and store their
statistic in the result's ``summary``, which a paper grid's column reads (``ColumnRecipe.value``):

- ``confidence`` (SOAR Table 5): the mean over test images of the largest softmax probability (%) at the clean
  input (``perturb=none``), at a uniform random point of the eps box/ball (``random``) or after one signed-gradient
  step of size eps (``pgd1``, the one-step PGD of SOAR's Table 5; L2: the normalised gradient).
- ``adv-loss`` (SOAR Table 4): the cross-entropy at PGD's adversarial point (``steps`` of PGD, step eps/4 unless
  set), as a mean over images and a sum per batch of ``sum_batch`` images (the paper does not say which).
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
