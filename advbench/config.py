"""Typed configs: the training config, ``--set key=value`` overrides and TOML recipes.

Every option is a dataclass field with a type and a default. User text is converted to the field's
type and validated here, so a bad value fails before any work starts, with one clear line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from advbench.core.options import convert, field_types
from advbench.errors import UserError
from advbench.registry import closest
from advbench.threat import check_eps_in_range, parse_eps


def apply_overrides(obj: Any, overrides: dict[str, Any], what: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` converted to the field types.

    ``what`` names the config in errors ("defense 'trades'"). Unknown keys are a UserError with the
    closest valid keys.
    """
    types_ = field_types(type(obj))
    changes = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in types_:
            hint = closest(name, list(types_))
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; valid keys: {', '.join(types_)}"
            raise UserError(f"unknown option '{key}' for {what}{extra}")
        changes[name] = convert(value, types_[name], f"{what} option '{key}'")
    new = dataclasses.replace(obj, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def config_to_dict(obj: Any) -> dict[str, Any]:
    """JSON-able dict of a dataclass config (tuples become lists)."""
    return json_safe(dataclasses.asdict(obj))


def json_safe(value: Any) -> Any:
    """Recursively convert tuples to lists and Paths to strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """Parse repeated ``--set key=value`` strings into a dict (later ones win)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"invalid --set '{item}'; write --set key=value, e.g. --set beta=6")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"invalid --set '{item}': empty key; write --set key=value")
        out[key] = value.strip()
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe; one-line UserError when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}; pass an existing TOML file to --config")
    try:
        recipe = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"invalid TOML in {p}: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"invalid TOML in {p}: nested too deeply; a recipe is flat keys plus [defense], [model] "
                        "and [dataset] tables") from None
    except OSError as err:
        raise UserError(f"cannot read config file {p}: {err.strerror or err}") from None
    for key, value in recipe.items():
        if isinstance(value, dict) and key not in {"defense", "model", "dataset", "defense_options",
                                                    "model_options", "dataset_options"}:
            raise UserError(f"invalid TOML in {p}: [{key}] is not a recipe table; use flat keys and the "
                            "[defense], [model] and [dataset] tables")
        if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
            raise UserError(f"invalid TOML in {p}: [{key}] holds a nested table; options are flat key = value")
    return recipe


ScheduleName = Literal["multistep", "cosine", "piecewise-linear", "constant", "dawnbench"]
AmpMode = Literal["off", "bf16", "fp16"]
DistBackend = Literal["auto", "gloo", "nccl"]
SelectRule = Literal["auto", "val-robust", "val-clean", "last", "test-robust"]


#: (field, lowest, highest) of the integer settings; the upper bounds are far beyond any paper's recipe and
#: catch typos such as --epochs 1e12 before they start a run that never ends
_INT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("epochs", 1, 100_000), ("batch_size", 1, 1_000_000), ("seed", 0, 2**63 - 1), ("split_seed", 0, 2**63 - 1),
    ("n_train", 1, 10**9), ("val_size", 0, 10**9), ("val_n", 0, 10**9), ("val_attack_steps", 0, 100_000),
    ("max_batches_per_epoch", 1, 10**9), ("mem_every", 0, 10**9),
)
_FLAGS = {"epochs", "batch_size", "seed", "n_train"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved resolved in ``config.json``)."""

    dataset: str = "synthetic"
    model: str = "small-cnn"
    defense: str = "standard"
    eps: str = "8/255"
    norm: Literal["linf", "l2"] = "linf"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: ScheduleName = "multistep"
    milestones: list[float] = field(default_factory=list)  # epochs (fractions allowed); default 50%, 75%
    gamma: float = 0.1
    # schedule "dawnbench": epochs of its three phases (128, 224, 288 px); [] = the paper's 15, 13, 1
    phase_epochs: list[int] = field(default_factory=list)
    bias_decay: bool = True  # weight decay on parameters named *.bias too (false: 0 on biases, DAWNBench)
    seed: int = 0
    n_train: int | None = None
    val_size: int | None = None
    split_seed: int = 0
    data_dir: str | None = None
    download: bool = False
    val_n: int = 500  # validation images attacked per epoch
    val_attack_steps: int = 10
    select: SelectRule = "auto"  # val-clean for standard training, val-robust for every defense
    device: str = "auto"
    init_from: str | None = None  # fine-tune from a run's (or file's) weights
    max_batches_per_epoch: int | None = None  # debugging / smoke runs
    # speed (docs/scaling.md); resolved values are recorded in config.json's "runtime" block
    amp: AmpMode = "off"  # autocast dtype of the training step: bf16 (CUDA, CPU), fp16 (+ loss scaling)
    channels_last: bool = False  # NHWC memory format for model and inputs (faster convs on tensor cores)
    compile: bool = False  # torch.compile the network (not for double-backprop defenses)
    compile_backend: str = "inductor"
    cudnn_benchmark: bool | None = None  # None: on for CUDA
    grad_checkpointing: bool = False  # recompute residual blocks in the backward (wrn/resnet/preact)
    pin_memory: bool | None = None  # None: on for CUDA (page-locked host batches, non-blocking copies)
    data_on_device: bool | None = None  # None: keep the uint8 train split on the GPU when it is < 4 GiB
    # distributed training (torchrun / --nproc); world size and backend are recorded in config.json
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA only)
    dist_backend: DistBackend = "auto"  # auto: nccl for CUDA, gloo for CPU
    # memory recording: peak memory of every k-th training step (metrics.jsonl, summary.json)
    mem_every: int = 1
    # epochs (1-based, counted at their end) whose weights are kept as checkpoints/epoch-N.pt besides best/last:
    # the checkpoints a paper evaluates (RAT: "the highest robustness that ever achieved at different checkpoints")
    save_epochs: list[int] = field(default_factory=list)
    # epochs over which the training attacks' eps ramps linearly from 0 to eps, updated every step (0: none); the
    # smoke scale gives every row of a table the same warm-up on handwritten digits (docs/reproducing.md)
    eps_warmup: float = 0.0
    # where the warm-up starts: "start" (epoch 0) or "attack" (the epoch the defense first trains on perturbed
    # inputs, Defense.first_attack_epoch: H-SAT's step schedules train on clean images until lambda first rises)
    eps_warmup_from: Literal["start", "attack"] = "start"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    defense_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check ranges that types alone do not catch (the converter already refused non-finite numbers and
        integers beyond 64 bits), so the engine never sees a value it cannot use."""
        for name, low, high in _INT_RANGES:
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                flag = name.replace("_", "-") if name in _FLAGS else name
                where = f"--{flag}" if name in _FLAGS else f"--set {name}"
                raise UserError(f"{where} must be between {low} and {high}, got {value}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"--set momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise UserError(f"--set weight_decay must be >= 0, got {self.weight_decay}")
        if not self.gamma > 0:
            raise UserError(f"--set gamma must be > 0, got {self.gamma}")
        if any(not 1 <= e <= self.epochs for e in self.save_epochs):
            raise UserError(f"--set save_epochs must be epochs in 1..{self.epochs}, got {list(self.save_epochs)}")
        if not 0 <= self.eps_warmup <= self.epochs:
            raise UserError(f"--set eps_warmup must be epochs in [0, {self.epochs}], got {self.eps_warmup}")
        if any(m < 0 for m in self.milestones):
            raise UserError(f"--set milestones must be epochs >= 0, got {list(self.milestones)}")
        if self.schedule == "dawnbench" or self.phase_epochs:
            self.resolved_phases()  # the phase epochs must add up to the run's epochs
        value, text = parse_eps(self.eps)
        check_eps_in_range(value, text, self.norm)

    def resolved_milestones(self) -> list[float]:
        """Milestone epochs for the multistep schedule (default: 50% and 75% of training)."""
        return list(self.milestones) if self.milestones else [0.5 * self.epochs, 0.75 * self.epochs]

    def resolved_phases(self) -> list[Phase]:
        """The DAWNBench phases of this run (``phase_epochs`` or the paper's 15, 13, 1); UserError when they do
        not add up to ``epochs`` or the schedule is not ``dawnbench``."""
        if self.schedule != "dawnbench":
            raise UserError(f"--set phase_epochs applies to --set schedule=dawnbench only, not {self.schedule}")
        lengths = list(self.phase_epochs) or [p.end - p.start for p in DAWNBENCH]
        if len(lengths) != len(DAWNBENCH) or any(n < 1 for n in lengths) or sum(lengths) != self.epochs:
            raise UserError(f"schedule dawnbench needs {len(DAWNBENCH)} phase lengths >= 1 adding up to the epochs "
                            f"({self.epochs}), got {lengths}; set epochs 29 for the paper's 15, 13, 1 or "
                            "--set phase_epochs=A,B,C")
        return scaled_phases(lengths)


@dataclass(frozen=True)
class Phase:
    """One phase of a progressive-resize schedule: epochs ``start``..``end`` (end excluded) train on
    ``size`` px random-resized crops (area fraction in [``min_scale``, 1]) in global batches of ``batch`` x
    the run's batch_size / 512, and the learning rate is piecewise linear through ``lr`` (epoch, lr) points."""

    start: float
    end: float
    size: int
    batch: int
    min_scale: float
    lr: tuple[tuple[float, float], ...]


#: Finlay & Oberman's ImageNet schedule, the DAWNBench recipe of fast.ai (spec gradient-regularization.md §1): 29
#: epochs on 4 GPUs, per-GPU batches 128 / 48 / 32 (global 512 / 192 / 128), SGD momentum 0.9, wd 1e-4 (0 on
#: biases); the learning rates are the paper-code's for those global batches, linear between the points.
DAWNBENCH: tuple[Phase, ...] = (
    Phase(0, 15, 128, 512, 0.08, ((0, 0.25), (8, 0.5), (15, 0.0625))),
    Phase(15, 28, 224, 192, 0.087, ((15, 0.1), (25, 0.01), (28, 0.001))),
    Phase(28, 29, 288, 128, 0.5, ((28, 0.000625), (29, 0.0000625))),
)
#: the global batch of the first phase: a run's ``batch_size`` scales every phase's batch by batch_size / 512
DAWNBENCH_BATCH = DAWNBENCH[0].batch
#: the first learning rate of the schedule: a run's ``lr`` scales every phase's rates by lr / 0.25
DAWNBENCH_LR = DAWNBENCH[0].lr[0][1]


def scaled_phases(lengths: list[int]) -> list[Phase]:
    """:data:`DAWNBENCH` with phase k lasting ``lengths[k]`` epochs; the learning-rate points inside a phase keep
    their relative positions (epoch 8 of the 15-epoch first phase stays at 8/15 of it)."""
    out: list[Phase] = []
    start = 0
    for phase, n in zip(DAWNBENCH, lengths, strict=True):
        span = phase.end - phase.start
        points = tuple((start + (e - phase.start) * n / span, v) for e, v in phase.lr)
        out.append(dataclasses.replace(phase, start=start, end=start + n, lr=points))
        start += n
    return out


def phase_at(cfg: TrainConfig, epoch: int) -> Phase:
    """The DAWNBench phase that epoch ``epoch`` (0-based) trains in."""
    phases = cfg.resolved_phases()
    for phase in phases:
        if epoch < phase.end:
            return phase
    return phases[-1]


def phase_batch(cfg: TrainConfig, phase: Phase) -> int:
    """The global batch of ``phase`` for this run: the paper's batch x batch_size / 512, rounded, at least 1."""
    return max(1, round(phase.batch * cfg.batch_size / DAWNBENCH_BATCH))


def dawnbench_lr(cfg: TrainConfig, t: float) -> float:
    """The learning rate at fractional epoch ``t``: linear between the phase's points (a phase starts at its own
    first rate), times lr / 0.25."""
    phases = cfg.resolved_phases()
    phase = next((p for p in phases if t < p.end), phases[-1])
    pts = phase.lr
    value = pts[-1][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
        if t < t1:
            value = v0 + (v1 - v0) * (max(t, t0) - t0) / (t1 - t0)
            break
    return value * cfg.lr / DAWNBENCH_LR


def lr_factor(cfg: TrainConfig, t: float) -> float:
    """Learning-rate multiplier at fractional epoch ``t`` (updated every iteration)."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "dawnbench":
        return dawnbench_lr(cfg, t) / cfg.lr
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.resolved_milestones() if t >= m)
    if cfg.schedule == "cosine":
        import math

        return 0.5 * (1 + math.cos(math.pi * min(t / cfg.epochs, 1.0)))
    # piecewise-linear (fast-AT style triangle): 0 -> 1 at 40% of training -> 0 at the end
    peak = 0.4 * cfg.epochs
    if t <= peak:
        return t / peak if peak > 0 else 1.0
    return max(0.0, (cfg.epochs - t) / (cfg.epochs - peak))


TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
#: how a run was executed, not what was trained: runs that differ only here are one configuration in reports
RUNTIME_KEYS = {"amp", "channels_last", "compile", "compile_backend", "cudnn_benchmark", "grad_checkpointing",
                "pin_memory", "data_on_device", "sync_bn", "dist_backend", "mem_every", "save_epochs"}
#: fields added after runs were first hashed: at these values they are left out of a run's content hash
#: (:func:`advbench.papers.planned.config_hash`), so existing runs keep their names
HASH_NEUTRAL = {"save_epochs": [], "eps_warmup": 0.0, "phase_epochs": [], "bias_decay": True,
                "eps_warmup_from": "start"}


def run_config(run_dir: str | Path) -> tuple[dict[str, Any], TrainConfig]:
    """A run's ``config.json`` record and its TrainConfig, checked: an unknown key, a wrongly typed or out-of-range
    value, or a malformed file is one line naming the file (never a TypeError deep inside)."""
    from advbench import runs

    record = runs.read_run_config(run_dir)
    where = Path(run_dir) / "config.json"
    if "defense" not in record["config"]:
        raise runs.CorruptFile(f"{where} names no defense; restore it or remove the run")
    try:
        cfg = apply_overrides(TrainConfig(), record["config"], str(where))
        cfg.validate()
    except UserError as err:
        raise runs.CorruptFile(f"{where}: {err}") from None
    return record, cfg
