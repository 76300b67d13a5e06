"""Model registry: image classifiers that take [0, 1] inputs (normalisation inside) and return logits.

Use :func:`build_model` to get a :class:`Normalized` model by registry name; see ``docs/models.md``.
"""

from __future__ import annotations

import importlib

from advbench.models.base import (
    MODELS,
    Normalized,
    build_model,
    count_parameters,
    enable_grad_checkpointing,
    last_linear,
    model_names,
    model_options,
)

# importing an architecture module registers its models; this order is the listing order
for _module in ("cnn", "resnet", "preact", "wideresnet", "vgg", "mobilenet"):
    importlib.import_module(f"advbench.models.{_module}")

__all__ = [
    "MODELS",
    "Normalized",
    "build_model",
    "count_parameters",
    "enable_grad_checkpointing",
    "last_linear",
    "model_names",
    "model_options",
]
