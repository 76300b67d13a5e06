"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout (python pickle batches).

``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch}`` and ``ROOT/cifar-100-python/{train, test}``.
The pickles are read directly (no md5 check); torchvision is used only for ``--download``.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np

from advbench.data.core import (
    DatasetInfo,
    OptionSpec,
    RawDataset,
    download_failed,
    not_found,
    register_dataset,
)
from advbench.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

CIFAR10_INFO = DatasetInfo(
    "cifar10",
    10,
    (3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    augment="crop-flip",
)
CIFAR100_INFO = DatasetInfo(
    "cifar100",
    100,
    (3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    augment="crop-flip",
)


#: training-time jitter besides crop and flip (SAT: "Standard data augmentation (random crop, flip, scaling, and
#: brightness jitter)"; 0 = off, the default)
JITTER_OPTIONS = {
    "scale": OptionSpec(float, 0.0, "random scaling about the centre by a factor in [1 - scale, 1 + scale] "
                                    "(torchvision affine, bilinear, zero fill); 0 = off"),
    "brightness": OptionSpec(float, 0.0, "brightness jitter: multiply by a factor in [1 - b, 1 + b] (torchvision "
                                         "adjust_brightness); 0 = off"),
}


def _jitter_info(base: DatasetInfo):  # noqa: ANN202
    def info(opts: dict) -> DatasetInfo:
        return dataclasses.replace(base, scale=float(opts.get("scale", 0.0)),
                                   brightness=float(opts.get("brightness", 0.0)))
    return info


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR pickle batch into uint8 images [N, 3, 32, 32] and int64 labels [N].

    The row layout is 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise UserError(f"cannot read CIFAR batch {path}: {err}") from None

    def get(key: str) -> object:
        for k in (key.encode(), key):
            if k in d:
                return d[k]
        raise UserError(f"CIFAR batch {path} has no '{key}' entry; the file looks corrupt")

    data = np.asarray(get("data"), dtype=np.uint8)
    labels = np.asarray(get(label_key), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(f"CIFAR batch {path} has data of shape {data.shape}; expected [N, 3072]")
    return data.reshape(-1, 3, 32, 32), labels


def _find(root: Path, folder: str, marker: str) -> Path | None:
    """``root/folder`` if it holds ``marker``, else ``root`` itself if it does."""
    for cand in (root / folder, root):
        if (cand / marker).is_file():
            return cand
    return None


def _download(title: str, cls_name: str, root: Path, url: str) -> None:
    """Download and unpack with torchvision (which checks the archive's md5)."""
    import torchvision.datasets as tvd

    try:
        getattr(tvd, cls_name)(root=str(root), train=True, download=True)
    except Exception as err:  # network, disk, checksum: all end the same way for the user
        raise download_failed(title, root, err, url) from None


def _load(
    title: str,
    root: Path,
    download: bool,
    folder: str,
    train_files: list[str],
    test_file: str,
    label_key: str,
    cls_name: str,
    url: str,
) -> RawDataset:
    """Load a CIFAR variant, downloading it first when missing and ``download`` is set."""
    path = _find(root, folder, train_files[0])
    if path is None and download:
        _download(title, cls_name, root, url)
        path = _find(root, folder, train_files[0])
    if path is None:
        raise not_found(title, root / folder)
    missing = [f for f in [*train_files, test_file] if not (path / f).is_file()]
    if missing:
        raise not_found(title, path, f" (missing {', '.join(missing)})")
    parts = [read_cifar_batch(path / f, label_key) for f in train_files]
    x_test, y_test = read_cifar_batch(path / test_file, label_key)
    return RawDataset(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
        str(path),
    )


@register_dataset("cifar10", info=_jitter_info(CIFAR10_INFO), help="CIFAR-10: 50k/10k 32x32 RGB, 10 classes",
                  options=JITTER_OPTIONS)
def load_cifar10(root: Path, download: bool, options: dict) -> RawDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (50 000 train, 10 000 test)."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _load(
        "CIFAR-10",
        root,
        download,
        "cifar-10-batches-py",
        files,
        "test_batch",
        "labels",
        "CIFAR10",
        CIFAR10_URL,
    )


@register_dataset("cifar100", info=_jitter_info(CIFAR100_INFO), help="CIFAR-100: 50k/10k 32x32 RGB, 100 fine classes",
                  options=JITTER_OPTIONS)
def load_cifar100(root: Path, download: bool, options: dict) -> RawDataset:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (50 000 train, 10 000 test)."""
    return _load(
        "CIFAR-100",
        root,
        download,
        "cifar-100-python",
        ["train"],
        "test",
        "fine_labels",
        "CIFAR100",
        CIFAR100_URL,
    )
