"""Randomized adversarial training via Taylor expansion (Jin et al., CVPR 2023), code-faithful by default.

The inner maximisation runs on randomly perturbed weights w + u (one Gaussian u per batch, on the chosen
layers); the outer loss adds first- and second-order Taylor terms (Eq. 8) that the authors' code turns into
gradient-gap-weighted soft labels built from the last linear layer's loss-gradient row sums (App. D,
Eq. 15–19; see ``docs/defenses-at.md`` for the exact construction). Bases: ``trades`` (default),
``awp-trades`` (AWP-TRADES) and ``pgd-at`` (the paper's Table 8 row; a reconstruction).

The row sums of ∂CE_mean/∂W are computed in closed form from the captured penultimate features
(r_j = (1/B) Σ_b (softmax(z_b)_j − 1[y_b = j])·Σ_i h_{b,i}), so RAT costs its base's passes; the weight
noise is applied functionally (no model copy).

``taylor=paper`` replaces the soft labels by the paper's literal terms (Eq. 8): the first-order term
E_u L(g′_s(w)ᵀu, g′_{s′}(w)ᵀu) and the second-order term ½ E_u L(uᵀg″_s(w)u, uᵀg″_{s′}(w)u), with L the TRADES
KL on the two logit-space vectors, u Gaussian weight noise of std ``noise_std`` on the ``taylor_layers``
parameters, and the directional derivatives computed in forward mode (``torch.func.jvp`` through
``torch.func.functional_call``; a jvp of the jvp gives uᵀg″u). E_u is estimated with ``taylor_samples`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from advbench.attacks.pgd import pgd_perturb
from advbench.attacks.training import TrainingAttackOptions, trades_kl_attack
from advbench.core.passes import frozen
from advbench.defenses.base import DEFENSES, Defense, StepContext, accuracy, check_positive
from advbench.defenses.kl_divergence import kl_to_log_target, kl_to_target
from advbench.defenses.trades import trades_objective
from advbench.defenses.weight_perturbation import awp_perturbation, perturbed_forward
from advbench.errors import UserError
from advbench.models import last_linear


def reg_gap(v: torch.Tensor, cc: float) -> tuple[torch.Tensor, int]:
    """The authors' ``reg_gap`` soft-label matrix (App. D, Eq. 17/19 targets) and how many guards fired.

    v ← v − min v, v ← v/Σv; every row of a C×C matrix is v with its diagonal zeroed, rescaled to sum
    ``cc``; the diagonal is 1 − cc. Guards (absent in the released code, which yields NaN): a constant v
    becomes uniform; a row whose off-diagonal mass is 0 gets uniform off-diagonal mass.
    """
    c = v.numel()
    guards = 0
    v = v - v.min()
    total = v.sum()
    if not bool(total > 0):
        v = torch.ones_like(v)
        guards += 1
        total = v.sum()
    v = v / total
    m = v.expand(c, c).clone()
    m.fill_diagonal_(0.0)
    rows = m.sum(dim=1, keepdim=True)
    bad = rows.squeeze(1) <= 0
    if bool(bad.any()):
        fill = torch.ones(c, c, dtype=v.dtype, device=v.device)
        fill.fill_diagonal_(0.0)
        m[bad] = fill[bad]
        rows = m.sum(dim=1, keepdim=True)
        guards += int(bad.sum())
    m = m / rows * cc
    m.diagonal().fill_(1.0 - cc)
    return m, guards


def last_layer_row_sums(logits: torch.Tensor, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row sums of ∂CE_mean(z, y)/∂W for z = W h + b, in closed form: (1/B) Σ_b (softmax(z_b) − e_{y_b})·Σ_i h_{b,i}."""
    p = F.softmax(logits.detach(), dim=1)
    p = p - F.one_hot(y, logits.shape[1]).to(p.dtype)
    return (p * feats.detach().flatten(1).sum(dim=1, keepdim=True)).mean(dim=0)


def taylor_targets(r_nat: torch.Tensor, r_adv: torch.Tensor, y: torch.Tensor, cc: float,
                   second_target: str = "code") -> tuple[dict[str, torch.Tensor], int]:
    """Soft labels of the first- and second-order terms (App. D, Eq. 17, 19 as in the code), indexed by y.

    first: y1 = reg_gap(|r_nat| − |r_adv|)[y] (paired with the adversarial output), y2 = reg_gap(|r_adv| − |r_nat|)[y]
    (clean output); second: yy2 = reg_gap(r_adv² − r_nat²)[y] for the clean output and, for the adversarial output,
    the same matrix (``code``) or reg_gap(r_nat² − r_adv²)[y] (``symmetric``, the pattern of Eq. 17/19).
    """
    t1n, t1a = r_nat.abs(), r_adv.abs()
    t2n, t2a = r_nat * r_nat, r_adv * r_adv
    m1, g1 = reg_gap(t1n - t1a, cc)
    m1_, g2 = reg_gap(t1a - t1n, cc)
    m2_, g3 = reg_gap(t2a - t2n, cc)
    guards = g1 + g2 + g3
    if second_target == "symmetric":
        m2, g4 = reg_gap(t2n - t2a, cc)
        guards += g4
    else:
        m2 = m2_
    return {"y1": m1[y], "y2": m1_[y], "yy1": m2[y], "yy2": m2_[y]}, guards


def taylor_terms(logits: torch.Tensor, logits_adv: torch.Tensor, targets: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, second) = ½[KL(y1 ‖ q(z′)) + KL(y2 ‖ q(z))], ½[KL(yy1 ‖ q(z′)) + KL(yy2 ‖ q(z))], batch means."""
    lq, lqa = F.log_softmax(logits, dim=1), F.log_softmax(logits_adv, dim=1)
    first = 0.5 * (kl_to_target(lqa, targets["y1"]) + kl_to_target(lq, targets["y2"]))
    second = 0.5 * (kl_to_target(lqa, targets["yy1"]) + kl_to_target(lq, targets["yy2"]))
    return first, second


def directional_derivatives(model: nn.Module, x: torch.Tensor, u: dict[str, torch.Tensor], order: int,
                            shift: dict[str, torch.Tensor] | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(f_w(x), g′(w)ᵀu, uᵀg″(w)u) of the logits g(w) = f_w(x) along the weight direction ``u`` (name → tensor),
    in forward mode: ``jvp`` of ``functional_call``, and a jvp of that jvp for the second order (``order`` 2;
    ``None`` for order 1). The weights are w + ``shift`` (AWP's v) where given. The outputs keep their graph
    to w, so a loss on them trains w. Buffers are passed as fresh copies: the forward uses the model's mode
    (train-mode BN: batch statistics) and leaves its running statistics alone."""
    params = dict(model.named_parameters())
    shift = shift or {}
    point = {n: params[n] + shift[n] if n in shift else params[n] for n in params}
    names = list(u)
    buffers = dict(model.named_buffers())
    tangents = tuple(u[n] for n in names)

    def logits(*ws: torch.Tensor) -> torch.Tensor:
        state = {**point, **dict(zip(names, ws, strict=True)), **{k: b.clone() for k, b in buffers.items()}}
        return functional_call(model, state, (x,))

    primals = tuple(point[n] for n in names)
    if order == 1:
        out, first = jvp(logits, primals, tangents)
        return out, first, None

    def with_first(*ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return jvp(logits, ws, tangents)

    (out, first), (_, second) = jvp(with_first, primals, tangents)
    return out, first, second


def paper_taylor_terms(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, draws: list[dict[str, torch.Tensor]],
                       order: int, shift: dict[str, torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The paper's Taylor terms (Eq. 8) averaged over the weight directions ``draws``:
    first = E_u KL(q(g′_s u) ‖ q(g′_{s′} u)), second = E_u KL(q(uᵀg″_s u) ‖ q(uᵀg″_{s′} u)) (without the ½,
    which is the ``second_factor``), q = softmax, batch-mean KL as in TRADES (target not detached);
    ``second`` is None for order 1."""
    firsts, seconds = [], []
    for u in draws:
        _, j_nat, h_nat = directional_derivatives(model, x, u, order, shift)
        _, j_adv, h_adv = directional_derivatives(model, x_adv, u, order, shift)
        firsts.append(kl_to_log_target(F.log_softmax(j_adv, dim=1), F.log_softmax(j_nat, dim=1)))
        if order == 2:
            assert h_nat is not None and h_adv is not None
            seconds.append(kl_to_log_target(F.log_softmax(h_adv, dim=1), F.log_softmax(h_nat, dim=1)))
    first = torch.stack(firsts).mean()
    return first, (torch.stack(seconds).mean() if seconds else None)


class _Capture:
    """Records the input of a module on every forward (the penultimate features of the last linear layer)."""

    def __init__(self, module: nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.inputs.append(inputs[0].detach())

    def __enter__(self) -> _Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@dataclass
class TaylorSettings:
    """The RAT fields listed before the training attack's options: the base, the Taylor terms (order, η, β,
    cc, CE weight, second-order factor and target) and the attack's weight noise."""

    base: Literal["trades", "awp-trades", "pgd-at", "awp"] = "trades"
    order: Literal["1", "1+2"] = "1+2"
    eta: float | None = None
    beta: float = 6.0
    cc: float | None = None
    ce_weight: Literal["one_minus_eta", "one"] = "one_minus_eta"
    second_factor: float = 0.5
    second_target: Literal["code", "symmetric"] = "code"
    noise_std: float = 1e-4
    noise_layers: Literal["conv", "weights", "all"] = "conv"
    awp_noise_in_attack: bool = False
    taylor: Literal["code", "paper"] = "code"
    taylor_layers: Literal["noise", "conv", "weights", "all", "last"] = "noise"
    taylor_samples: int = 1


@dataclass
class RATOptions(TrainingAttackOptions, TaylorSettings):
    """RAT options. Defaults are the authors' code (``Alexkael/Randomized-Adversarial-Training``): base
    TRADES, 1st + 2nd order with η 0.2 (0.3 for order 1), β 6, CE weight 1 − η, second-order factor 0.5
    with the code's target, cc 0.8 for 10 classes / 0.98 for 100 (set it for other class counts), weight
    noise of absolute std 1e-4 on conv layers during the attack (none for AWP-TRADES unless
    ``awp_noise_in_attack``), TRADES attack (10 × eps/4, 0.001·N start, eval-mode BN), AWP γ 0.005 after
    10 warm-up epochs. Paper readings: ``ce_weight=one``, ``second_target=symmetric``, ``noise_std=0.01``,
    ``noise_layers=weights``, ``awp_noise_in_attack=true``, ``taylor=paper`` (Eq. 8's derivative terms in forward
    mode over ``taylor_layers`` with ``taylor_samples`` draws of u instead of the code's soft labels)."""

    init_std: float = 0.001
    attack_bn_mode: Literal["eval", "train"] = "eval"
    gamma: float = 0.005
    warmup_epochs: int = 10
    proxy_lr: float = 0.1

    def __post_init__(self) -> None:
        if self.base == "awp":  # the spelling of AWP-TRADES
            self.base = "awp-trades"
        if isinstance(self.order, int):
            self.order = "1" if self.order == 1 else "1+2"  # type: ignore[assignment]

    def validate(self) -> None:
        """Ranges of η, β, cc, the noise and the attack."""
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise UserError(f"rat eta must be in [0, 1], got {self.eta}")
        if self.cc is not None and not 0.0 <= self.cc <= 1.0:
            raise UserError(f"rat cc must be in [0, 1], got {self.cc}")
        check_positive(self.beta, "rat beta", allow_zero=True)
        check_positive(self.noise_std, "rat noise_std", allow_zero=True)
        check_positive(self.second_factor, "rat second_factor", allow_zero=True)
        check_positive(self.gamma, "rat gamma", allow_zero=True)
        if int(self.taylor_samples) < 1:
            raise UserError(f"rat taylor_samples must be at least 1, got {self.taylor_samples}")
        self.check_attack("rat")

    @property
    def resolved_eta(self) -> float:
        """η (0.2 for 1st + 2nd, 0.3 for 1st only unless set)."""
        if self.eta is not None:
            return float(self.eta)
        return 0.2 if self.order == "1+2" else 0.3


@DEFENSES.register("rat", help="Randomized AT via Taylor expansion (Jin et al. 2023) on TRADES, AWP-TRADES or PGD-AT")
class RAT(Defense):
    """min_w E[(1 − η)·L_base + η·first + ½η·second], x′ crafted on w + u, u ~ N(0, σ²) (Eq. 3–8, App. D)."""

    epoch_options = ("warmup_epochs",)

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        return str(options.get("base", "trades")) in ("trades", "awp-trades", "awp")  # on a TRADES-like base

    Options = RATOptions

    @property
    def inherent_passes(self) -> tuple[float, float]:  # type: ignore[override]
        """The base method's passes (the code's Taylor statistics are closed-form); PGD-AT base adds a clean pass.
        ``taylor=paper`` adds one forward-mode call per draw of u for each of the clean and adversarial batch
        (counted as a forward: one call of the model that carries the jvp or jvp-of-jvp tangents; the
        backward runs through the tangents, not through the counted logits)."""
        o = self.options
        k = float(o.steps)
        extra = 2.0 * int(o.taylor_samples) if self.paper_terms_active else 0.0
        if o.base == "awp-trades":
            return (k + 5.0 + extra, k + 4.0)
        if o.base == "pgd-at":
            if o.resolved_eta > 0 and o.taylor == "code":
                return (k + 2.0, k + 2.0)
            return (k + 1.0 + extra, k + 1.0)
        return (k + 3.0 + extra, k + 2.0)

    @property
    def paper_terms_active(self) -> bool:
        """Whether a step computes the paper's derivative terms (``taylor=paper``, η > 0, σ > 0)."""
        o = self.options
        return o.taylor == "paper" and o.resolved_eta > 0 and o.noise_std > 0

    def describe(self) -> dict[str, Any]:
        """Options plus η and the step size used; flags the PGD-AT base as a reconstruction."""
        o = self.options
        resolved: dict[str, Any] = {
            "eta": o.resolved_eta,
            "step_size": self.alpha,
            "cc": o.cc if o.cc is not None else "0.8 for 10 classes, 0.98 for 100",
        }
        if o.base == "pgd-at":
            resolved["note"] = "pgd-at base is a reconstruction: not specified in the paper or the authors' code"
        return {**super().describe(), "resolved": resolved}

    def cc_for(self, num_classes: int) -> float:
        """Off-diagonal soft-label mass: the option, else 0.8 for 10 classes and 0.98 for 100 (the code's)."""
        if self.options.cc is not None:
            return float(self.options.cc)
        if num_classes == 10:
            return 0.8
        if num_classes == 100:
            return 0.98
        raise UserError(f"rat: cc is only defined for 10 or 100 classes in the authors' code; "
                        f"set it for {num_classes} classes, e.g. --set cc=0.8")

    def noisy_params(self, model: nn.Module) -> list[str]:
        """Names of the parameters that get weight noise in the attack."""
        return self.select_params(model, self.options.noise_layers)

    def taylor_params(self, model: nn.Module) -> list[str]:
        """Names of the parameters the paper's Taylor terms differentiate along (``taylor_layers``)."""
        layers = self.options.taylor_layers
        return self.select_params(model, self.options.noise_layers if layers == "noise" else layers)

    def select_params(self, model: nn.Module, layers: str) -> list[str]:
        """Parameter names of a layer choice: ``all``, ``weights`` (ndim ≥ 2), ``conv`` (parameters of conv
        modules) or ``last`` (the weight of the last linear layer, App. D's W)."""
        if layers == "last":
            head = last_linear(model)
            return [n for n, p in model.named_parameters() if p is head.weight]
        if layers == "all":
            return [n for n, _ in model.named_parameters()]
        if layers == "weights":
            return [n for n, p in model.named_parameters() if p.dim() >= 2]
        names = []
        for mod_name, mod in model.named_modules():
            if isinstance(mod, nn.modules.conv._ConvNd):
                names += [f"{mod_name}.{n}" if mod_name else n for n, _ in mod.named_parameters(recurse=False)]
        return names

    def weight_noise(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """One Gaussian draw u (std ``noise_std``) for the selected parameters; empty when std is 0."""
        o = self.options
        noise_on = o.base != "awp-trades" or o.awp_noise_in_attack
        if o.noise_std == 0 or not noise_on:
            return {}
        params = dict(model.named_parameters())
        with torch.no_grad():
            return {n: o.noise_std * torch.randn_like(params[n]) for n in self.noisy_params(model)}

    def taylor_draws(self, model: nn.Module) -> list[dict[str, torch.Tensor]]:
        """``taylor_samples`` independent Gaussian directions u (std ``noise_std``) on the ``taylor_layers``."""
        params = dict(model.named_parameters())
        names = self.taylor_params(model)
        if not names:
            raise UserError("rat taylor=paper: taylor_layers selects no parameter of this model; "
                            "choose another, e.g. --set taylor_layers=weights")
        with torch.no_grad():
            return [{n: self.options.noise_std * torch.randn_like(params[n]) for n in names}
                    for _ in range(int(self.options.taylor_samples))]

    @property
    def alpha(self) -> float:
        """The attack's step size: eps/4 unless set (L2 on a TRADES base: the TRADES code's 2·eps/steps)."""
        o = self.options
        return o.step(self.threat, "eps/4" if o.base == "pgd-at" else "2eps/K")

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Inner maximisation on w + u (Eq. 4): TRADES KL-PGD, or CE-PGD for the PGD-AT base."""
        o = self.options
        u = self.weight_noise(model)
        with frozen(model, o.attack_bn_mode):
            fwd = perturbed_forward(model, u)
            if o.base == "pgd-at":
                return pgd_perturb(fwd, x, y, self.threat, steps=o.steps, alpha=self.alpha,  # type: ignore[arg-type]
                                   init="uniform", select="last")
            return trades_kl_attack(fwd, x, self.threat, steps=o.steps, alpha=self.alpha, init_std=o.init_std)

    def loss(self, model, x, y, ctx: StepContext):
        """(1 − η)·CE + β·KL(f(x) ‖ f(x′)) + η·first + second_factor·η·second (code-faithful App. D, or the
        paper's derivative terms with ``taylor=paper``)."""
        o = self.options
        eta = o.resolved_eta
        x_adv = self.craft(model, x, y)
        v: dict[str, torch.Tensor] = {}
        if o.base == "awp-trades" and ctx.epoch >= o.warmup_epochs and o.gamma > 0:
            def objective(m: nn.Module) -> torch.Tensor:
                return trades_objective(m(x), m(x_adv), y, o.beta)[0]

            v = awp_perturbation(model, objective, o.gamma, o.proxy_lr)
        forward = perturbed_forward(model, v)
        need_clean = o.base != "pgd-at" or (eta > 0 and o.taylor == "code")  # the paper's terms take x itself
        with _Capture(last_linear(model, ctx.num_classes)) as cap:
            logits = forward(x) if need_clean else None
            logits_adv = forward(x_adv)
        logs: dict[str, float] = {"adv_acc": accuracy(logits_adv, y)}
        if logits is not None:
            logs["acc"] = accuracy(logits, y)
        ce_w = 1.0 - eta if o.ce_weight == "one_minus_eta" else 1.0
        if o.base == "pgd-at":
            ce = F.cross_entropy(logits_adv, y)
            loss = ce_w * ce if eta > 0 else ce
        else:
            assert logits is not None
            ce = F.cross_entropy(logits, y)
            robust = kl_to_log_target(F.log_softmax(logits_adv, dim=1), F.log_softmax(logits, dim=1))
            loss = (ce_w * ce if eta > 0 else ce) + o.beta * robust
            logs["kl"] = float(robust.detach())
        logs["ce"] = float(ce.detach())
        if eta > 0 and o.taylor == "paper":
            if self.paper_terms_active:
                first_t, second_t = paper_taylor_terms(model, x, x_adv, self.taylor_draws(model),
                                                       2 if o.order == "1+2" else 1, v)
            else:  # σ = 0: u = 0, both vectors are 0 and every KL is 0
                first_t, second_t = loss.new_zeros(()), loss.new_zeros(()) if o.order == "1+2" else None
            loss = loss + eta * first_t
            logs["rat_first"] = float(first_t.detach())
            if second_t is not None:
                loss = loss + o.second_factor * eta * second_t
                logs["rat_second"] = float(second_t.detach())
            return loss, logs
        if eta > 0:
            assert logits is not None
            h_nat, h_adv = cap.inputs[0], cap.inputs[1]
            r_nat = last_layer_row_sums(logits, h_nat, y)
            r_adv = last_layer_row_sums(logits_adv, h_adv, y)
            targets, guards = taylor_targets(r_nat, r_adv, y, self.cc_for(logits.shape[1]), o.second_target)
            first, second = taylor_terms(logits, logits_adv, targets)
            loss = loss + eta * first
            logs["rat_first"] = float(first.detach())
            if o.order == "1+2":
                loss = loss + o.second_factor * eta * second
                logs["rat_second"] = float(second.detach())
            logs["rat_guards"] = float(guards)
        return loss, logs
