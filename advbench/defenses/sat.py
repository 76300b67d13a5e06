"""SAT: curriculum-based loss smoothing (Sitawarin et al. 2021) — P-SAT, H-SAT — and its baselines DAT and CAT.

All four train on plain mean CE at points returned by a constrained PGD (SAT Eq. 10):

- ``p-sat``: a sample stops moving once its softmax probability gap ψ_P = max_{j≠y} p_j − p_y exceeds λ
  (checked before each step, Alg. 1); λ = 1 is PGD-AT.
- ``h-sat``: at each PGD step only the λ-fraction of the batch with the smallest estimated top Hessian
  eigenvalue (Taylor bounds, Eq. 19/20, chunked per-sample heuristic of App. C.2) takes a step (App. B.3);
  λ = 0 is standard training, λ = 1 is PGD-AT.
- ``dat``: a sample stops once its first-order stationarity condition (FOSC) drops to the threshold c_t,
  which decays linearly from 0.5 to 0 (Wang et al. 2019).
- ``cat``: per-sample radius ε_i grown by η on every visit the sample survives, with ε-dependent label
  smoothing (Cheng et al. 2020, ``cat20``; sketch from a third-party reimplementation, see the spec).

λ schedules (SAT App. A) are config fields; the epoch's λ is written into the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbench.attacks.pgd import ascent_step, random_init
from advbench.core.passes import frozen
from advbench.defenses._common import (
    PerSampleStore,
    _bcast,
    batch_indices,
    check_attack,
    check_positive,
    module_mode,
    pgd_per_sample_eps,
    preserved_buffers,
)
from advbench.defenses.adversarial import craft as pgd_craft
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.errors import UserError
from advbench.threat import ThreatModel

Schedule = Literal["linear", "linear-psat", "linear-hsat", "step-mnist", "step-prn20", "step-wrn", "constant"]

#: step schedules: λ rises by 1/3 at each listed epoch (SAT App. A, Fig. 5a)
STEP_BREAKPOINTS: dict[str, tuple[float, float, float]] = {
    "step-mnist": (30.0, 45.0, 60.0),
    "step-prn20": (40.0, 60.0, 80.0),
    "step-wrn": (30.0, 40.0, 50.0),
}
#: linear schedules: (λ at start, λ at end, epoch where the ramp starts, epoch where it ends) (Fig. 5b)
LINEAR_SCHEDULES: dict[str, tuple[float, float, float, float]] = {
    "linear-hsat": (0.8, 1.0, 0.0, 30.0),
    "linear-psat": (0.0, 1.0, 30.0, 70.0),
}


def sat_lambda(schedule: str, epoch: float, *, scale: float = 1.0, constant: float = 1.0) -> float:
    """Difficulty parameter λ(epoch) of a SAT schedule (App. A); breakpoint epochs are multiplied by ``scale``.

    ``step-*``: 0, then +1/3 at each breakpoint (1 after the third); ``linear-hsat``: 0.8 → 1 over epochs
    0–30; ``linear-psat``: 0 until 30, linear to 1 at 70; ``constant``: ``constant``. Epochs are 0-based.
    """
    if schedule == "constant":
        return float(constant)
    if schedule in STEP_BREAKPOINTS:
        passed = sum(epoch >= scale * b for b in STEP_BREAKPOINTS[schedule])
        return passed / 3.0
    if schedule in LINEAR_SCHEDULES:
        start, end, e0, e1 = LINEAR_SCHEDULES[schedule]
        e0, e1 = scale * e0, scale * e1
        if epoch <= e0:
            return start
        if epoch >= e1:
            return end
        return start + (end - start) * (epoch - e0) / (e1 - e0)
    raise UserError(f"unknown lambda schedule '{schedule}'; choose one of {', '.join(sorted(_SCHEDULES))}")


_SCHEDULES = set(STEP_BREAKPOINTS) | set(LINEAR_SCHEDULES) | {"constant", "linear"}


def prob_gap(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax probability gap ψ_P(x) = max_{j≠y} f(x)_j − f(x)_y ∈ [−1, 1] (SAT Eq. 12)."""
    p = F.softmax(logits, dim=1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    other = p.scatter(1, y[:, None], float("-inf"))
    return other.max(dim=1).values - p_y


def fosc(delta: torch.Tensor, grad: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """First-order stationarity condition c = ε‖g‖_* − ⟨δ, g⟩ ≥ 0 per sample (DAT; SAT Table 4, negated).

    Linf sums ε|g_i| − δ_i g_i element by element, so c is exactly 0 at a vertex δ = ε·sign(g).
    """
    if norm == "linf":
        return (eps * grad.abs() - delta * grad).flatten(1).sum(dim=1)
    return eps * grad.flatten(1).norm(dim=1) - (delta * grad).flatten(1).sum(dim=1)


def fosc_active(delta: torch.Tensor, grad: torch.Tensor, eps: float, norm: str, c_t: float) -> torch.Tensor:
    """DAT's continue-mask: FOSC above ``c_t`` by more than 1e-5·ε‖g‖_* (at a vertex δ = x + ε·sign(g) − x
    carries rounding of x's magnitude, so an exact 0 is out of reach in floating point)."""
    dual = grad.flatten(1).abs().sum(dim=1) if norm == "linf" else grad.flatten(1).norm(dim=1)
    return fosc(delta, grad, eps, norm) > c_t + 1e-5 * eps * dual


MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def curriculum_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, steps: int,
                   alpha: float, init: str = "uniform", logit_mask: MaskFn | None = None,
                   grad_mask: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   permanent: bool = True, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
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
        new = torch.where(_bcast(ok, new), new, ds)
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


@dataclass
class SATOptions:
    """Options shared by P-SAT and H-SAT: the λ schedule (``linear`` = the method's own linear schedule of
    App. A; ``step-mnist``/``step-prn20``/``step-wrn`` = the step schedules; ``constant`` = ``lam``),
    breakpoints scaled by ``schedule_scale`` (the paper's are for 70–100 epochs), λ per epoch (paper
    [NOT STATED]) or per iteration, and the training PGD (10 × eps/4, uniform start, eval-mode BN as
    in the ATES code)."""

    lambda_schedule: Schedule = "linear"
    lam: float = 1.0
    schedule_scale: float = 1.0
    schedule_per_iteration: bool = False
    steps: int = 10
    step_size: float | None = None
    init: Literal["uniform", "zero", "normal"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Positive scale and a sane attack."""
        check_positive(self.schedule_scale, "sat schedule_scale")
        check_attack(self.steps, self.step_size, "sat")


class _Curriculum(Defense):
    """Shared λ bookkeeping of P-SAT and H-SAT."""

    linear_schedule = "linear-psat"

    def lam(self, epoch: float) -> float:
        """λ at (fractional) ``epoch`` under the configured schedule."""
        o = self.options
        name = self.linear_schedule if o.lambda_schedule == "linear" else o.lambda_schedule
        return sat_lambda(name, epoch, scale=o.schedule_scale, constant=o.lam)

    def lam_at(self, ctx: StepContext) -> float:
        """λ for this step (per epoch unless ``schedule_per_iteration``)."""
        return self.lam(ctx.progress if self.options.schedule_per_iteration else float(ctx.epoch))

    def describe(self) -> dict[str, Any]:
        """Options plus the schedule actually used and the step size."""
        o = self.options
        name = self.linear_schedule if o.lambda_schedule == "linear" else o.lambda_schedule
        return {**super().describe(), "resolved": {"lambda_schedule": name, "step_size": self.alpha}}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Record the epoch's λ."""
        return {"sat_lambda": self.lam(float(epoch))}

    @property
    def alpha(self) -> float:
        """PGD step size (eps/4 unless set)."""
        o = self.options
        return o.step_size if o.step_size is not None else self.threat.default_step()


@DEFENSES.register("p-sat", help="P-SAT: PGD stopped per sample once its probability gap exceeds lambda "
                                 "(Sitawarin et al. 2021)", aliases=("psat",))
class PSAT(_Curriculum):
    """min_θ E CE(f(x + δ*), y), δ* = PGD on CE stopped once ψ_P(x + δ) > λ (SAT Eq. 10, 12, Alg. 1)."""

    epoch_options = ("schedule_scale",)

    Options = SATOptions
    linear_schedule = "linear-psat"

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """At most PGD-AT's: K attack forward/backward passes and one training forward/backward."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, Any]:
        """P-SAT's curriculum PGD at difficulty ``lam`` (returns x′ and per-sample steps taken)."""
        o = self.options
        with frozen(model, o.attack_bn_mode):
            return curriculum_pgd(model, x, y, self.threat, steps=o.steps, alpha=self.alpha, init=o.init,
                                  logit_mask=lambda z, t: prob_gap(z, t) <= lam,
                                  permanent=o.attack_bn_mode == "eval")

    def loss(self, model, x, y, ctx: StepContext):
        """Mean CE at the curriculum points."""
        lam = self.lam_at(ctx)
        x_adv, taken = self.perturb(model, x, y, lam)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {
            "adv_acc": accuracy(logits, y), "sat_lambda": lam,
            "sat_mean_steps": float(taken.float().mean()),
            "sat_frac_stopped": float((taken < self.options.steps).float().mean())}


def ce_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (the loss whose Hessian H-SAT ranks)."""
    return F.cross_entropy(logits, y, reduction="none")


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
class HSAT(_Curriculum):
    """min_θ E CE(f(x + δ*), y), δ* = PGD whose every step moves only the λ-fraction of samples with the
    smallest ψ_H (SAT Eq. 10, 11, App. B.3)."""

    double_backward = True
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

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, Any]:
        """H-SAT's adversarial batch at difficulty ``lam``: clean x at λ = 0 (default), PGD-AT's at λ = 1."""
        o = self.options
        b = x.shape[0]
        k = min(b, max(0, math.floor(lam * b + 0.5)))
        full = torch.full((b,), o.steps, dtype=torch.long, device=x.device)
        if k == b and o.rank_scope == "batch":
            # every sample selected at every step: the ranking is moot, this is PGD-AT's attack
            return pgd_craft(model, x, y, self.threat, steps=o.steps, step_size=o.step_size, init=o.init,
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


@dataclass
class DATOptions:
    """DAT options: FOSC threshold c_t = ``fosc_max``·max(0, 1 − epoch/``fosc_epochs``) (0.5 over 80 epochs
    for CIFAR; SAT used 30 for MNIST, 50 for CIFAR-10 at 16/255 and 24/255, 40 for Imagenette), training
    PGD 10 × eps/4 from a uniform start with eval-mode BN."""

    fosc_max: float = 0.5
    fosc_epochs: float = 80.0
    schedule_per_iteration: bool = False
    steps: int = 10
    step_size: float | None = None
    init: Literal["uniform", "zero", "normal"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Non-negative threshold, positive decay period, sane attack."""
        check_positive(self.fosc_max, "dat fosc_max", allow_zero=True)
        check_positive(self.fosc_epochs, "dat fosc_epochs")
        check_attack(self.steps, self.step_size, "dat")


@DEFENSES.register("dat", help="DAT: dynamic AT, PGD stopped per sample once its FOSC falls to a decaying "
                               "threshold (Wang et al. 2019)")
class DAT(Defense):
    """min_θ E CE(f(x′), y), x′ = PGD stopped once c(x^k) = ε‖∇ℓ‖₁ − ⟨x^k − x⁰, ∇ℓ⟩ ≤ c_t (SAT Table 4)."""

    epoch_options = ("fosc_epochs",)

    Options = DATOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """At most PGD-AT's."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    def threshold(self, epoch: float) -> float:
        """c_t at ``epoch``: linear decay from fosc_max to 0 over fosc_epochs."""
        o = self.options
        return o.fosc_max * max(0.0, 1.0 - epoch / o.fosc_epochs)

    def describe(self) -> dict[str, Any]:
        """Options plus the step size."""
        return {**super().describe(), "resolved": {"step_size": self.options.step_size or self.threat.default_step()}}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Record the epoch's FOSC threshold."""
        return {"dat_fosc_threshold": self.threshold(float(epoch))}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, c_t: float) -> tuple[torch.Tensor, Any]:
        """FOSC-terminated PGD at threshold ``c_t``."""
        o = self.options
        alpha = o.step_size if o.step_size is not None else self.threat.default_step()
        eps, norm = self.threat.eps, self.threat.norm
        with frozen(model, o.attack_bn_mode):
            return curriculum_pgd(model, x, y, self.threat, steps=o.steps, alpha=alpha, init=o.init,
                                  grad_mask=lambda d, g: fosc_active(d, g, eps, norm, c_t),
                                  permanent=o.attack_bn_mode == "eval")

    def loss(self, model, x, y, ctx: StepContext):
        """Mean CE at the FOSC-terminated PGD points."""
        o = self.options
        c_t = self.threshold(ctx.progress if o.schedule_per_iteration else float(ctx.epoch))
        x_adv, taken = self.perturb(model, x, y, c_t)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), {"adv_acc": accuracy(logits, y), "dat_fosc_threshold": c_t,
                                            "sat_mean_steps": float(taken.float().mean())}


@dataclass
class CATOptions:
    """CAT20 options (third-party reimplementation defaults, see the spec): per-visit radius increment
    ``eta`` 0.005, label-smoothing factor ``smoothing`` c = 10 (mass c·ε_i on a Dirichlet(``dirichlet``)
    draw), radius cap ``max_eps`` (None = the threat's eps), PGD 10 × eps/4 on soft-label CE, eval-mode BN."""

    eta: float = 0.005
    smoothing: float = 10.0
    dirichlet: float = 1.0
    max_eps: float | None = None
    steps: int = 10
    step_size: float | None = None
    init: Literal["uniform", "zero"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Positive increment and Dirichlet concentration, non-negative smoothing."""
        check_positive(self.eta, "cat eta")
        check_positive(self.dirichlet, "cat dirichlet")
        check_positive(self.smoothing, "cat smoothing", allow_zero=True)
        if self.max_eps is not None:
            check_positive(self.max_eps, "cat max_eps")
        check_attack(self.steps, self.step_size, "cat")


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy to a soft label: −Σ_c t_c log softmax(z)_c."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


@DEFENSES.register("cat", help="CAT20: customized AT, per-sample eps grown while the sample survives, "
                               "eps-dependent label smoothing (Cheng et al. 2020)", aliases=("cat20",))
class CAT(Defense):
    """min_θ E soft-CE(f(x + δ_i), ỹ_i), ‖δ_i‖ ≤ ε_i, ỹ_i = (1 − cε_i)·onehot(y) + cε_i·Dir(1)."""

    Options = CATOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = PerSampleStore(0.0)

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """PGD-AT's: K attack forward/backward passes, one training forward/backward."""
        k = self.options.steps
        return (k + 1.0, k + 1.0)

    @property
    def max_eps(self) -> float:
        """The radius cap (the threat's eps unless set)."""
        return self.options.max_eps if self.options.max_eps is not None else self.threat.eps

    def describe(self) -> dict[str, Any]:
        """Options plus the radius cap and step size."""
        return {**super().describe(), "resolved": {"max_eps": self.max_eps,
                                                   "step_size": self.options.step_size or self.threat.default_step()}}

    def smooth_labels(self, y: torch.Tensor, eps: torch.Tensor, num_classes: int) -> torch.Tensor:
        """ỹ = (1 − c·ε_i)·onehot(y) + c·ε_i·Dirichlet(α·1) (mixing weight clipped to [0, 1]); rows sum to 1."""
        o = self.options
        w = (o.smoothing * eps).clamp(0, 1).to(torch.float32)[:, None]
        conc = torch.full((num_classes,), float(o.dirichlet))
        noise = torch.distributions.Dirichlet(conc).sample((y.shape[0],)).to(y.device)
        onehot = F.one_hot(y, num_classes).float()
        return (1 - w.to(y.device)) * onehot + w.to(y.device) * noise

    def loss(self, model, x, y, ctx: StepContext):
        """Soft-label CE at the per-sample-radius PGD points; radii grow by η for samples that stay correct."""
        o = self.options
        idx = batch_indices(x, ctx.idx).detach().cpu()
        c = ctx.num_classes
        eps = (self.store.get(idx) + o.eta).clamp(max=self.max_eps).to(x.device, x.dtype)
        target = self.smooth_labels(y, eps, c).to(x.dtype)
        alpha = o.step_size if o.step_size is not None else self.threat.default_step()
        with frozen(model, o.attack_bn_mode):
            x_adv = pgd_per_sample_eps(model, x, eps, self.threat.norm, steps=o.steps,
                                       step=torch.full_like(eps, alpha), loss_fn=lambda z: soft_ce(z, target),
                                       init=o.init)
        logits = model(x_adv)
        wrong = (logits.detach().argmax(1) != y)
        new_eps = torch.where(wrong, eps - o.eta, eps).clamp(min=0.0, max=self.max_eps)
        self.store.set(idx, new_eps)
        loss = soft_ce(logits, self.smooth_labels(y, eps, c).to(x.dtype)).mean()
        return loss, {"adv_acc": 1.0 - float(wrong.float().mean()), "cat_avg_eps": float(new_eps.mean())}

    def state_dict(self) -> dict[str, Any]:
        """Per-sample radii by dataset index."""
        return {"eps": self.store.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the per-sample radii."""
        if "eps" in state:
            self.store.load_state_dict(state["eps"])
