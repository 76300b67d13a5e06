"""H-SAT (Sitawarin et al. 2021, SAT): at each PGD step only the λ-fraction of the batch with the smallest
estimated top Hessian eigenvalue (Taylor bounds, Eq. 19/20, chunked per-sample heuristic of App. C.2) takes a
step (App. B.3); λ = 0 is standard training, λ = 1 is PGD-AT. Trains on plain mean CE at those points.
The λ schedules (App. A) live in ``sat_curriculum.py``."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbench.attacks.pgd import ascent_step, random_init
from advbench.attacks.training import pgd_examples
from advbench.core.passes import module_mode
from advbench.defenses.base import DEFENSES, StepContext, accuracy, check_positive
from advbench.defenses.input_gradients import LossFn, ce_per_sample
from advbench.defenses.sat_curriculum import LambdaCurriculum, SATOptions, first_positive_epoch
from advbench.defenses.weight_perturbation import preserved_buffers
from advbench.errors import UserError
from advbench.threat import ThreatModel


def hessian_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 32, frac: float = 0.01,
                   bound: str = "upper", input_grad: bool = False, loss_fn: LossFn = ce_per_sample
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample estimate of the top Hessian eigenvalue of ℓ w.r.t. θ (SAT Sec. 5, App. C), and optionally
    the input gradient of Σ_i CE_i from the same backward pass.

    Per chunk of ``chunk`` samples, g = ∇_θ mean CE (the minibatch gradient stands in for each sample's, App.
    C.2), α = ``frac``·‖g‖ and ζ = αĝ = frac·g. With ℓ_i(θ), ℓ_i(θ ± ζ):

    - ``upper`` (Eq. 20 = 46, as printed): (ℓ_i(θ + ζ) + α‖g‖)/α − ℓ_i(θ)
    - ``lower`` (Eq. 19 = 47, as printed): max{ℓ_i(θ + ζ) − α‖g‖, ℓ_i(θ − ζ) + α‖g‖}/α − ℓ_i(θ)
    - ``rayleigh`` (advbench extension, not in the paper): 2[ℓ_i(θ + ζ) − ℓ_i(θ) − α‖g‖]/α², the curvature
      along ĝ; exact for a per-sample quadratic loss with chunk 1.

    Runs in the model's current mode (the caller sets it); the weights are perturbed functionally, never
    in place. ``loss_fn(output, y)`` gives per-sample losses (CE by default). Returns (scores [B], input
    gradient of the summed loss or None).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise UserError("h-sat needs trainable parameters to estimate Hessian eigenvalues")
    scores, grads_x = [], []
    for s in range(0, x.shape[0], chunk):
        xc = x[s:s + chunk].detach()
        yc = y[s:s + chunk]
        if input_grad:
            xc.requires_grad_(True)
        l0 = loss_fn(model(xc), yc)
        out = torch.autograd.grad(l0.sum(), params + ([xc] if input_grad else []))
        if input_grad:
            grads_x.append(out[-1])
        # train-mode BN: the probe forwards at θ ± ζ must not touch the running statistics
        keep = preserved_buffers(model) if model.training else nullcontext()
        with torch.no_grad(), keep:
            g = [t / xc.shape[0] for t in out[:len(params)]]
            n = torch.sqrt(sum((t * t).sum() for t in g))
            a = (frac * n).clamp_min(1e-12)
            l0 = l0.detach()
            lp = loss_fn(functional_call(model, {k: p + frac * t for k, p, t in zip(names, params, g, strict=True)},
                                         (xc,)), yc)
            if bound == "upper":
                sc = (lp + a * n) / a - l0
            elif bound == "lower":
                lm = loss_fn(functional_call(model, {k: p - frac * t for k, p, t in zip(names, params, g,
                                                                                      strict=True)}, (xc,)), yc)
                sc = torch.maximum(lp - a * n, lm + a * n) / a - l0
            elif bound == "rayleigh":
                sc = 2.0 * (lp - l0 - a * n) / (a * a)
            else:
                raise UserError(f"unknown h-sat bound '{bound}'; choose upper, lower or rayleigh")
        scores.append(sc)
    return torch.cat(scores), (torch.cat(grads_x) if input_grad else None)


def top_hessian_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 50,
                           loss_fn: LossFn = ce_per_sample, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact top eigenvalue of ∇²_θ ℓ_i(θ) for every sample i by power iteration on Hessian-vector products
    (SAT Sec. 5, Fig. 4 and 7; analysis only — two backward passes per iteration and sample)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(x.shape[0]):
        loss = loss_fn(model(x[i:i + 1]), y[i:i + 1]).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
        eig = torch.zeros((), dtype=x.dtype)
        for _ in range(iters):
            norm = torch.sqrt(sum((t * t).sum() for t in v))
            v = [t / norm for t in v]
            hv = torch.autograd.grad(grads, params, v, retain_graph=True)
            eig = sum((a * b).sum() for a, b in zip(hv, v, strict=True)).detach()
            v = [t.detach() for t in hv]
        out.append(eig)
    return torch.stack(out)


def _select_smallest(scores: torch.Tensor, lam: float, chunk: int, scope: str) -> torch.Tensor:
    """Indices of the round(λ·n) smallest scores over the batch (``batch``) or within each chunk (``chunk``)."""
    def k_of(n: int) -> int:
        return min(n, max(0, math.floor(lam * n + 0.5)))

    if scope == "batch":
        return torch.argsort(scores, stable=True)[:k_of(scores.numel())]
    picks = []
    for s in range(0, scores.numel(), chunk):
        part = scores[s:s + chunk]
        picks.append(torch.argsort(part, stable=True)[:k_of(part.numel())] + s)
    return torch.cat(picks)


def hsat_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int,
                 alpha: float, lam: float, init: str = "uniform", chunk: int = 32, frac: float = 0.01,
                 bound: str = "upper", unselected: str = "clean", scope: str = "batch", rescore_every: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """H-SAT subset PGD (SAT App. B.3): at each step only the λ-fraction of samples with the smallest
    estimated eigenvalue (:func:`hessian_scores` at the current point) takes a CE-PGD step.

    The random start is drawn for the whole batch as PGD draws it, but applied to a sample only when it is
    first selected (``unselected="clean"``; ``noise`` starts every sample there). The eigenvalue estimate
    and the input gradient share one backward pass; a newly started sample costs one extra
    forward/backward at its start point. With ``rescore_every`` n > 1 (an advbench option; the paper
    re-ranks every step) the subset is re-ranked every n-th step and the steps in between move the same
    subset with a plain input-gradient pass over it. Runs in the model's current mode with weights
    unchanged. Returns (x′, per-sample steps taken).
    """
    b = x.shape[0]
    delta0 = random_init(x, threat, init, generator)
    started = torch.full((b,), unselected == "noise", dtype=torch.bool, device=x.device)
    delta = delta0.clone() if unselected == "noise" else torch.zeros_like(x)
    taken = torch.zeros(b, dtype=torch.long, device=x.device)
    sel = torch.zeros(0, dtype=torch.long, device=x.device)
    for t in range(steps):
        if t % max(1, rescore_every) == 0:
            scores, gx = hessian_scores(model, x + delta, y, chunk=chunk, frac=frac, bound=bound, input_grad=True)
            assert gx is not None
            sel = _select_smallest(scores, lam, chunk, scope)
            new = sel[~started[sel]]
            if new.numel():
                delta[new] = delta0[new]
                started[new] = True
                dn = delta[new].clone().requires_grad_(True)
                ce = F.cross_entropy(model(x[new] + dn), y[new], reduction="none").sum()
                (gx[new],) = torch.autograd.grad(ce, dn)
            g_sel = gx[sel]
        elif sel.numel():
            ds = delta[sel].clone().requires_grad_(True)
            (g_sel,) = torch.autograd.grad(F.cross_entropy(model(x[sel] + ds), y[sel], reduction="none").sum(), ds)
        if sel.numel() == 0:
            continue
        stepped = ascent_step(delta[sel], g_sel, threat, alpha)
        delta[sel] = (x[sel] + stepped).clamp(0, 1) - x[sel]
        taken[sel] += 1
    return (x + delta).detach(), taken


@dataclass
class HSATOptions(SATOptions):
    """H-SAT options: the SAT options plus the eigenvalue estimate (``bound`` upper = Eq. 20 as printed,
    lower = Eq. 19, rayleigh = advbench's curvature extension), the chunk of the per-sample heuristic (32),
    α as a fraction of the gradient norm (1 %), whether unselected samples stay clean (λ = 0 is standard
    training) or start at the random point, whether λ ranks over the batch or within chunks, and how often
    the subset is re-ranked (``rescore_every``; 1 = every PGD step as in the paper, 2 halves the scoring cost)."""

    bound: Literal["upper", "lower", "rayleigh"] = "upper"
    chunk: int = 32
    frac: float = 0.01
    rand_init_unselected: Literal["clean", "noise"] = "clean"
    rank_scope: Literal["batch", "chunk"] = "batch"
    rescore_every: int = 1  # advbench option: re-rank every n-th PGD step (paper: every step)

    def validate(self) -> None:
        """SAT checks plus a positive chunk and fraction."""
        super().validate()
        if self.chunk < 1 or self.rescore_every < 1:
            raise UserError(f"h-sat chunk and rescore_every must be >= 1, got {self.chunk}, {self.rescore_every}")
        check_positive(self.frac, "h-sat frac")


@DEFENSES.register("h-sat", help="H-SAT: each PGD step perturbs only the lambda-fraction of the batch with the "
                                 "smallest estimated Hessian eigenvalue (Sitawarin et al. 2021)", aliases=("hsat",))
class HSAT(LambdaCurriculum):
    """min_θ E CE(f(x + δ*), y), δ* = PGD whose every step moves only the λ-fraction of samples with the
    smallest ψ_H (SAT Eq. 10, 11, App. B.3)."""

    epoch_options = ("schedule_scale",)

    Options = HSATOptions
    linear_schedule = "linear-hsat"

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """0 < λ < 1: per ranking step one forward/backward (θ and input) and one (two for ``lower``) forward
        at θ + ζ, per other step at most one forward/backward, at most one extra forward/backward for random
        starts, then the training step."""
        k = self.options.steps
        scored = math.ceil(k / self.options.rescore_every)
        extra = 2.0 if self.options.bound == "lower" else 1.0
        return (k + extra * scored + 2.0, k + 2.0)

    def first_attack_epoch(self) -> float:
        """The first epoch with λ > 0 (before it H-SAT trains on the clean batch): 0 under ``linear-hsat``
        (λ starts at 0.8), the first breakpoint under a step schedule (30 × ``schedule_scale`` for
        ``step-mnist``), the ramp's start under ``linear-psat``; with λ updated per epoch, the first whole epoch
        at or after it. 0 when the unselected samples start at random points rather than clean."""
        o = self.options
        if o.rand_init_unselected != "clean" or o.rank_scope != "batch":
            return 0.0
        return first_positive_epoch(self.schedule_name, scale=o.schedule_scale, constant=o.lam,
                                    per_iteration=o.schedule_per_iteration)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, Any]:
        """H-SAT's adversarial batch at difficulty ``lam``: clean x at λ = 0 (default), PGD-AT's at λ = 1."""
        o = self.options
        b = x.shape[0]
        k = min(b, max(0, math.floor(lam * b + 0.5)))
        full = torch.full((b,), o.steps, dtype=torch.long, device=x.device)
        if k == b and o.rank_scope == "batch":
            # every sample selected at every step: the ranking is moot, this is PGD-AT's attack
            return pgd_examples(model, x, y, self.threat, steps=o.steps, alpha=self.alpha, init=o.init,
                                restarts=1, bn_mode=o.attack_bn_mode), full
        if k == 0 and o.rank_scope == "batch" and o.rand_init_unselected == "clean":
            return x, torch.zeros_like(full)
        with module_mode(model, o.attack_bn_mode):
            return hsat_perturb(model, x, y, self.threat, steps=o.steps, alpha=self.alpha, lam=lam, init=o.init,
                                chunk=o.chunk, frac=o.frac, bound=o.bound, unselected=o.rand_init_unselected,
                                scope=o.rank_scope, rescore_every=o.rescore_every)

    def loss(self, model, x, y, ctx: StepContext):
        """Mean CE at the H-SAT points."""
        lam = self.lam_at(ctx)
        x_adv, taken = self.perturb(model, x, y, lam)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": accuracy(logits, y), "sat_lambda": lam,
                                            "sat_mean_steps": float(taken.float().mean())}
