"""``adaptive-pgd``: PGD adapted to gradient masking — EOT for randomized models, BPDA for gradient-breaking
components, scale-free losses (DLR, margin, CW) for saturated logits — with a deterministic verdict.

Each sample keeps its first iterate that the verdict calls misclassified (over steps and restarts). The
verdict is :class:`~advbench.attacks.eot.Verdict`: for a randomized model ``verdict_samples`` draws under a
seed fixed per evaluation batch, judged on the whole batch at every step (the batch's shape never
changes), so an image once counted as fooled stays fooled and the attack's result is that same verdict.
The attack's own randomness (random start, the model's noise in gradient passes) comes from a stream
seeded by (``seed``, batch index), not by the suite entry: PGD-k's first k steps are PGD-2k's, so with the
deterministic verdict accuracy is exactly non-increasing in steps and restarts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from advbench.attacks.base import ATTACKS, SCALE_FREE_LOSSES, Attack, Perturbation
from advbench.attacks.bpda import bpda_hooks, find_gradient_breakers, straight_through_ops
from advbench.attacks.eot import EOTAverage, Verdict, batch_verdict, eot_logits, is_randomized, seeded_model_rng
from advbench.attacks.losses import LossFn, get_loss, margin
from advbench.attacks.pgd import ascent_step, input_grad, random_init
from advbench.core.seeding import derived_seed
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: EOT draws per gradient when ``eot_samples=auto`` finds a randomized model
AUTO_EOT = 10
#: images used to look for gradient-breaking submodules (``bpda=auto``)
BPDA_PROBE = 32


@dataclass
class AdaptivePGDOptions:
    """PGD options plus the adaptations.

    ``eot_samples``: draws averaged per gradient (``auto``: 10 when two passes of the model differ, else 1);
    ``eot_average``: prob (log of the expected softmax) or logits (mean logit, for saturated logits);
    ``verdict_samples`` / ``verdict``: draws and rule (mean-prob or majority) of a randomized model's verdict;
    ``bpda``: auto (find gradient-breaking submodules; rounding ops inline get a straight-through gradient
    if gradients are still zero), none, ops (straight-through rounding ops), or dotted submodule paths
    (comma-separated); ``bpda_approx``: identity or the dotted path of a submodule approximating them;
    ``seed``: the attack's own random stream (with the batch index). ``dlr`` on fewer than 3 classes runs
    the margin loss (recorded).
    """

    steps: int = 100
    step_size: float | None = None
    restarts: int = 1
    loss: Literal["ce", "cw", "dlr", "margin", "log-margin"] = "ce"
    kappa: float = 50.0
    init: Literal["uniform", "zero", "normal"] = "uniform"
    eot_samples: int | Literal["auto"] = "auto"
    eot_average: Literal["prob", "logits"] = "prob"
    verdict_samples: int = 10
    verdict: Literal["mean-prob", "majority"] = "mean-prob"
    bpda: str = "auto"
    bpda_approx: str = "identity"
    seed: int = 0

    def validate(self) -> None:
        """Counts >= 1, a positive step size."""
        if self.steps < 1 or self.restarts < 1 or self.verdict_samples < 1:
            raise UserError("adaptive-pgd steps, restarts and verdict_samples must be >= 1")
        if self.eot_samples != "auto" and int(self.eot_samples) < 1:
            raise UserError("adaptive-pgd eot_samples must be >= 1 or auto")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("adaptive-pgd step_size must be > 0")


@dataclass
class _Plan:
    """The adaptations resolved for one batch."""

    randomized: bool
    eot_samples: int
    verdict_samples: int
    bpda_paths: list[str]
    bpda_ops: bool
    loss: str

    def info(self) -> dict[str, Any]:
        return {"randomized": self.randomized, "eot_samples": self.eot_samples,
                "verdict_samples": self.verdict_samples, "bpda": self.bpda_paths, "bpda_ops": self.bpda_ops,
                "loss": self.loss}


def _zero_margin_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of images whose logit-margin input gradient is exactly zero."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad = input_grad(margin(model(xg), y).sum(), xg)
    return float((grad.flatten(1).abs().sum(1) == 0).float().mean())


def _resolve_bpda(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bpda: str, approx: str) -> tuple[list[str], bool]:
    """(submodule paths, straight-through ops on?) for the ``bpda`` option."""
    spec = bpda.strip().lower()
    if spec == "none":
        return [], False
    if spec == "ops":
        return [], True
    if spec != "auto":
        return [p.strip() for p in bpda.split(",") if p.strip()], False
    xs, ys = x[:BPDA_PROBE], y[:BPDA_PROBE]
    paths = find_gradient_breakers(model, xs)
    with bpda_hooks(model, paths, approx):
        still_zero = _zero_margin_gradients(model, xs, ys) > 0.01
    return paths, still_zero


def adapted(model: nn.Module, paths: list[str], approx: str, ops: bool) -> contextlib.ExitStack:
    """A context with the BPDA hooks on ``paths`` and, if ``ops``, straight-through rounding ops."""
    stack = contextlib.ExitStack()
    if paths:
        stack.enter_context(bpda_hooks(model, paths, approx))
    if ops:
        stack.enter_context(straight_through_ops())
    return stack


def adaptive_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int,
                 alpha: float, loss_fn: LossFn, init: str, restarts: int, eot_samples: int, eot_average: EOTAverage,
                 verdict: Verdict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD keeping each sample's first iterate the verdict calls misclassified; (images, correct under the verdict).

    Gradients are of ``loss_fn`` on :func:`~advbench.attacks.eot.eot_logits` (``eot_samples`` draws) over the
    samples not yet fooled; every iterate of the whole batch is judged by ``verdict``. BPDA, if any, is active
    around the call.
    """
    out = x.clone()
    fooled = ~verdict.judge(x, y)  # misclassified clean images are not attacked
    for _ in range(restarts):
        live = (~fooled).nonzero().squeeze(1)
        if len(live) == 0:
            break
        delta = random_init(x[live], threat, init, generator)
        for step in range(steps + 1):
            current = out.clone()
            current[live] = x[live] + delta
            wrong = ~verdict.judge(current, y)[live]
            hit = live[wrong]
            out[hit], fooled[hit] = current[hit], True
            live, delta = live[~wrong], delta[~wrong]
            if step == steps or len(live) == 0:
                break
            xl = x[live]
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(eot_logits(model, xl + delta, eot_samples, eot_average), y[live]).sum()
                grad = input_grad(loss, delta)
            delta = ascent_step(delta.detach(), grad, threat, alpha)
            delta = (xl + delta).clamp(0, 1) - xl
        out[live] = x[live] + delta.detach()
    return out, ~fooled


@ATTACKS.register("adaptive-pgd", help="PGD adapted to masking: EOT (randomized), BPDA (gradient-breaking parts), "
                  "DLR/margin/CW losses (saturated logits); deterministic verdict", aliases=("eot-pgd", "bpda-pgd"))
class AdaptivePGD(Attack):
    """PGD with EOT gradients, BPDA and a deterministic verdict (Athalye et al. 2018; Tramèr et al. 2020)."""

    Options = AdaptivePGDOptions

    def plan(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> _Plan:
        """Resolve ``auto`` settings on this batch."""
        o = self.options
        randomized = is_randomized(model, x)
        k = (AUTO_EOT if randomized else 1) if o.eot_samples == "auto" else int(o.eot_samples)
        paths, ops = _resolve_bpda(model, x, y, o.bpda, o.bpda_approx)
        with torch.no_grad():
            classes = int(model(x[:1]).shape[1])
        loss = "margin" if o.loss == "dlr" and classes < 3 else o.loss  # DLR needs a third-largest logit
        return _Plan(randomized, k, o.verdict_samples if randomized else 1, paths, ops, loss)

    def perturb_ex(self, model, x, y, generator=None):
        """Resolve the adaptations, then run :func:`adaptive_pgd` under the attack's own seeded stream."""
        o = self.options
        batch = self.context.batch
        with seeded_model_rng(x.device, "adaptive-pgd", o.seed, batch):
            plan = self.plan(model, x, y)
            gen = torch.Generator(device=x.device).manual_seed(derived_seed("adaptive-pgd-start", o.seed, batch))
            verdict = batch_verdict(model, plan.verdict_samples, batch, o.verdict)
            alpha = o.step_size if o.step_size is not None else self.threat.default_step()
            with adapted(model, plan.bpda_paths, o.bpda_approx, plan.bpda_ops):
                x_adv, correct = adaptive_pgd(model, x, y, self.threat, steps=o.steps, alpha=alpha,
                                              loss_fn=get_loss(plan.loss, o.kappa), init=o.init, restarts=o.restarts,
                                              eot_samples=plan.eot_samples, eot_average=o.eot_average,
                                              verdict=verdict, generator=gen)
        return Perturbation(x_adv, info=plan.info(), correct=correct)

    @classmethod
    def suited_to(cls, options, summary):
        """What the resolved adaptations cover: EOT (randomized), BPDA, a scale-free loss (both: unexplained)."""
        a = (summary or {}).get("adaptations") or {}
        out = {"randomized"} if a.get("randomized") and a.get("eot_samples", 1) > 1 else set()
        if options.get("loss") in SCALE_FREE_LOSSES:
            out.add("saturated")
        if a.get("bpda") or a.get("bpda_ops"):
            out.add("non-differentiable")
        return out | ({"unexplained"} if {"saturated", "non-differentiable"} <= out else set())

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """The adaptations resolved per batch (randomized, EOT and verdict draws, BPDA paths and ops)."""
        if not info:
            return {}
        return {"adaptations": {
            "randomized": any(b.get("randomized") for b in info),
            "eot_samples": max(b.get("eot_samples", 1) for b in info),
            "verdict_samples": max(b.get("verdict_samples", 1) for b in info),
            "bpda": sorted({p for b in info for p in b.get("bpda", [])}),
            "bpda_ops": any(b.get("bpda_ops") for b in info),
            "loss": sorted({b.get("loss", "") for b in info} - {""})}}
