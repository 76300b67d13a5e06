"""Dataset room: registry of datasets, in-memory train / val / test splits and deterministic batches.

Every module of this package except its infrastructure (:data:`INFRASTRUCTURE`) is a dataset module that
registers itself on import, so a new dataset is one new file (``advbench list datasets`` shows them).
Importing this package does not import torch; ``batches``, ``num_batches``, ``augment_batch`` and
``derive_seed`` load it on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from advbench.data.core import (
    AUGMENTS,
    DATASETS,
    DatasetInfo,
    DatasetLoader,
    DataSplits,
    LazyImages,
    OptionSpec,
    RawDataset,
    TensorSplit,
    dataset_info,
    dataset_names,
    dataset_options,
    default_data_dir,
    is_lazy,
    load_splits,
    register_dataset,
    split_permutation,
)

#: modules of this package that are not datasets: the registry and splits, and the torch-backed batching
INFRASTRUCTURE = ("core", "batching")
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in INFRASTRUCTURE and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

if TYPE_CHECKING:
    from advbench.data.batching import augment_batch, batches, derive_seed, num_batches

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "DataSplits",
    "DatasetInfo",
    "DatasetLoader",
    "LazyImages",
    "OptionSpec",
    "RawDataset",
    "TensorSplit",
    "augment_batch",
    "batches",
    "dataset_info",
    "dataset_names",
    "dataset_options",
    "default_data_dir",
    "derive_seed",
    "is_lazy",
    "load_splits",
    "num_batches",
    "register_dataset",
    "split_permutation",
]

_LAZY = {"augment_batch", "batches", "derive_seed", "num_batches"}


def __getattr__(name: str) -> Any:  # torch-backed helpers are imported on first use
    if name in _LAZY:
        from advbench.data import batching

        return getattr(batching, name)
    raise AttributeError(f"module 'advbench.data' has no attribute {name!r}")
