"""The attack interface: ``attack(model, x, y) -> AttackResult``.

An attack runs the model in eval mode with parameter gradients off and restores both afterwards,
returns images in [0, 1] inside the eps ball, and counts its forward and backward passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from advbench.config import apply_overrides, config_to_dict
from advbench.core.passes import PassCounter, frozen
from advbench.registry import Registry
from advbench.threat import ThreatModel


@dataclass
class AttackResult:
    """Adversarial images, per-sample correctness after the attack, and the passes it cost.

    ``per_sample`` holds extra per-image measurements (lists of length B: queries, distances, ...);
    ``info`` holds per-batch facts (AutoAttack's sanity-check warnings, components run, ...).
    """

    x_adv: torch.Tensor
    correct: torch.Tensor  # bool [B]
    forward: int  # examples sent forward (divide by B for passes per image)
    backward: int
    per_sample: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackContext:
    """What an evaluation gives attacks beyond (model, x, y): a transfer source, a state directory.

    ``state_dir`` is where resumable attacks (AutoAttack) keep per-batch state files, ``key`` and
    ``batch`` name the current suite entry and batch, ``hook(event, **info)`` is called at internal
    checkpoints (tests use it to simulate a crash).
    """

    source_model: nn.Module | None = None
    source: dict[str, Any] | None = None
    state_dir: Path | None = None
    key: str = ""
    batch: int = 0
    hook: Callable[..., None] | None = None

    def available(self) -> set[str]:
        """Names of the optional resources present (``source_model``)."""
        return {"source_model"} if self.source_model is not None else set()

    def emit(self, event: str, **info: Any) -> None:
        """Call the hook, if any."""
        if self.hook is not None:
            self.hook(event, key=self.key, batch=self.batch, **info)


@dataclass
class Perturbation:
    """What :meth:`Attack.perturb_ex` returns: images plus optional measurements.

    ``correct`` (bool [B]) overrides the correctness recomputed from ``x_adv`` when the attack has
    its own verdict (AutoAttack's robust flags); ``x_adv`` must then agree with it.
    """

    x_adv: torch.Tensor
    per_sample: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    correct: torch.Tensor | None = None


@dataclass
class NoOptions:
    """An attack without options."""


AttackKind = Literal["white-box", "black-box"]

#: kinds of gradient masking the model probe tells apart (advbench.engine.adapt) and attacks declare themselves
#: suited to (:meth:`Attack.suited_to`)
MASKING_KINDS = ("randomized", "non-differentiable", "saturated", "unexplained")
#: losses whose ascent direction survives saturated logits (no softmax: gradients do not underflow)
SCALE_FREE_LOSSES = ("cw", "dlr", "margin", "log-margin")


class Attack:
    """Base class. Subclasses set ``name``, ``Options`` and implement :meth:`perturb` (or :meth:`perturb_ex`).

    ``kind`` says whether the attack uses the target's gradients (``white-box``) or only its outputs /
    another model (``black-box``: Square, SimBA, RayS, transfer); hygiene checks compare the two.
    ``needs`` names context resources the attack cannot run without (``source_model`` for transfer).
    """

    name: ClassVar[str] = ""  # set by ATTACKS.register
    Options: ClassVar[type] = NoOptions
    kind: ClassVar[AttackKind] = "white-box"
    needs: ClassVar[tuple[str, ...]] = ()
    #: costs far more than a PGD-20 per image (AutoAttack and its components, query-based and minimum-distance
    #: attacks): shortened evaluations (smoke scale) run it on fewer images
    expensive: ClassVar[bool] = False
    #: a minimum-distance attack (advbench.attacks.distances): per-image distances, correct at eps iff d > eps; it
    #: does not maximise a loss at eps, so checks comparing attack strength at one eps leave it out
    measures_distance: ClassVar[bool] = False

    def __init__(self, threat: ThreatModel, options: Any | None = None, **overrides: Any) -> None:
        self.threat = threat
        opts = options if options is not None else self.Options()
        self.options = apply_overrides(opts, overrides, f"attack '{self.name}'") if overrides else opts
        self.context = AttackContext()

    def setup(self, context: AttackContext) -> None:
        """Give the attack its evaluation context (transfer source, state directory)."""
        self.context = context

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Return adversarial images for a model that is already frozen in eval mode."""
        raise NotImplementedError

    def perturb_ex(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> Perturbation:
        """Adversarial images plus per-sample measurements; defaults to :meth:`perturb` with none."""
        return Perturbation(self.perturb(model, x, y, generator))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> AttackResult:
        """Attack ``model`` on ``(x, y)``; the model's mode and weights are left unchanged."""
        missing = [n for n in self.needs if n not in self.context.available()]
        if missing:
            from advbench.errors import UserError

            raise UserError(f"attack '{self.name}' needs a {missing[0].replace('_', ' ')}; "
                            "pass --source RUN (Python: source=...)")
        with frozen(model, "eval"), PassCounter(model) as counter:
            out = self.perturb_ex(model, x, y, generator)
            x_adv = project(out.x_adv.detach(), x, self.threat)  # guard: ball and box
            if out.correct is not None:
                correct = out.correct.to(device=y.device, dtype=torch.bool)
            else:
                with torch.no_grad():
                    correct = model(x_adv).argmax(1) == y
        return AttackResult(x_adv=x_adv, correct=correct, forward=counter.forward, backward=counter.backward,
                            per_sample=out.per_sample, info=out.info)

    def describe(self) -> dict[str, Any]:
        """JSON record of what ran: name, kind, threat and every option."""
        return {"attack": self.name, "kind": self.kind, **self.threat.to_dict(),
                "options": config_to_dict(self.options)}

    @classmethod
    def suited_to(cls, options: dict[str, Any], summary: dict[str, Any] | None) -> set[str]:
        """The masking kinds (:data:`MASKING_KINDS`) this attack, with these options and this run's summary, is
        suited to: none unless the attack says so. Gradient-free (black-box) attacks are a *test* for masking
        (Carlini et al. 2019), not a remedy: they are usually weaker than white-box attacks, and nothing checks
        that their number is tight."""
        return set()

    @classmethod
    def summarize(cls, per_sample: dict[str, list[Any]], info: list[dict[str, Any]],
                  correct: list[int], threat: ThreatModel) -> dict[str, Any]:
        """Attack-specific summary numbers for the result JSON (mean queries, ADBD, curves, ...)."""
        return {}


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Project ``x_adv`` onto the eps ball around ``x`` intersected with [0, 1].

    Samples already inside (up to float rounding: 1e-7 in Linf, 1e-6 in L2) are returned bit-for-bit
    unchanged, so that the guard never moves an attack's own output across a decision boundary.
    """
    if x_adv.shape[0] == 0:
        return x_adv
    delta = x_adv - x
    flat = delta.flatten(1)
    if threat.norm == "linf":
        size, tol = flat.abs().amax(dim=1), 1e-7
    else:
        size, tol = flat.norm(dim=1), 1e-6
    inside = (size <= threat.eps + tol) & (x_adv.flatten(1).amin(dim=1) >= 0) & (x_adv.flatten(1).amax(dim=1) <= 1)
    if bool(inside.all()):
        return x_adv
    if threat.norm == "linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        delta = renorm_l2(delta, threat.eps)
    projected = (x + delta).clamp(0.0, 1.0)
    return torch.where(_view(inside, x_adv), x_adv, projected)


def renorm_l2(delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``delta`` down to L2 norm at most ``eps`` (a float or one value per sample)."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def attack_options_type(cls: type[Attack]) -> dict[str, Any]:
    """Default options of an attack class as a dict (for listing)."""
    return config_to_dict(cls.Options())


ATTACKS: Registry[type[Attack]] = Registry("attack")


def build_attack(name: str, threat: ThreatModel, options: dict[str, Any] | None = None,
                 context: AttackContext | None = None) -> Attack:
    """Instantiate the attack registered as ``name`` with typed option overrides (and a context)."""
    cls = ATTACKS.get(name)
    attack = cls(threat, **(options or {}))
    if context is not None:
        attack.setup(context)
    return attack


def field_names(cls: type[Attack]) -> list[str]:
    """Option names of an attack class."""
    return [f.name for f in dataclasses.fields(cls.Options)]
