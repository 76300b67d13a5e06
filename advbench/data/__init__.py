"""Dataset room: registry of datasets, in-memory train / val / test splits and deterministic batches.

Registered datasets: ``cifar10``, ``cifar100``, ``svhn``, ``mnist``, ``fashion-mnist``,
``imagenette`` and the embedded ``synthetic`` one. Importing this package does not import torch;
``batches``, ``num_batches``, ``augment_batch`` and ``derive_seed`` load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advbench.data import cifar, imagenette, mnist, svhn, synthetic  # noqa: F401  (registration)
from advbench.data.core import (
    AUGMENTS,
    DATASETS,
    DatasetInfo,
    DatasetLoader,
    DataSplits,
    OptionSpec,
    RawDataset,
    TensorSplit,
    dataset_info,
    dataset_names,
    dataset_options,
    default_data_dir,
    load_splits,
    register_dataset,
    split_permutation,
)

if TYPE_CHECKING:
    from advbench.data.batching import augment_batch, batches, derive_seed, num_batches

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "DataSplits",
    "DatasetInfo",
    "DatasetLoader",
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
