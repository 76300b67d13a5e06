"""SVHN (cropped digits) from torchvision's on-disk layout: ``ROOT/{train,test}_32x32.mat``.

The .mat files hold ``X`` as [H, W, C, N] uint8 and ``y`` as [N, 1] with 10 meaning digit 0;
labels are mapped to 0..9 (10 -> 0). Read with scipy; torchvision is used only for ``--download``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advbench.data.core import DatasetInfo, RawDataset, download_failed, not_found, register_dataset
from advbench.errors import UserError

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"
SVHN_INFO = DatasetInfo(
    "svhn", 10, (3, 32, 32), mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), augment="crop"
)
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN .mat file into uint8 images [N, 3, 32, 32] and int64 labels 0..9 [N]."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several types for a damaged file
        raise UserError(f"cannot read SVHN file {path}: {err}") from None
    if "X" not in mat or "y" not in mat:
        raise UserError(f"SVHN file {path} has no 'X'/'y' arrays; the file looks corrupt")
    x = np.asarray(mat["X"])
    if x.ndim != 4 or x.shape[2] != 3:
        raise UserError(f"SVHN file {path} has X of shape {x.shape}; expected [32, 32, 3, N]")
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8, copy=False)
    y = np.asarray(mat["y"]).reshape(-1).astype(np.int64) % 10
    return x, y


def _find(root: Path) -> Path | None:
    """The folder holding ``train_32x32.mat``: ``root`` or ``root/svhn``."""
    for cand in (root, root / "svhn", root / "SVHN"):
        if (cand / FILES["train"]).is_file():
            return cand
    return None


@register_dataset("svhn", info=SVHN_INFO, help="SVHN: 73k/26k 32x32 RGB house-number digits, 10 classes")
def load_svhn(root: Path, download: bool, options: dict) -> RawDataset:
    """SVHN train (73 257) and test (26 032) splits from ``root/{train,test}_32x32.mat``."""
    path = _find(root)
    if path is None and download:
        import torchvision.datasets as tvd

        try:
            for split in ("train", "test"):
                if not (root / FILES[split]).is_file():
                    tvd.SVHN(root=str(root), split=split, download=True)
        except Exception as err:
            raise download_failed("SVHN", root, err, SVHN_URL.replace("train_32x32.mat", "")) from None
        path = _find(root)
    if path is None:
        raise not_found("SVHN", root / FILES["train"])
    if not (path / FILES["test"]).is_file():
        raise not_found("SVHN", path / FILES["test"])
    x_train, y_train = read_svhn_mat(path / FILES["train"])
    x_test, y_test = read_svhn_mat(path / FILES["test"])
    return RawDataset(x_train, y_train, x_test, y_test, str(path))
