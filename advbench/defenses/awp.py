"""Adversarial weight perturbation (Wu et al. 2020) on top of PGD-AT (``awp``) or TRADES (``trades-awp``).

Per batch: craft x′ with the base method's attack; take one plain-SGD ascent step of the base objective on
the weights and turn it into a per-layer relative perturbation v_k = γ·‖w_k‖·g_k/‖g_k‖ of every conv and
linear weight (no BN, no biases); compute the base loss at w + v and step the optimizer with that gradient.

The reference code adds v to the weights in place, steps, and subtracts v from the updated weights. Here
the loss is evaluated at w + v functionally (``torch.func.functional_call``), so the optimizer steps the
unperturbed weights with ∇L(w + v): the weights after the step are exactly an unperturbed optimizer step on
the perturbed loss and the perturbation is removed exactly (no floating-point residue). The one difference
to the reference is that weight decay acts on w instead of w + v (a change of lr·wd·v per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.training import Forward, TrainingAttackOptions, pgd_examples, trades_examples
from advbench.defenses.base import DEFENSES, Defense, StepContext, check_positive, device_accuracy
from advbench.defenses.kl_divergence import KLReduction
from advbench.defenses.trades import trades_objective
from advbench.defenses.weight_perturbation import BufferStash, awp_perturbation, perturbed_forward
from advbench.errors import UserError

#: per-base defaults of the options left at None (AT-AWP: ``AT_AWP/train_cifar10.py``; TRADES-AWP:
#: ``trades_AWP/train_trades_cifar.py`` of ``csdongxian/AWP``)
AWP_DEFAULTS: dict[str, dict[str, Any]] = {
    "pgd-at": {"gamma": 0.01, "warmup_epochs": 0, "proxy_lr": 0.01, "init": "uniform", "attack_bn_mode": "train"},
    "trades": {"gamma": 0.005, "warmup_epochs": 10, "proxy_lr": 0.1, "init": "normal", "attack_bn_mode": "eval"},
}


@dataclass
class WeightPerturbationSettings:
    """The AWP fields listed before the training attack's options: the base method, γ, the warm-up, the
    proxy step and the TRADES base's β and KL reduction."""

    base: Literal["pgd-at", "trades"] = "pgd-at"
    gamma: float | None = None
    warmup_epochs: int | None = None
    proxy_lr: float | None = None
    proxy_bn_mode: Literal["train", "eval"] = "train"
    beta: float = 6.0  # trades base only
    kl_reduction: KLReduction = "batchmean"  # trades base only


@dataclass
class AWPOptions(TrainingAttackOptions, WeightPerturbationSettings):
    """AWP options. ``base`` picks the method under the weight perturbation; options left at None take that
    base's reference default (AT-AWP: γ 0.01, no warm-up, uniform start, BN mode of the model = train;
    TRADES-AWP: γ 0.005, 10 warm-up epochs, 0.001·N start, eval-mode BN, β 6). ``proxy_lr`` only scales the
    proxy step, which the relative normalisation cancels (kept for fidelity)."""

    init: Literal["uniform", "normal", "zero"] | None = None
    attack_bn_mode: Literal["train", "eval"] | None = None

    def validate(self) -> None:
        """Non-negative γ, warm-up and β; a sane attack."""
        if self.gamma is not None:
            check_positive(self.gamma, "awp gamma", allow_zero=True)
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise UserError(f"awp warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.proxy_lr is not None:
            check_positive(self.proxy_lr, "awp proxy_lr")
        check_positive(self.beta, "awp beta", allow_zero=True)
        self.check_attack("awp")
        if self.base == "trades" and self.init == "uniform":
            raise UserError("awp with base=trades starts from x + 0.001·N (init=normal) or x (init=zero), not uniform")

    def resolved(self, key: str) -> Any:
        """The value of option ``key`` with None replaced by the base's default."""
        value = getattr(self, key)
        return AWP_DEFAULTS[self.base][key] if value is None else value


@dataclass
class TRADESAWPOptions(AWPOptions):
    """TRADES-AWP: the ``awp`` options with ``base = trades`` (γ 0.005, 10 warm-up epochs, β 6)."""

    base: Literal["pgd-at", "trades"] = "trades"


@DEFENSES.register("awp", help="Adversarial weight perturbation on PGD-AT (AT-AWP, Wu et al. 2020); base=trades "
                               "gives TRADES-AWP")
class AWP(Defense):
    """min_w max_{‖v_k‖ ≤ γ‖w_k‖} base loss at w + v, one ascent step for v, x′ crafted at w."""

    epoch_options = ("warmup_epochs",)

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return options.get("base") == "trades"  # AWP on a TRADES base

    Options = AWPOptions

    def __init__(self, threat: Any, options: Any | None = None, **overrides: Any) -> None:
        super().__init__(threat, options, **overrides)
        self._stash = BufferStash()  # the proxy step's saved BN statistics, allocated once

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """Base attack, one proxy forward/backward of the base objective, the base training passes."""
        k = float(self.options.steps)
        if self.options.base == "trades":
            return (k + 5.0, k + 4.0)
        return (k + 2.0, k + 2.0)

    def describe(self) -> dict[str, Any]:
        """Options plus the base-dependent defaults actually used."""
        o = self.options
        resolved = {k: o.resolved(k) for k in AWP_DEFAULTS[o.base]}
        resolved["step_size"] = self.alpha
        return {**super().describe(), "resolved": resolved}

    def active(self, epoch: int) -> bool:
        """Whether the weight perturbation is on in ``epoch`` (after the warm-up)."""
        return epoch >= int(self.options.resolved("warmup_epochs")) and float(self.options.resolved("gamma")) > 0

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Record whether AWP is active this epoch and its γ."""
        return {"awp_active": float(self.active(epoch)), "awp_gamma": float(self.options.resolved("gamma"))}

    @property
    def alpha(self) -> float:
        """The attack's step size: eps/4 unless set (L2 on the TRADES base: the TRADES code's 2·eps/steps)."""
        o = self.options
        return o.step(self.threat, "2eps/K" if o.base == "trades" else "eps/4")

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The base method's adversarial examples at the unperturbed weights."""
        o = self.options
        bn = o.resolved("attack_bn_mode")
        init = o.resolved("init")
        if o.base == "trades":
            std = 0.001 if init == "normal" else 0.0
            return trades_examples(model, x, self.threat, steps=o.steps, alpha=self.alpha, init_std=std,
                                   init_clamp=False, bn_mode=bn)
        return pgd_examples(model, x, y, self.threat, steps=o.steps, alpha=self.alpha, init=init, restarts=1,
                            bn_mode=bn)

    def objective(self, forward: Forward, x: torch.Tensor, x_adv: torch.Tensor,
                  y: torch.Tensor, with_logs: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The base training objective through ``forward``: CE(f(x′)) or TRADES CE(f(x)) + β·KL(f(x) ‖ f(x′)).
        Logged values stay on the device; ``with_logs=False`` (the proxy step) computes none."""
        o = self.options
        if o.base == "trades":
            logits, logits_adv = forward(x), forward(x_adv)
            loss, ce, kl = trades_objective(logits, logits_adv, y, o.beta, o.kl_reduction)
            if not with_logs:
                return loss, {}
            return loss, {"acc": device_accuracy(logits, y), "adv_acc": device_accuracy(logits_adv, y),
                          "ce": ce.detach(), "kl": kl.detach()}
        logits_adv = forward(x_adv)
        return F.cross_entropy(logits_adv, y), {"adv_acc": device_accuracy(logits_adv, y)} if with_logs else {}

    def perturbation(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                     y: torch.Tensor, ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        """v = γ·‖w‖·∇/‖∇‖ per layer from one ascent step of the base objective (see :func:`awp_perturbation`);
        under distributed training the proxy gradient is that of the whole global batch."""
        o = self.options
        average = ctx.average if ctx is not None and ctx.distributed else None
        return awp_perturbation(model, lambda m: self.objective(m, x, x_adv, y, with_logs=False)[0],
                                float(o.resolved("gamma")), float(o.resolved("proxy_lr")), o.proxy_bn_mode,
                                average=average, stash=self._stash)

    def loss(self, model, x, y, ctx: StepContext):
        """Base loss at the adversarially perturbed weights w + v; its gradient flows into w."""
        x_adv = self.craft(model, x, y)
        v = self.perturbation(model, x, x_adv, y, ctx) if self.active(ctx.epoch) else {}
        loss, logs = self.objective(perturbed_forward(model, v), x, x_adv, y)
        if v:  # on the device: read with the other logs once per logging interval
            with torch.no_grad():
                logs["awp_rel_norm"] = (torch.stack([dv.norm() for dv in v.values()]).norm()
                                        / torch.stack([p.norm() for n, p in model.named_parameters() if n in v]).norm())
        return loss, logs


@DEFENSES.register("trades-awp", help="TRADES-AWP: adversarial weight perturbation on TRADES (Wu et al. 2020)")
class TRADESAWP(AWP):
    """AWP on TRADES: the ``awp`` defense with ``base = trades`` and TRADES-AWP's reference defaults."""

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return True

    Options = TRADESAWPOptions
