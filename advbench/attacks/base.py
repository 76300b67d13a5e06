"""The attack interface: ``attack(model, x, y) -> AttackResult``.

An attack runs the model in eval mode with parameter gradients off and restores both afterwards,
returns images in [0, 1] inside the eps ball, and counts its forward and backward passes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.config import apply_overrides, config_to_dict
from advbench.engine.passes import PassCounter, frozen
from advbench.registry import Registry
from advbench.threat import ThreatModel


@dataclass
class AttackResult:
    """Adversarial images, per-sample correctness after the attack, and the passes it cost."""

    x_adv: torch.Tensor
    correct: torch.Tensor  # bool [B]
    forward: int  # examples sent forward (divide by B for passes per image)
    backward: int


@dataclass
class NoOptions:
    """An attack without options."""


class Attack:
    """Base class. Subclasses set ``name``, ``Options`` and implement :meth:`perturb`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, threat: ThreatModel, options: Any | None = None, **overrides: Any) -> None:
        self.threat = threat
        opts = options if options is not None else self.Options()
        self.options = apply_overrides(opts, overrides, f"attack '{self.name}'") if overrides else opts

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Return adversarial images for a model that is already frozen in eval mode."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> AttackResult:
        """Attack ``model`` on ``(x, y)``; the model's mode and weights are left unchanged."""
        with frozen(model, "eval"), PassCounter(model) as counter:
            x_adv = self.perturb(model, x, y, generator)
            x_adv = project(x_adv.detach(), x, self.threat)  # guard: exact ball and box
            with torch.no_grad():
                correct = model(x_adv).argmax(1) == y
        return AttackResult(x_adv=x_adv, correct=correct, forward=counter.forward, backward=counter.backward)

    def describe(self) -> dict[str, Any]:
        """JSON record of what ran: name, threat and every option."""
        return {"attack": self.name, **self.threat.to_dict(), "options": config_to_dict(self.options)}


def project(x_adv: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Project ``x_adv`` onto the eps ball around ``x`` intersected with [0, 1]."""
    delta = x_adv - x
    if threat.norm == "linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        delta = renorm_l2(delta, threat.eps)
    return (x + delta).clamp(0.0, 1.0)


def renorm_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale each sample of ``delta`` down to L2 norm at most ``eps``."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def attack_options_type(cls: type[Attack]) -> dict[str, Any]:
    """Default options of an attack class as a dict (for listing)."""
    return config_to_dict(cls.Options())


ATTACKS: Registry[type[Attack]] = Registry("attack")


def build_attack(name: str, threat: ThreatModel, options: dict[str, Any] | None = None) -> Attack:
    """Instantiate the attack registered as ``name`` with typed option overrides."""
    cls = ATTACKS.get(name)
    return cls(threat, **(options or {}))


def field_names(cls: type[Attack]) -> list[str]:
    """Option names of an attack class."""
    return [f.name for f in dataclasses.fields(cls.Options)]
