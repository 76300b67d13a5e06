"""SCORPIO (Tsiligkaridis & Roberts): a quadratic-approximate adversarial regularizer; spec ``scorpio.md``.

The worst case of the quadratic model Q(v; x) = ∇ℓ(x)ᵀv + ½vᵀ∇²ℓ(x)v over the eps ball (Eqs. 3-4) is
approximated by N Frank-Wolfe steps (Eq. 7), the Hessian-vector product by forward-Euler or central
differences with a large step h (Eqs. 10-11), and the loss is regularized by ℓ_Q = ℓ(x + v_Q) − ℓ(x) (Eq. 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.passes import frozen
from advbench.core.tensors import per_sample, per_sample_norm, unit_direction
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy
from advbench.defenses.input_gradients import (
    LossFn,
    add_param_grads,
    autocast_off,
    ce_per_sample,
    fd_hvp,
    input_grad,
    trainable,
)
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: (h, r) per (dataset preset, threat norm, scheme, N) from the paper's supplementary "Hyperparameters"
HR_TABLE: dict[tuple[str, str, str, int], tuple[float, float]] = {
    ("cifar10", "l2", "fe", 3): (1.15, 1.05),
    ("cifar10", "l2", "fe", 1): (1.15, 1.05),
    ("cifar10", "l2", "cd", 3): (0.95, 0.999),
    ("cifar10", "l2", "cd", 1): (1.25, 0.999),
    ("cifar10", "linf", "fe", 3): (1.05, 1.05),
    ("cifar10", "linf", "fe", 1): (0.95, 1.05),
    ("cifar10", "linf", "cd", 3): (0.95, 1.15),
    ("cifar10", "linf", "cd", 1): (0.95, 1.15),
    ("svhn", "l2", "fe", 3): (1.25, 0.99),
    ("svhn", "linf", "fe", 3): (1.5, 1.25),
}


def dual_exponent(p: float) -> float:
    """Hölder conjugate q of p (1/p + 1/q = 1): 2 -> 2, inf -> 1, 1 -> inf."""
    if p == float("inf"):
        return 1.0
    if p == 1:
        return float("inf")
    return p / (p - 1)


def norm_order(norm: str) -> float:
    """Threat norm name ("linf", "l2") as a number p."""
    return float("inf") if norm == "linf" else 2.0


def lmo(d: torch.Tensor, p: float) -> torch.Tensor:
    """Linear-maximisation oracle: argmax_{||s||_p <= 1} <s, d> per sample (SCORPIO Eq. 8).

    p = inf: sign(d); p = 2: d/||d||_2; p = 1: a signed one-hot at argmax |d|; otherwise
    sign(d)|d|^(q-1) normalised to unit p-norm (the paper prints the exponent p/q, a typo: only q - 1
    attains <s, d> = ||d||_q). Samples with d = 0 get s = 0.
    """
    if p == float("inf"):
        return d.sign()
    if p == 2:
        return unit_direction(d)
    flat = d.flatten(1)
    if p == 1:
        idx = flat.abs().argmax(dim=1, keepdim=True)
        s = torch.zeros_like(flat).scatter(1, idx, flat.gather(1, idx).sign())
        return s.view_as(d)
    q = dual_exponent(p)
    s = flat.sign() * flat.abs().pow(q - 1)
    n = torch.linalg.vector_norm(s, ord=p, dim=1, keepdim=True)
    return (s / torch.where(n > 0, n, torch.ones_like(n))).view_as(d)


def frank_wolfe(grad_q: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, eps: float, p: float,
                steps: int, history: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Frank-Wolfe ascent on Q over the p-ball of radius eps (Eq. 7): s^k = eps·LMO(∇Q(v^k)),
    v^{k+1} = (1 − γ^k)v^k + γ^k s^k with γ^k = 2/(2 + k). No projection is needed; since γ^0 = 1, v^0 only
    enters through ∇Q(v^0). ``history`` (optional) receives v^1..v^N."""
    v = v0
    for k in range(steps):
        gamma = 2.0 / (2.0 + k)
        s = eps * lmo(grad_q(v), p)
        v = (1.0 - gamma) * v + gamma * s
        if history is not None:
            history.append(v.detach().clone())
    return v


def initial_v(g0: torch.Tensor, eps: float, p: float, init: str) -> torch.Tensor:
    """v^0: ``lmo`` = eps·LMO(g) (default; eps·sign(g) for Linf), ``text`` = eps·g/‖g‖_p (paper text),
    ``alg1`` = g (Algorithm 1 / Proposition 1: the raw per-sample gradient)."""
    if init == "lmo":
        return eps * lmo(g0, p)
    if init == "text":
        n = per_sample_norm(g0, p)
        return eps * g0 / per_sample(torch.where(n > 0, n, torch.ones_like(n)), g0)
    return g0.clone()


def fw_quadratic_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g0: torch.Tensor, *, eps: float,
                        p: float, steps: int, h: float, scheme: str = "fe", init: str = "lmo",
                        loss_fn: LossFn = ce_per_sample, history: list[torch.Tensor] | None = None) -> torch.Tensor:
    """v_Q ≈ argmax_{‖v‖_p ≤ eps} Q(v; x) by Frank-Wolfe with ∇_vQ(v) = g0 + ∇²ℓ(x)v (Eq. 9), the HVP by
    forward Euler (Eq. 10, g0 recycled: 1 forward/backward per step) or central differences (Eq. 11,
    2 per step). ``g0`` is the per-sample ∇ℓ(x). Returns v_Q detached. Call with the weights frozen."""
    fd_scheme = "central" if scheme == "cd" else "forward"
    g0 = g0.detach()

    def grad_q(v: torch.Tensor) -> torch.Tensor:
        return g0 + fd_hvp(model, x, y, v, h, scheme=fd_scheme, g0=g0, loss_fn=loss_fn)

    v0 = initial_v(g0, eps, p, init)
    return frank_wolfe(grad_q, v0, eps, p, steps, history).detach()


@dataclass
class ScorpioOptions:
    """SCORPIO options; (h, r) default to the paper's table for (preset, threat norm, scheme, N).

    scheme: fe (forward Euler, Eq. 10) | cd (central difference, Eq. 11). fw_steps: Frank-Wolfe steps N (1 or 3).
    h, r: FD step and regularization strength (None: the table; N other than 1 uses the N = 3 row).
    preset: which table (cifar10 | svhn; SVHN lists FE(3) only).
    init: v^0 (lmo = eps·LMO(g), text = eps·g/‖g‖_p, alg1 = g).
    detach_clean_in_reg: false = literal ℓ + r(ℓ(x+v_Q) − ℓ) (clean weight 1 − r); true = ℓ + r·ℓ(x+v_Q).
    attack_bn_mode: BN mode of the Frank-Wolfe forwards (not stated; train). clamp: clamp x + v_Q to [0, 1].
    """

    scheme: Literal["fe", "cd"] = "fe"
    fw_steps: int = 3
    h: float | None = None
    r: float | None = None
    preset: Literal["cifar10", "svhn"] = "cifar10"
    init: Literal["lmo", "text", "alg1"] = "lmo"
    detach_clean_in_reg: bool = False
    attack_bn_mode: Literal["train", "eval"] = "train"
    clamp: bool = False

    def validate(self) -> None:
        """fw_steps >= 1, h > 0, r >= 0."""
        if self.fw_steps < 1:
            raise UserError(f"scorpio fw_steps must be >= 1, got {self.fw_steps}")
        if self.h is not None and not self.h > 0:
            raise UserError(f"scorpio h must be > 0, got {self.h}")
        if self.r is not None and self.r < 0:
            raise UserError(f"scorpio r must be >= 0, got {self.r}")


def resolve_h_r(preset: str, norm: str, scheme: str, steps: int, h: float | None,
                r: float | None) -> tuple[float, float]:
    """(h, r) from the options, falling back to the paper's table (N = 1 row for one step, else N = 3)."""
    if h is not None and r is not None:
        return h, r
    key = (preset, norm, scheme, 1 if steps == 1 else 3)
    if key not in HR_TABLE:
        raise UserError(f"scorpio: the paper gives no (h, r) for {preset} {norm} {scheme.upper()}({key[3]}); "
                        "set both, e.g. --set h=1.05 --set r=1.05")
    th, tr = HR_TABLE[key]
    return (h if h is not None else th), (r if r is not None else tr)


@DEFENSES.register("scorpio", help="SCORPIO: CE + r·(CE(x+v_Q) − CE(x)), v_Q by Frank-Wolfe on an FD quadratic model")
class Scorpio(Defense):
    """ℓ(x) + r·ℓ_Q(x) with ℓ_Q = ℓ(x + v_Q) − ℓ(x) (Eq. 6), v_Q constant, no double backprop."""

    Options = ScorpioOptions

    @classmethod
    def dataset_options(cls, dataset: str) -> dict[str, Any]:
        """The (h, r) preset follows the run's dataset: SVHN runs use the paper's SVHN values (supplementary
        "Hyperparameters": L2 (1.25, 0.99), Linf (1.5, 1.25)), every other dataset the CIFAR-10 table."""
        return {"preset": "svhn"} if dataset == "svhn" else {}

    def __init__(self, threat: ThreatModel, options: ScorpioOptions | None = None, **overrides: Any) -> None:
        super().__init__(threat, options, **overrides)
        o = self.options
        self.h, self.r = resolve_h_r(o.preset, threat.norm, o.scheme, o.fw_steps, o.h, o.r)

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """Clean forward/backward (g0 and the clean weight gradient together), N (FE) or 2N (CD) FD
        forward/backward, one forward/backward at x + v_Q."""
        per = 2 if self.options.scheme == "cd" else 1
        n = per * self.options.fw_steps + 2.0
        return (n, n)

    def describe(self) -> dict:
        """Options plus the resolved (h, r)."""
        return {**super().describe(), "resolved": {"h": self.h, "r": self.r}}

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        o = self.options
        with frozen(model, o.attack_bn_mode):
            v = fw_quadratic_attack(model, x, y, g0, eps=self.threat.eps, p=norm_order(self.threat.norm),
                                    steps=o.fw_steps, h=self.h, scheme=o.scheme, init=o.init)
        xq = x + v
        return xq.clamp(0, 1) if o.clamp else xq

    def _clean_weight(self) -> float:
        return 1.0 if self.options.detach_clean_in_reg else 1.0 - self.r

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """(1 − r)·ℓ(x) + r·ℓ(x + v_Q) (literal) or ℓ(x) + r·ℓ(x + v_Q) (detach variant), batch means."""
        with autocast_off(x.device.type):
            base = input_grad(model, x, y, retain_graph=True)
            xq = self._attack(model, x, y, base.grad)
            out_q = model(xq)
            ce, ce_q = base.loss.mean(), F.cross_entropy(out_q, y)
        total = self._clean_weight() * ce + self.r * ce_q
        return total, self._logs(ce, ce_q, base.output, out_q, y)

    def _logs(self, ce: torch.Tensor, ce_q: torch.Tensor, out: torch.Tensor, out_q: torch.Tensor,
              y: torch.Tensor) -> dict[str, float]:
        return {"ce": float(ce.detach()), "reg": float((ce_q - ce).detach()), "acc": accuracy(out.detach(), y),
                "adv_acc": accuracy(out_q.detach(), y)}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, float]:
        """One backward at x gives g0 and the clean weight gradient; Frank-Wolfe; one backward at x + v_Q."""
        params = trainable(model)
        with autocast_off(x.device.type):
            base = input_grad(model, x, y, params=params)
            xq = self._attack(model, x, y, base.grad)
            out_q = model(xq)
            ce, ce_q = base.loss.detach().mean(), F.cross_entropy(out_q, y)
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(self.r * ce_q)
        add_param_grads(params, base.param_grads or [], ctx.grad_scale * self._clean_weight() / x.shape[0])
        optimizer.step()
        total = ce + self.r * (ce_q.detach() - ce) if not self.options.detach_clean_in_reg \
            else ce + self.r * ce_q.detach()
        return {"loss": float(total), **self._logs(ce, ce_q, base.output, out_q, y)}

