"""The defense interface.

A defense has a typed ``Options`` dataclass with the paper defaults and a ``loss(model, x, y, ctx)``
returning the training loss and a dict of logged scalars. The default :meth:`Defense.train_step` is
zero_grad / loss / backward / step; defenses that need more (AWP's weight perturbation, SOAR's
regularizer-gradient clipping) override it. ``on_epoch_start`` serves curricula (SAT lambda schedules,
AWP warm-up). The engine knows nothing else about a defense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.config import apply_overrides, config_to_dict
from advbench.errors import UserError
from advbench.registry import Registry
from advbench.threat import ThreatModel


@dataclass
class StepContext:
    """What a defense may know about the current step."""

    epoch: int  # 0-based
    step: int  # batch index within the epoch
    steps_per_epoch: int
    epochs: int
    num_classes: int
    idx: torch.Tensor | None = None  # dataset indices of the batch (per-sample state, e.g. MMA)
    #: the trainer's :class:`~advbench.core.optim.SyncedOptimizer` (AMP loss scaling, gradient averaging
    #: across ranks); None when a defense is driven directly (tests, benchmarks): plain backward then
    optim: Any = None

    @property
    def progress(self) -> float:
        """Fractional epoch (epoch + step / steps_per_epoch)."""
        return self.epoch + self.step / max(1, self.steps_per_epoch)

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()`` for the training gradient (through the fp16 loss scaler when AMP uses one).
        Defenses call this instead of ``loss.backward()`` for the parameter-gradient backward."""
        if self.optim is None:
            loss.backward(**kwargs)
        else:
            self.optim.backward(loss, **kwargs)

    @property
    def grad_scale(self) -> float:
        """Factor that ``.grad`` carries now (the fp16 loss scale, else 1): parameter gradients a defense
        computes itself (``torch.autograd.grad``) and adds to ``.grad`` are multiplied by it."""
        return 1.0 if self.optim is None else self.optim.grad_scale

    @property
    def distributed(self) -> bool:
        """True when gradients are averaged over several ranks at the optimizer step."""
        return self.optim is not None and bool(getattr(self.optim, "sync", False))

    def finalize_grads(self) -> None:
        """Make ``.grad`` the final gradient of the whole (global) batch now: averaged over ranks and
        unscaled. Call before reading gradients as a whole (clipping by norm); no-op for one process."""
        if self.optim is not None:
            self.optim.finalize()

    def average(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average per-rank gradient pieces that are added to ``.grad`` after :meth:`finalize_grads`
        (weighted by each rank's share of the batch); identity for one process."""
        return list(tensors) if self.optim is None else self.optim.average(tensors)


@dataclass
class NoOptions:
    """A defense without options."""


def check_positive(value: float | int, what: str, allow_zero: bool = False) -> None:
    """Raise a one-line UserError unless ``value`` > 0 (or ≥ 0 with ``allow_zero``): the usual check of an
    ``Options.validate``."""
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


class Defense:
    """Base class of every defense; subclasses set ``Options`` and implement :meth:`loss`.

    Facts about one defense live on its class (read through the registry), never in name lists elsewhere:
    ``name`` (set by the registration), ``inherent_passes``, ``double_backward``, ``default_select``,
    ``epoch_options`` and :meth:`smoke_low_lr`.
    """

    name: ClassVar[str] = ""  # set by DEFENSES.register
    Options: ClassVar[type] = NoOptions
    #: forward and backward passes per step the method inherently needs (for the cost benchmark)
    inherent_passes: ClassVar[tuple[float, float] | None] = None
    #: the loss differentiates through an input or weight gradient (``create_graph=True``); torch.compile
    #: cannot train such a loss, so ``--compile`` is refused for it
    double_backward: ClassVar[bool] = False
    #: checkpoint selection under ``select=auto``: ``val-robust`` (validation robust accuracy) for a defense;
    #: ``val-clean`` where the most robust epoch is meaningless (standard training: the untrained one)
    default_select: ClassVar[str] = "val-robust"
    #: options measured in epochs (curricula, warm-ups): a shortened schedule scales them by its epoch ratio
    epoch_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def dataset_options(cls, dataset: str) -> dict[str, Any]:
        """Option values that depend on the run's dataset (SCORPIO's ``preset``: the paper tuned (h, r) per
        dataset): they replace the defaults unless the options set them (:func:`options_for_dataset`), so a
        dataset-dependent default cannot be missed. Only values other than the option's default are returned,
        so a run on any other dataset resolves (and hashes) as before."""
        return {}

    @classmethod
    def smoke_low_lr(cls, options: dict[str, Any]) -> bool:
        """True when the loss adds a heavily weighted regularizer to the CE (TRADES family, input-gradient
        regularizers): the smoke scale fine-tunes such a row at its lower ``lr_reg``, since at the plain
        fine-tuning lr the regularizer wipes out much of the base model's accuracy in the first epoch."""
        return False

    def first_attack_epoch(self) -> float:
        """The (fractional) epoch from which this defense trains on perturbed inputs: 0 for almost all; H-SAT
        under a schedule that starts at lambda = 0 trains on clean images until then (``--set
        eps_warmup_from=attack`` starts the eps warm-up there). ``inf``: it never perturbs."""
        return 0.0

    def __init__(self, threat: ThreatModel, options: Any | None = None, **overrides: Any) -> None:
        self.threat = threat
        opts = options if options is not None else self.Options()
        self.options = apply_overrides(opts, overrides, f"defense '{self.name}'") if overrides else opts

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss on one batch and scalars to log (``acc`` = training accuracy if known)."""
        raise NotImplementedError

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   ctx: StepContext) -> dict[str, float]:
        """One optimisation step; returns the logged scalars including ``loss``.

        Logged values may be Python numbers or 0-dim tensors still on the device: the trainer reads the
        tensors once per logging interval (one host sync for many steps, see ``advbench.engine.state``)."""
        optimizer.zero_grad(set_to_none=True)
        loss, logs = self.loss(model, x, y, ctx)
        ctx.backward(loss)
        optimizer.step()
        return {"loss": loss.detach(), **logs}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Hook for curricula; returns scalars to log for the epoch.

        Called at the start of every epoch and again when a run resumes mid-epoch, so it must be
        idempotent (a pure function of the epoch, like a lambda schedule)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Per-defense state that must survive a resume (e.g. MMA's per-sample eps)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def sync_ranks(self) -> None:
        """Share per-sample state updated by each rank (distributed training; called by the trainer at
        epoch ends and before checkpoints). The default syncs every attribute that has ``sync_ranks``
        (e.g. :class:`~advbench.defenses.per_sample_state.PerSampleStore`)."""
        for value in vars(self).values():
            sync = getattr(value, "sync_ranks", None)
            if callable(sync):
                sync()

    def describe(self) -> dict[str, Any]:
        """JSON record: name and every option."""
        return {"defense": self.name, "options": config_to_dict(self.options)}


DEFENSES: Registry[type[Defense]] = Registry("defense")


def options_for_dataset(name: str, dataset: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` of defense ``name`` with its dataset-dependent defaults for ``dataset``
    (:meth:`Defense.dataset_options`) filled in where ``options`` does not set them."""
    return {**DEFENSES.get(name).dataset_options(dataset), **(options or {})}


def build_defense(name: str, threat: ThreatModel, options: dict[str, Any] | None = None) -> Defense:
    """Instantiate the defense registered as ``name`` with typed option overrides."""
    cls = DEFENSES.get(name)
    return cls(threat, **(options or {}))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct predictions (a Python float: one host sync)."""
    return float((logits.argmax(1) == y).float().mean())


def device_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions as a 0-dim tensor on the logits' device (no host sync; the trainer reads
    logged tensors once per logging interval). Same value as :func:`accuracy`."""
    return (logits.detach().argmax(1) == y).float().mean()
