"""Real handwritten digits offline: scikit-learn's 1,797 8x8 digits written as MNIST idx files (28x28).

Each 8x8 image (grey levels 0-16) is turned into a binary bitmap and shrunk to a 20x20 anti-aliased digit centred
in a 28x28 frame, as MNIST was made from binary NIST images (:func:`digits_28`); the files are the four uncompressed
idx files the mnist loader reads from ``ROOT/MNIST/raw`` (:mod:`advbench.data.mnist`). Used by the tests and to check
the smoke and cpu scales on real data: ``python tests/digits.py ROOT``.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

N_TEST = 300  # of the 1,797 digits: 1,497 train / 300 test


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 0x00000803 / 0x00000801 (ndim), big-endian int32 sizes, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape) + \
        array.tobytes()


def digits_28(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) grey levels 0-16 -> (N, 28, 28) uint8 in MNIST's style: each 8x8 image counts the on-pixels of a
    4x4 block of a 32x32 binary bitmap (scikit-learn's description of the data), so the bitmap is recovered
    approximately by upsampling to 40x40 (bilinear) and thresholding at half; as MNIST was made from binary NIST
    images, it is then shrunk to 20x20 with anti-aliasing (the strokes near-binary, grey only at their edges) and
    centred in a 28x28 frame."""
    from PIL import Image

    out = np.zeros((len(images), 28, 28), dtype=np.uint8)
    for i, img in enumerate(images):
        small = Image.fromarray(np.clip(np.asarray(img) * (255.0 / 16.0), 0, 255).astype(np.uint8))
        bitmap = (np.asarray(small.resize((40, 40), Image.BILINEAR)) >= 128).astype(np.uint8) * 255
        out[i, 4:24, 4:24] = np.asarray(Image.fromarray(bitmap).resize((20, 20), Image.LANCZOS))
    return out


def write_digits_mnist(root: str | Path, n_test: int = N_TEST, seed: int = 0) -> Path:
    """Write the digits under ``root/MNIST/raw`` (shuffled with ``seed``; the last ``n_test`` are the test set);
    returns ``root``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x, y = digits_28(digits.images[order]), digits.target[order].astype(np.uint8)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    split = len(y) - n_test
    for name, arr in (("train-images-idx3-ubyte", x[:split]), ("train-labels-idx1-ubyte", y[:split]),
                      ("t10k-images-idx3-ubyte", x[split:]), ("t10k-labels-idx1-ubyte", y[split:])):
        (raw / name).write_bytes(idx_bytes(arr))
    return Path(root)


if __name__ == "__main__":
    print(write_digits_mnist(sys.argv[1] if len(sys.argv) > 1 else "digits-data"))
