"""Model registry, the normalising wrapper, option handling and small model utilities."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from advbench.core.options import convert
from advbench.errors import UserError
from advbench.registry import Registry

ModelFactory = Callable[..., nn.Module]

#: name -> factory(num_classes, in_channels, input_size, **options) -> nn.Module returning logits.
MODELS: Registry[ModelFactory] = Registry("model")



class Normalized(nn.Module):
    """Wrap ``net`` so that it takes inputs in [0, 1] and normalises them itself.

    ``mean`` and ``std`` are registered as buffers of shape ``[1, C, 1, 1]`` (C = 1 broadcasts over
    channels), so they follow ``.to()`` and are part of the ``state_dict``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_l, std_l = [float(v) for v in mean], [float(v) for v in std]
        if len(mean_l) != len(std_l):
            raise UserError(f"mean has {len(mean_l)} values but std has {len(std_l)}; give the same number")
        if not mean_l:
            raise UserError("mean/std must have at least one value")
        if any(not v > 0 for v in std_l):
            raise UserError(f"std values must be positive, got {std_l}")
        mean_t = torch.tensor(mean_l, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.tensor(std_l, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.net = net
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        num_classes = getattr(net, "num_classes", None)
        if num_classes is not None:
            self.num_classes = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``net((x - mean) / std)``; ``x`` is not modified."""
        return self.net((x - self.mean) / self.std)


def model_names() -> list[str]:
    """Registered model names, in registration order."""
    return MODELS.names()


def _resolve(name: str) -> tuple[str, ModelFactory]:
    key = MODELS.canonical(name)  # UserError with did-you-mean for unknown names
    return key, MODELS.get(key)


def _factory_options(factory: ModelFactory) -> dict[str, object]:
    sig = inspect.signature(factory)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def model_options(name: str) -> dict[str, object]:
    """The keyword options of model ``name`` and their defaults (UserError for unknown models)."""
    _, factory = _resolve(name)
    return _factory_options(factory)






def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
    options: dict[str, object] | None = None,
) -> Normalized:
    """Build model ``name`` wrapped in :class:`Normalized` (inputs in [0, 1], outputs logits).

    Unknown names and options raise UserError; string option values are converted to the type
    of the option's default. A single mean/std value is repeated for every input channel.
    """
    key, factory = _resolve(name)
    if int(num_classes) < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if int(in_channels) < 1:
        raise UserError(f"in_channels must be at least 1, got {in_channels}")
    if int(input_size) < 8:
        raise UserError(f"input_size must be at least 8 pixels, got {input_size}")
    if len(mean) not in (1, in_channels) or len(std) not in (1, in_channels):
        raise UserError(
            f"mean/std need 1 or {in_channels} values for {in_channels}-channel inputs, "
            f"got {len(mean)} and {len(std)}"
        )
    defaults = _factory_options(factory)
    kwargs: dict[str, object] = {}
    for opt, value in (options or {}).items():
        opt_key = opt.strip().replace("-", "_")
        if opt_key not in defaults:
            valid = ", ".join(defaults) if defaults else "(none)"
            raise UserError(f"unknown option '{opt}' for model '{key}'; valid: {valid}")
        default = defaults[opt_key]
        kind = type(default) if isinstance(default, (bool, int, float, str)) else Any
        kwargs[opt_key] = value if kind is Any else convert(value, kind, f"option '{opt_key}' of model '{key}'")
    net = factory(int(num_classes), int(in_channels), int(input_size), **kwargs)
    if getattr(net, "num_classes", None) is None:
        net.num_classes = int(num_classes)
    # one value per channel, so that state_dicts of models of the same shape are interchangeable
    mean = list(mean) * in_channels if len(mean) == 1 else list(mean)
    std = list(std) * in_channels if len(std) == 1 else list(std)
    return Normalized(net, mean, std)


def enable_grad_checkpointing(model: nn.Module, name: str = "the model") -> None:
    """Turn on activation checkpointing of every residual block (WideResNets, ResNets, PreAct ResNets).

    Trades one extra forward per block in the backward for not storing the blocks' activations; the
    gradients are unchanged. UserError for a model without checkpointable blocks."""
    net = model.net if isinstance(model, Normalized) else model
    setter = getattr(net, "set_grad_checkpointing", None)
    if not callable(setter):
        raise UserError(f"--grad-checkpointing is not supported by model '{name}'; it is available for the "
                        "residual networks (wrn-*, resnet10/18/34/50, preact-resnet18/20, resnext34-2x32)")
    setter(True)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``model`` (buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def last_linear(model: nn.Module, num_classes: int | None = None) -> nn.Linear:
    """The final classification layer: the last ``nn.Linear`` (module order) with ``num_classes`` outputs.

    ``num_classes`` defaults to the ``num_classes`` attribute that :func:`build_model` and the
    factories set; without it, the last ``nn.Linear`` of the model is returned.
    """
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
    found: nn.Linear | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and (num_classes is None or module.out_features == num_classes):
            found = module
    if found is None:
        raise UserError(
            f"the model has no nn.Linear layer with {num_classes} outputs; "
            "this method needs a model whose last layer is a linear classifier"
        )
    return found


def parse_bool(value: object, what: str) -> bool:
    """A boolean model option (true/false/yes/no/on/off/1/0), by the one option converter."""
    return convert(value, bool, what)
