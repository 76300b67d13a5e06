"""MNIST and Fashion-MNIST from idx files (torchvision's layout ``ROOT/MNIST/raw``, optionally .gz)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from advbench.data.core import DatasetInfo, RawDataset, download_failed, not_found, register_dataset
from advbench.errors import UserError

MNIST_INFO = DatasetInfo("mnist", 10, (1, 28, 28), mean=(0.1307,), std=(0.3081,), augment="none")
FASHION_INFO = DatasetInfo("fashion-mnist", 10, (1, 28, 28), mean=(0.2860,), std=(0.3530,), augment="none")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (plain or gzip-compressed) of unsigned bytes into a uint8 array.

    Format: two zero bytes, type code 0x08 (ubyte), number of dimensions, big-endian int32
    sizes, then the data in row-major order.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read idx file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"idx file {path} holds {data.size} bytes of data, header says {dims}")
    return data.reshape(dims).copy()  # writable (torch.from_numpy needs it)


def _locate(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (plain preferred)."""
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _find(root: Path, folder: str) -> Path | None:
    """The folder holding the training images: ``root/folder/raw``, ``root/folder`` or ``root``."""
    for cand in (root / folder / "raw", root / folder, root):
        if _locate(cand, FILES["x_train"]) is not None:
            return cand
    return None


def _load(title: str, folder: str, cls_name: str, root: Path, download: bool) -> RawDataset:
    """Load an MNIST-format dataset, downloading it with torchvision when asked and missing."""
    path = _find(root, folder)
    if path is None and download:
        import torchvision.datasets as tvd

        try:
            for train in (True, False):
                getattr(tvd, cls_name)(root=str(root), train=train, download=True)
        except Exception as err:
            url = getattr(getattr(tvd, cls_name), "mirrors", ["(see torchvision)"])[0]
            raise download_failed(title, root, err, url) from None
        path = _find(root, folder)
    if path is None:
        raise not_found(title, root / folder / "raw")
    arrays = {}
    for key, stem in FILES.items():
        file = _locate(path, stem)
        if file is None:
            raise not_found(title, path, f" (missing {stem})")
        arrays[key] = read_idx(file)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{title} {split} files in {path} disagree: images {x.shape}, labels {y.shape}")
    return RawDataset(
        arrays["x_train"][:, None],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"][:, None],
        arrays["y_test"].astype(np.int64),
        str(path),
    )


@register_dataset("mnist", info=MNIST_INFO, help="MNIST: 60k/10k 28x28 grey handwritten digits")
def load_mnist(root: Path, download: bool, options: dict) -> RawDataset:
    """MNIST from ``root/MNIST/raw`` (idx files, plain or .gz)."""
    return _load("MNIST", "MNIST", "MNIST", root, download)


@register_dataset("fashion-mnist", info=FASHION_INFO, help="Fashion-MNIST: 60k/10k 28x28 grey clothing items")
def load_fashion_mnist(root: Path, download: bool, options: dict) -> RawDataset:
    """Fashion-MNIST from ``root/FashionMNIST/raw`` (idx files, plain or .gz)."""
    return _load("Fashion-MNIST", "FashionMNIST", "FashionMNIST", root, download)
