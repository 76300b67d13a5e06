"""Model registry: image classifiers that take [0, 1] inputs (normalisation inside) and return logits.

Use :func:`build_model` to get a :class:`Normalized` model by registry name; see ``docs/models.md``.
"""

from __future__ import annotations

import importlib
import pkgutil

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

# every module of this package registers its architectures on import: a new model is one new file
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")

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
