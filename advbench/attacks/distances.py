"""Minimum-distance attacks (Finlay & Oberman's evaluation): per image, the smallest adversarial perturbation found.

Every attack here derives from :class:`DistanceAttack`, which owns what they share:

- images the model already misclassifies get distance 0 and are not attacked;
- the attack proper (:meth:`DistanceAttack.search`) proposes one adversarial candidate per image; the base
  re-checks it with the model (a candidate that is not misclassified counts as "not found"), optionally
  shortens it by bisection along the segment from the clean image (``refine``: only ever closer), and measures
  its size itself in the threat's norm, so a distance is always the norm of an image that the model misclassifies;
- d = ``inf`` (stored as ``null``) where nothing adversarial was found;
- the image returned for the evaluation's eps is the closest adversarial one if d <= eps, else the clean image,
  so correctness at eps is exactly d > eps;
- the summary (:func:`distance_summary`): mean / median distance, empirical error at the evaluation's eps and at
  every eps of ``eps_list`` (empirical % error at eps = 100·mean(d <= eps)), and the accuracy-vs-eps curve.

Attacks: ``cw-l2`` (Carlini-Wagner L2, binary search over c, Adam in tanh space), ``deepfool`` (L2 and Linf),
``hopskipjump`` (decision-based: labels only), ``logbarrier`` (log-barrier interior-point method) and
``best-of`` (per image, the smallest distance over a set of them; default CW, HopSkipJump, LogBarrier and the
bisection-PGD ``min-dist`` of :mod:`advbench.attacks.mindist`, itself a :class:`DistanceAttack`).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.attacks.base import ATTACKS, Attack, Perturbation, renorm_l2
from advbench.attacks.pgd import input_grad
from advbench.errors import UserError
from advbench.threat import ThreatModel, parse_eps


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample Linf or L2 norm of ``delta``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample dual norm of ``g``: L1 for an Linf threat, L2 for L2."""
    flat = g.flatten(1)
    return flat.abs().sum(dim=1) if norm == "linf" else flat.norm(dim=1)


def steepest(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm direction of steepest ascent of a linear function with gradient ``g`` (sign(g) for Linf)."""
    if norm == "linf":
        return g.sign()
    return g / _col(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly where the image is misclassified (ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def _grad(out: torch.Tensor, wrt: torch.Tensor, retain: bool = False) -> torch.Tensor:
    """d out / d wrt of a scalar; zeros where no gradient reaches ``wrt`` (as ``pgd.input_grad``)."""
    if not retain:
        return input_grad(out, wrt)
    if not out.requires_grad:
        return torch.zeros_like(wrt)
    (g,) = torch.autograd.grad(out, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether ``model`` misclassifies each image (no gradients)."""
    with torch.no_grad():
        return model(x).argmax(1) != y


def refine_segment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, found: torch.Tensor,
                   steps: int) -> torch.Tensor:
    """Bisect t in [0, 1] for the adversarial point x + t·(adv - x) closest to x (``steps`` halvings).

    Only images with ``found`` are moved, and only to points the model misclassifies: the result is never
    farther from x than ``adv``."""
    if steps <= 0 or not bool(found.any()):
        return adv
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = fooled(model, x + _col(mid, x) * (adv - x), y)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    out = x + _col(hi, x) * (adv - x)
    return torch.where(_col(found, x), out, adv)


def eps_pairs(values: list[str] | list[float]) -> list[tuple[float, str]]:
    """The eps of an ``eps_list`` option as (value, text)."""
    return [parse_eps(v) for v in values]


def distance_summary(per_sample: dict[str, list[Any]], info: list[dict[str, Any]], threat: ThreatModel
                     ) -> dict[str, Any]:
    """Mean / median distance, empirical error at the evaluation's eps and at each ``eps_list`` eps, the curve."""
    dist = per_sample.get("distance", [])
    if not dist:
        return {}
    first = info[0] if info else {}
    n = len(dist)
    found = sorted(d for d in dist if d is not None)
    extra = [(float(v), str(t)) for v, t in first.get("eps_list", [])]
    top = first.get("eps_max") or max([threat.eps, *(v for v, _ in extra), *(found or [0.0])])
    points = max(2, int(first.get("curve_points", 33)))
    grid = sorted({round(top * i / (points - 1), 12) for i in range(points)} | {threat.eps} | {v for v, _ in extra})
    curve = [{"eps": e, "accuracy": sum(1 for d in dist if d is None or d > e) / n} for e in grid]
    errors = {threat.eps_text: sum(1 for d in dist if d is not None and d <= threat.eps) / n}
    for v, t in extra:
        errors[t] = sum(1 for d in dist if d is not None and d <= v) / n
    out: dict[str, Any] = {
        "norm": threat.norm,
        "n_not_found": n - len(found),
        "mean_distance": sum(found) / len(found) if found else None,
        "median_distance": found[len(found) // 2] if found else None,
        "mean_distance_rule": "mean over samples with a distance found (0 for misclassified clean images); "
                              "samples with no adversarial image found are excluded and counted in n_not_found",
        "empirical_error_at_eps": errors[threat.eps_text],
        "empirical_error": errors,
        "curve": curve,
    }
    if first.get("eps_max") is not None:
        out["eps_max"] = first["eps_max"]
    winners = per_sample.get("winner")
    if winners:
        counts: dict[str, int] = {}
        for w in winners:
            if w is not None:
                counts[str(w)] = counts.get(str(w), 0) + 1
        out["winner_counts"] = counts
    return out


@dataclass
class DistanceOptions:
    """Options every minimum-distance attack has."""

    eps_list: list[str] = field(default_factory=list)  # more eps at which the summary gives empirical error
    curve_points: int = 33  # points of the stored accuracy-vs-eps curve
    refine: int = 10  # bisection steps along the segment from the image to the adversarial point found

    def validate(self) -> None:
        """Budgets >= their minimum, eps parse."""
        if self.curve_points < 2 or self.refine < 0:
            raise UserError("a distance attack needs curve_points >= 2 and refine >= 0")
        eps_pairs(self.eps_list)


class DistanceAttack(Attack):
    """Base of the minimum-distance attacks: subclasses implement :meth:`search`; see the module docstring."""

    expensive = True
    measures_distance: ClassVar[bool] = True
    Options = DistanceOptions

    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
               ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Adversarial candidates for images the model classifies correctly (any image: the base checks them),
        plus batch facts for ``info``."""
        raise NotImplementedError

    def distances(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[Any]], dict[str, Any]]:
        """(distance [B], inf = not found; the closest adversarial images; per-sample extras; info)."""
        wrong0 = fooled(model, x, y)
        dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        dist[wrong0] = 0.0
        x_best = x.clone()
        info: dict[str, Any] = {}
        rows = (~wrong0).nonzero().squeeze(1)
        if len(rows):
            xr, yr = x[rows], y[rows]
            adv, info = self.search(model, xr, yr, generator)
            adv = adv.detach().to(x.dtype).clamp(0, 1)
            ok = fooled(model, adv, yr)
            adv = refine_segment(model, xr, yr, adv, ok, self.options.refine)
            size = perturbation_norm(adv - xr, self.threat.norm)
            dist[rows[ok]] = size[ok]
            x_best[rows[ok]] = adv[ok]
        return dist, x_best, {}, info

    def perturb_ex(self, model, x, y, generator=None):
        """The closest adversarial image where it lies within eps, else the clean image; distances per sample."""
        dist, x_best, extra, info = _remembered(self, model, x, y, generator)
        within = dist <= self.threat.eps
        x_adv = torch.where(_col(within, x), x_best, x)
        values = [None if math.isinf(v) else v for v in dist.tolist()]
        o = self.options
        info = {**info, "curve_points": o.curve_points, "eps_list": [list(p) for p in eps_pairs(o.eps_list)]}
        return Perturbation(x_adv, per_sample={"distance": values, **extra}, info=info)

    def perturb(self, model, x, y, generator=None):
        """Adversarial images (see :meth:`perturb_ex`)."""
        return self.perturb_ex(model, x, y, generator).x_adv

    @classmethod
    def summarize(cls, per_sample, info, correct, threat: ThreatModel):
        """Mean/median distance, empirical error at eps and at ``eps_list``, and the accuracy-vs-eps curve."""
        return distance_summary(per_sample, info, threat)


#: the distances of the last few batches (see :func:`_remembered`): key -> (distance, closest images, extras, info)
_MEMO: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, dict[str, list[Any]], dict[str, Any]]] = OrderedDict()
_MEMO_SIZE = 32


def _digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.cpu().view(torch.uint8).numpy().tobytes())


def _remembered(attack: DistanceAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[Any]], dict[str, Any]]:
    """``attack.distances(model, x, y, generator)``, computed once for every eps of a suite: a distance does not
    depend on the evaluation's eps (the evaluation seeds a distance attack's generator without it), so the
    second eps of ``--eps 2/255,8/255`` reads the first one's distances instead of searching again. The key is
    everything the search reads: the attack and its options, the norm, the model object, its mode and a digest
    of every weight and buffer, the images, the labels and the generator's state; a hit is therefore exactly
    what a new search would return (a model whose weights changed, another batch or another seed misses)."""
    h = hashlib.sha256(f"{type(attack).__name__}|{attack.options!r}|{attack.threat.norm}|{id(model)}|"
                       f"{model.training}".encode())
    for t in (*model.state_dict().values(), x, y):
        if isinstance(t, torch.Tensor):
            _digest(h, t)
    if generator is not None:
        _digest(h, generator.get_state())
    key = h.hexdigest()
    if key in _MEMO:
        _MEMO.move_to_end(key)
        dist, x_best, extra, info = _MEMO[key]
    else:
        dist, x_best, extra, info = attack.distances(model, x, y, generator)
        _MEMO[key] = (dist, x_best, extra, info)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return dist.clone(), x_best.clone(), {k: list(v) for k, v in extra.items()}, dict(info)


def default_eps_max(norm: str) -> float:
    """Upper end of the bisection when none is given."""
    return 0.5 if norm == "linf" else 10.0


def pgd_per_sample_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: torch.Tensor, *,
                       steps: int, step_ratio: float, init: str, generator: torch.Generator | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """CE PGD with one budget per sample (step = step_ratio·eps); returns the first misclassified iterate
    (or the last one) and whether the sample was fooled."""
    e = _col(eps, x)
    if init == "uniform":
        gdev = generator.device if generator is not None else x.device
        if norm == "linf":
            delta = (2 * torch.rand(x.shape, generator=generator, device=gdev).to(x) - 1) * e
        else:
            d = torch.randn(x.shape, generator=generator, device=gdev).to(x)
            d = d / _col(d.flatten(1).norm(dim=1).clamp_min(1e-12), x)
            delta = d * _col(torch.rand(x.shape[0], generator=generator, device=gdev).to(x), x) * e
        delta = (x + delta).clamp(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best = x.clone()
    alpha = e * step_ratio
    for _ in range(steps + 1):
        delta.requires_grad_(True)
        logits = model(x + delta)
        with torch.no_grad():
            wrong = (logits.argmax(1) != y) & ~found
            best = torch.where(_col(wrong, x), x + delta, best)
            found |= wrong
        if _ == steps or bool(found.all()):
            break
        grad = input_grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), delta)
        with torch.no_grad():
            if norm == "linf":
                delta = torch.maximum(torch.minimum(delta + alpha * grad.sign(), e), -e)
            else:
                g = grad / _col(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
                delta = renorm_l2(delta + alpha * g, eps)
            delta = (x + delta).clamp(0, 1) - x
    return best.detach(), found


# ------------------------------------------------------------------------------------------------- Carlini-Wagner


@dataclass
class CWL2Options(DistanceOptions):
    """Carlini-Wagner L2: minimise ||delta||_2^2 + c·max(z_y - max_{j!=y} z_j, -kappa) over w, x' = (tanh w + 1)/2."""

    c: float = 1.0  # initial constant c (per image, then binary search)
    search_steps: int = 9  # binary search steps over c
    steps: int = 100  # Adam steps per search step
    lr: float = 0.01  # Adam learning rate (in tanh space)
    kappa: float = 0.0  # confidence: success needs max_{j!=y} z_j - z_y > kappa (0: argmax != y)
    abort_early: bool = True  # stop a search step when the loss stalls (checked every steps/10)

    def validate(self) -> None:
        """Positive budgets."""
        super().validate()
        if self.c <= 0 or self.search_steps < 1 or self.steps < 1 or self.lr <= 0 or self.kappa < 0:
            raise UserError("cw-l2 needs c > 0, search_steps >= 1, steps >= 1, lr > 0 and kappa >= 0")


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, c: float, search_steps: int, steps: int, lr: float,
          kappa: float, abort_early: bool) -> torch.Tensor:
    """Carlini-Wagner L2 (untargeted): per-image binary search over c; returns the smallest-L2 successful iterate
    (the clean image where none succeeded)."""
    n = x.shape[0]
    w0 = torch.atanh((2 * x - 1).clamp(-1, 1) * (1 - 1e-6)).detach()
    const = torch.full((n,), float(c), dtype=x.dtype, device=x.device)
    lo = torch.zeros_like(const)
    hi = torch.full_like(const, float("inf"))
    best = torch.full_like(const, float("inf"))
    best_x = x.clone()
    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        prev = float("inf")
        check = max(steps // 10, 1)
        for step in range(steps):
            xa = (torch.tanh(w) + 1) / 2
            logits = model(xa)
            m = margin(logits, y)  # > 0: misclassified
            sq = (xa - x).flatten(1).pow(2).sum(1)
            loss = sq + const * (-m).clamp_min(-kappa)
            total = loss.sum()
            with torch.no_grad():
                ok = (m > kappa) if kappa > 0 else (logits.argmax(1) != y)
                closer = ok & (sq.sqrt() < best)
                best = torch.where(closer, sq.sqrt(), best)
                best_x = torch.where(_col(closer, x), xa.detach(), best_x)
                success |= ok
            if abort_early and step % check == 0:
                if float(total.detach()) > prev * 0.9999:
                    break
                prev = float(total.detach())
            opt.zero_grad(set_to_none=True)
            w.grad = _grad(total, w)
            opt.step()
        with torch.no_grad():
            hi = torch.where(success, torch.minimum(hi, const), hi)
            lo = torch.where(success, lo, torch.maximum(lo, const))
            const = torch.where(torch.isinf(hi), const * 10, (lo + hi) / 2)
    return best_x


@ATTACKS.register("cw-l2", help="Carlini-Wagner L2 minimum distance: binary search over c, Adam in tanh space, "
                  "confidence kappa; distances per image", aliases=("cw2",))
class CWL2(DistanceAttack):
    """Carlini-Wagner L2 (Carlini & Wagner 2017); under an Linf threat the distance is the Linf size of the
    L2-optimised point (an upper bound, as in Finlay & Oberman's tables)."""

    Options = CWL2Options

    def search(self, model, x, y, generator):
        """CW-L2 with binary search (deterministic)."""
        o = self.options
        return cw_l2(model, x, y, c=o.c, search_steps=o.search_steps, steps=o.steps, lr=o.lr, kappa=o.kappa,
                     abort_early=o.abort_early), {}


# ------------------------------------------------------------------------------------------------------- DeepFool


@dataclass
class DeepFoolOptions(DistanceOptions):
    """DeepFool: repeatedly step to the nearest linearised class boundary (L2 or Linf: the threat's norm)."""

    steps: int = 50  # linearisation steps at most
    overshoot: float = 0.02  # the accumulated step is scaled by 1 + overshoot
    candidates: int = 10  # classes considered (the top ones of the clean logits, besides the true class)

    def validate(self) -> None:
        """Positive budgets."""
        super().validate()
        if self.steps < 1 or self.overshoot < 0 or self.candidates < 1:
            raise UserError("deepfool needs steps >= 1, overshoot >= 0 and candidates >= 1")


def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *, steps: int, overshoot: float,
             candidates: int) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al. 2016) in L2 or Linf; returns the final iterates."""
    with torch.no_grad():
        logits0 = model(x)
    k = min(candidates, logits0.shape[1] - 1)
    others = logits0.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices  # [B, k]
    r_tot = torch.zeros_like(x)
    x_i = x.clone()
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        xi = x_i.clone().requires_grad_(True)
        logits = model(xi)
        active = active & (logits.argmax(1) == y)
        if not bool(active.any()):
            break
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        best_ratio = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
        step = torch.zeros_like(x)
        for j in range(k):
            f = logits.gather(1, others[:, j:j + 1]).squeeze(1) - z_y  # < 0 while correct
            g = _grad(f.sum(), xi, retain=j < k - 1)
            with torch.no_grad():
                gn = dual_norm(g, norm).clamp_min(1e-12)
                ratio = f.abs() / gn
                take = ratio < best_ratio
                best_ratio = torch.where(take, ratio, best_ratio)
                r = _col((f.abs() + 1e-6) / gn, x) * steepest(g, norm)
                step = torch.where(_col(take, x), r, step)
        with torch.no_grad():
            r_tot = r_tot + torch.where(_col(active, x), step, torch.zeros_like(step))
            x_i = (x + (1 + overshoot) * r_tot).clamp(0, 1)
    return x_i.detach()


@ATTACKS.register("deepfool", help="DeepFool minimum distance (L2 or Linf): steps to the nearest linearised class "
                  "boundary; distances per image")
class DeepFool(DistanceAttack):
    """DeepFool in the threat's norm (deterministic)."""

    Options = DeepFoolOptions

    def search(self, model, x, y, generator):
        """DeepFool iterates."""
        o = self.options
        return deepfool(model, x, y, self.threat.norm, steps=o.steps, overshoot=o.overshoot,
                        candidates=o.candidates), {}


# --------------------------------------------------------------------------------------------------- HopSkipJump


@dataclass
class HopSkipJumpOptions(DistanceOptions):
    """HopSkipJump (Chen, Jordan & Wainwright 2020): decision-based, only the predicted labels are used."""

    iterations: int = 40  # gradient-estimate / step / boundary-search rounds
    init_evals: int = 100  # queries of the first gradient estimate (round t uses init_evals·sqrt(t))
    max_evals: int = 1000  # cap on the queries of one gradient estimate
    init_trials: int = 100  # uniform-noise images tried to find a first adversarial image
    gamma: float = 1.0  # boundary-search tolerance theta = gamma / d^(3/2) (L2) or gamma / d^2 (Linf)
    chunk: int = 64  # gradient-estimate queries sent per forward (memory)

    def validate(self) -> None:
        """Positive budgets."""
        super().validate()
        if min(self.iterations, self.init_evals, self.max_evals, self.init_trials, self.chunk) < 1 or self.gamma <= 0:
            raise UserError("hopskipjump needs iterations, init_evals, max_evals, init_trials, chunk >= 1, gamma > 0")


class _Oracle:
    """Label-only access to the model, counting queries per image."""

    def __init__(self, model: nn.Module, y: torch.Tensor) -> None:
        self.model, self.y = model, y
        self.queries = torch.zeros(len(y), dtype=torch.long, device=y.device)

    def __call__(self, xq: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        y = self.y if rows is None else self.y[rows]
        if rows is None:
            self.queries += 1
        else:
            self.queries.index_add_(0, rows, torch.ones_like(rows))
        return fooled(self.model, xq, y)


def _blend(x: torch.Tensor, adv: torch.Tensor, t: torch.Tensor, norm: str) -> torch.Tensor:
    """The point at fraction t of the way from x to adv: L2 interpolation, Linf clipping to radius t·||adv - x||."""
    if norm == "l2":
        return x + _col(t, x) * (adv - x)
    r = _col(t * perturbation_norm(adv - x, "linf"), x)
    return torch.minimum(torch.maximum(adv, x - r), x + r)


def _boundary(oracle: _Oracle, x: torch.Tensor, adv: torch.Tensor, norm: str, theta: float,
              rows: torch.Tensor) -> torch.Tensor:
    """Bisection between x (correct) and adv (adversarial) down to tolerance theta; returns the adversarial end."""
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(max(1, math.ceil(math.log2(1 / theta)))):
        mid = (lo + hi) / 2
        ok = oracle(_blend(x, adv, mid, norm), rows)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return _blend(x, adv, hi, norm)


def hop_skip_jump(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *, iterations: int, init_evals: int,
                  max_evals: int, init_trials: int, gamma: float, chunk: int,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted HopSkipJump; returns (best adversarial images, the clean image where none; queries per image)."""
    n, d = x.shape[0], x[0].numel()
    gdev = generator.device if generator is not None else x.device
    oracle = _Oracle(model, y)
    theta = gamma / (d ** 1.5 if norm == "l2" else d ** 2)
    adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(init_trials):  # a first adversarial image: uniform noise
        todo = (~found).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        noise = torch.rand((len(todo), *x.shape[1:]), generator=generator, device=gdev).to(x)
        ok = oracle(noise, todo)
        adv[todo[ok]] = noise[ok]
        found[todo[ok]] = True
    rows = found.nonzero().squeeze(1)
    if len(rows) == 0:
        return adv, oracle.queries
    xs = x[rows]
    cur = _boundary(oracle, xs, adv[rows], norm, theta, rows)
    dist = perturbation_norm(cur - xs, norm)
    for t in range(1, iterations + 1):
        # gradient-direction estimate at the boundary point from label flips of random perturbations
        delta = (math.sqrt(d) if norm == "l2" else d) * theta * dist.clamp_min(1e-12)
        evals = int(min(init_evals * math.sqrt(t), max_evals))
        signs_sum = torch.zeros(len(rows), dtype=x.dtype, device=x.device)
        u_sum = torch.zeros_like(cur)
        phi_u = torch.zeros_like(cur)
        done = 0
        while done < evals:
            k = min(chunk, evals - done)
            shape = (k, *cur.shape)
            if norm == "l2":
                u = torch.randn(shape, generator=generator, device=gdev).to(x)
            else:
                u = (2 * torch.rand(shape, generator=generator, device=gdev) - 1).to(x)
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(k, len(rows), *([1] * (x.dim() - 1)))
            pts = (cur[None] + delta.view(1, -1, *([1] * (x.dim() - 1))) * u).clamp(0, 1)
            u = (pts - cur[None]) / delta.view(1, -1, *([1] * (x.dim() - 1)))
            ok = oracle(pts.flatten(0, 1), rows.repeat(k)).view(k, len(rows))
            phi = ok.to(x.dtype) * 2 - 1
            signs_sum += phi.sum(0)
            u_sum += u.sum(0)
            phi_u += (phi.view(k, len(rows), *([1] * (x.dim() - 1))) * u).sum(0)
            done += k
        mean_phi = signs_sum / evals
        v = (phi_u - _col(mean_phi, cur) * u_sum) / max(evals - 1, 1)  # baseline-subtracted estimate
        same = mean_phi.abs() == 1  # every query on one side: no baseline
        v = torch.where(_col(same, cur), _col(mean_phi, cur) * u_sum / evals, v)
        direction = steepest(v, norm)
        # geometric step-size search: start at dist / sqrt(t), halve until the step stays adversarial
        step = dist / math.sqrt(t)
        moved = cur.clone()
        pending = torch.ones(len(rows), dtype=torch.bool, device=x.device)
        for _ in range(30):
            idx = pending.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            cand = (cur[idx] + _col(step[idx], cur[idx]) * direction[idx]).clamp(0, 1)
            ok = oracle(cand, rows[idx])
            moved[idx[ok]] = cand[ok]
            pending[idx[ok]] = False
            step = torch.where(pending, step / 2, step)
        new = _boundary(oracle, xs, moved, norm, theta, rows)
        new_dist = perturbation_norm(new - xs, norm)
        better = new_dist < dist
        cur = torch.where(_col(better, cur), new, cur)
        dist = torch.where(better, new_dist, dist)
    adv[rows] = cur
    return adv, oracle.queries


@ATTACKS.register("hopskipjump", help="HopSkipJump minimum distance (decision-based: labels only; L2 or Linf): "
                  "distances and queries per image", aliases=("hsj",))
class HopSkipJump(DistanceAttack):
    """HopSkipJump in the threat's norm. Chosen over the Boundary attack that Finlay & Oberman ran: the same
    decision-only access, far fewer queries for the same distance (Chen et al. 2020)."""

    kind = "black-box"
    Options = HopSkipJumpOptions

    def search(self, model, x, y, generator):
        """HopSkipJump from uniform-noise starts."""
        o = self.options
        adv, queries = hop_skip_jump(model, x, y, self.threat.norm, iterations=o.iterations, init_evals=o.init_evals,
                                     max_evals=o.max_evals, init_trials=o.init_trials, gamma=o.gamma, chunk=o.chunk,
                                     generator=generator)
        return adv, {"mean_queries": float(queries.double().mean())}


# ----------------------------------------------------------------------------------------------------- LogBarrier


@dataclass
class LogBarrierOptions(DistanceOptions):
    """LogBarrier (Finlay, Pooladian & Oberman 2019): from a misclassified start, minimise
    ||delta|| - mu·log(max_{j!=y} z_j - z_y) with mu shrinking, staying misclassified throughout."""

    outer: int = 12  # barrier rounds (mu shrinks by `shrink` after each)
    inner: int = 30  # proximal-gradient steps per round
    mu: float = 0.1  # first barrier weight, as a fraction of the starting distance
    shrink: float = 0.5  # mu factor per round
    eps_max: float | None = None  # largest start searched (noise, then PGD); default 0.5 Linf, 10 L2
    init_trials: int = 20  # noise scales tried before PGD (geometric up to eps_max)

    def validate(self) -> None:
        """Positive budgets."""
        super().validate()
        if self.outer < 1 or self.inner < 1 or self.mu <= 0 or not 0 < self.shrink < 1 or self.init_trials < 0:
            raise UserError("logbarrier needs outer, inner >= 1, mu > 0, 0 < shrink < 1 and init_trials >= 0")
        if self.eps_max is not None and self.eps_max <= 0:
            raise UserError("logbarrier eps_max must be > 0")


def prox_norm(v: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample proximal operator of alpha·||.|| (L2: block soft-threshold; Linf: v - alpha·P_{L1 ball}(v/alpha),
    i.e. clipping the largest entries to the level that removes L1 mass alpha)."""
    flat = v.flatten(1)
    a = alpha.to(v.dtype)
    if norm == "l2":
        nrm = flat.norm(dim=1).clamp_min(1e-30)
        return v * _col((1 - a / nrm).clamp_min(0), v)
    mag = flat.abs()
    srt = mag.sort(dim=1, descending=True).values
    csum = srt.cumsum(1)
    j = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=v.dtype)
    level = (csum - a[:, None]) / j  # candidate clip levels
    rho = ((srt - level) > 0).to(v.dtype).mul(j).argmax(1)  # last index where the level is below the entry
    lam = level.gather(1, rho[:, None]).squeeze(1).clamp_min(0)
    lam = torch.where(mag.sum(1) <= a, torch.zeros_like(lam), lam)
    return torch.maximum(torch.minimum(v, _col(lam, v)), -_col(lam, v))


def log_barrier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *, outer: int, inner: int, mu: float,
                shrink: float, eps_max: float, init_trials: int, generator: torch.Generator | None) -> torch.Tensor:
    """LogBarrier: proximal-gradient steps on ||delta|| - mu·log m(x + delta) from a misclassified start (m > 0
    is the logit margin); a step is taken only if it stays misclassified and lowers the objective, else its size
    halves. Returns the closest misclassified iterate (the clean image where no start was found)."""
    n = x.shape[0]
    gdev = generator.device if generator is not None else x.device
    start = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for i in range(init_trials):  # noise of growing size up to eps_max
        todo = (~found).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        scale = eps_max * 2.0 ** (-(init_trials - 1 - i) / 2)
        if norm == "linf":
            noise = (2 * torch.rand((len(todo), *x.shape[1:]), generator=generator, device=gdev) - 1).to(x) * scale
        else:
            noise = torch.randn((len(todo), *x.shape[1:]), generator=generator, device=gdev).to(x)
            noise = noise * _col(scale / noise.flatten(1).norm(dim=1).clamp_min(1e-12), noise)
        cand = (x[todo] + noise).clamp(0, 1)
        ok = fooled(model, cand, y[todo])
        start[todo[ok]] = cand[ok]
        found[todo[ok]] = True
    todo = (~found).nonzero().squeeze(1)
    if len(todo):  # PGD at eps_max for the rest
        cand, ok = pgd_per_sample_eps(model, x[todo], y[todo], norm, torch.full((len(todo),), eps_max).to(x),
                                      steps=20, step_ratio=0.25, init="zero", generator=generator)
        start[todo[ok]] = cand[ok]
        found[todo[ok]] = True
    rows = found.nonzero().squeeze(1)
    if len(rows) == 0:
        return start
    xs, ys = x[rows], y[rows]

    def objective(delta: torch.Tensor, weight: torch.Tensor, grad: bool) -> tuple[torch.Tensor, ...]:
        d = delta.clone().requires_grad_(grad)
        logits = model(xs + d)
        m = margin(logits, ys)
        barrier = -weight * torch.log(m.clamp_min(1e-30))
        value = torch.where(m > 0, perturbation_norm(d, norm) + barrier, torch.full_like(m, float("inf")))
        if not grad:
            return (value.detach(),)
        g = input_grad(barrier.sum(), d)  # gradient of the smooth part only
        return value.detach(), g

    delta = (start[rows] - xs).detach()
    size0 = perturbation_norm(delta, norm)
    best = delta.clone()
    best_size = size0.clone()
    weight = mu * size0
    alpha = 0.1 * size0
    for _ in range(outer):
        value, g = objective(delta, weight, True)
        for _ in range(inner):
            cand = prox_norm(delta - _col(alpha, delta) * g, alpha, norm)
            cand = (xs + cand).clamp(0, 1) - xs
            (new_value,) = objective(cand, weight, False)
            accept = new_value <= value
            delta = torch.where(_col(accept, delta), cand, delta)
            alpha = torch.where(accept, alpha * 1.5, alpha / 2).clamp_min(1e-12)
            with torch.no_grad():
                size = perturbation_norm(delta, norm)
                closer = accept & (size < best_size)
                best = torch.where(_col(closer, delta), delta, best)
                best_size = torch.where(closer, size, best_size)
            value, g = objective(delta, weight, True)
        weight = weight * shrink
    out = start.clone()
    out[rows] = xs + best
    return out


@ATTACKS.register("logbarrier", help="LogBarrier minimum distance (Finlay et al. 2019): log-barrier interior-point "
                  "descent from a misclassified start (L2 or Linf); distances per image", aliases=("log-barrier",))
class LogBarrier(DistanceAttack):
    """LogBarrier in the threat's norm (from the paper's description; proximal steps for the norm term)."""

    Options = LogBarrierOptions

    def search(self, model, x, y, generator):
        """Noise / PGD start, then the barrier descent."""
        o = self.options
        eps_max = o.eps_max if o.eps_max is not None else default_eps_max(self.threat.norm)
        return log_barrier(model, x, y, self.threat.norm, outer=o.outer, inner=o.inner, mu=o.mu, shrink=o.shrink,
                           eps_max=eps_max, init_trials=o.init_trials, generator=generator), {}


# ------------------------------------------------------------------------------------------------------- best-of

#: the members Finlay & Oberman combine (Boundary replaced by HopSkipJump)
DEFAULT_MEMBERS = ["cw-l2", "hopskipjump", "logbarrier", "min-dist"]


@dataclass
class BestOfOptions(DistanceOptions):
    """Per image, the smallest distance over several distance attacks (each with its own options)."""

    members: list[str] = field(default_factory=lambda: list(DEFAULT_MEMBERS))  # distance attacks combined
    member_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack name -> its options

    def validate(self) -> None:
        """Known distance attacks, options only for members."""
        super().validate()
        if not self.members:
            raise UserError("best-of needs at least one member attack, e.g. members=cw-l2,min-dist")
        for name in self.members:
            cls = ATTACKS.get(name)
            if not getattr(cls, "measures_distance", False) or cls is BestOf:
                raise UserError(f"best-of member '{name}' is not a minimum-distance attack; choose from "
                                f"{', '.join(distance_attack_names())}")
        stray = set(self.member_options) - set(self.members)
        if stray:
            raise UserError(f"best-of member_options names {sorted(stray)[0]!r}, which is not among members "
                            f"({', '.join(self.members)})")


def distance_attack_names() -> list[str]:
    """Registered minimum-distance attacks (best-of excluded)."""
    return [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "measures_distance", False) and n != "best-of"]


@ATTACKS.register("best-of", help="Per image, the smallest adversarial distance over several distance attacks "
                  "(default cw-l2, hopskipjump, logbarrier, min-dist); records which one won", aliases=("bestof",))
class BestOf(DistanceAttack):
    """Finlay & Oberman's d_i = min over attacks; per_sample ``winner`` and ``distance[<member>]``."""

    Options = BestOfOptions

    def _members(self) -> list[DistanceAttack]:
        o = self.options
        out = []
        for name in o.members:
            member = ATTACKS.get(name)(self.threat, **o.member_options.get(name, {}))
            member.setup(self.context)
            out.append(member)
        return out

    def distances(self, model, x, y, generator):
        """Run every member; keep the smallest distance per image."""
        dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        x_best = x.clone()
        winner: list[str | None] = [None] * x.shape[0]
        extra: dict[str, list[Any]] = {}
        info: dict[str, Any] = {"members": list(self.options.members)}
        for name, member in zip(self.options.members, self._members(), strict=True):
            d, xb, _, minfo = member.distances(model, x, y, generator)
            extra[f"distance[{name}]"] = [None if math.isinf(v) else v for v in d.tolist()]
            closer = d < dist
            for i in closer.nonzero().squeeze(1).tolist():
                winner[i] = name
            dist = torch.where(closer, d, dist)
            x_best = torch.where(_col(closer, x), xb, x_best)
            if minfo:
                info[name] = minfo
        zero = (dist == 0).tolist()
        extra["winner"] = ["clean" if z else w for z, w in zip(zero, winner, strict=True)]
        return dist, x_best, extra, info

    @classmethod
    def suited_to(cls, options, summary):
        """As suited as its members."""
        kinds: set[str] = set()
        for name in options.get("members") or DEFAULT_MEMBERS:
            try:
                kinds |= ATTACKS.get(name).suited_to((options.get("member_options") or {}).get(name, {}), summary)
            except Exception:
                continue
        return kinds
