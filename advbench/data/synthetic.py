"""The embedded ``synthetic`` dataset: procedurally drawn shapes and textures, 32x32 RGB, 10 classes.

Every image is a flat background colour with one foreground object whose *shape* is the class.
Colour, position, scale, rotation, texture period and phase and the pixel-noise level are random
and independent of the class, so a classifier must look at shape. Foreground and background
colours differ by a moderate amount in every channel (the foreground is the brighter one) and
Gaussian pixel noise is added, so an 8/255 L-inf perturbation matters for an undefended model while
adversarial training still helps (see ``docs/datasets.md`` for measured numbers).

Generation is vectorised with numpy, deterministic from ``data_seed`` and chunked: the images
are drawn in blocks of :data:`CHUNK` with their own seeds, so asking for more images keeps the
first ones unchanged, and train and test use independent streams.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from advbench.data.core import DatasetInfo, OptionSpec, RawDataset, register_dataset

GENERATOR_VERSION = "shapes-v2"  # bump when the images change for a given seed
CLASSES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal-stripes",
    "vertical-stripes",
    "diagonal-stripes",
    "checkerboard",
    "dot-grid",
)
SIZE = 32
CHUNK = 500
_STREAMS = {"train": 0, "test": 1}

# generator parameters (also written into the run's metadata)
PARAMS: dict[str, float] = {
    "radius_min": 7.0,  # object half-size in pixels
    "radius_max": 11.0,
    "center_jitter": 4.0,  # max offset of the object centre from the image centre, pixels
    "rotation_deg": 10.0,  # max absolute rotation
    "contrast_min": 0.2,  # per-channel |foreground - background|
    "contrast_max": 0.5,
    "polarity": 1.0,  # probability that the foreground is brighter than the background (0.5: random)
    "noise_min": 0.04,  # std of the Gaussian pixel noise, drawn per image
    "noise_max": 0.08,
    "period_min": 5.0,  # texture period in pixels (stripes, checkerboard, dot grid)
    "period_max": 8.0,
}


def _soft(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _stripes(q: np.ndarray, period: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Soft stripe coverage along coordinate ``q`` (half of each period is covered)."""
    s = np.sin(2 * np.pi * q / period + phase)
    return np.clip(0.5 + s * period / (2 * np.pi), 0.0, 1.0)


def _coverage(
    label: int, u: np.ndarray, v: np.ndarray, r: np.ndarray, period: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """Foreground coverage in [0, 1] for images of class ``label``; u, v in pixels, shape [n, H, W]."""
    rho = np.sqrt(u * u + v * v)
    patch = _soft(np.maximum(np.abs(u), np.abs(v)) - 0.9 * r)
    name = CLASSES[label]
    if name == "disc":
        return _soft(rho - r)
    if name == "square":
        return _soft(np.maximum(np.abs(u), np.abs(v)) - 0.85 * r)
    if name == "triangle":  # equilateral, apex up (v grows downwards)
        d = np.maximum(v, np.maximum(-0.866 * u - 0.5 * v, 0.866 * u - 0.5 * v))
        return _soft(d - 0.55 * r)
    if name == "ring":
        return _soft(np.abs(rho - 0.72 * r) - 0.24 * r)
    if name == "cross":
        arm = 0.26 * r
        bar_h = np.maximum(np.abs(u) - r, np.abs(v) - arm)
        bar_v = np.maximum(np.abs(v) - r, np.abs(u) - arm)
        return _soft(np.minimum(bar_h, bar_v))
    if name == "horizontal-stripes":
        return patch * _stripes(v, period, phase)
    if name == "vertical-stripes":
        return patch * _stripes(u, period, phase)
    if name == "diagonal-stripes":
        return patch * _stripes((u + v) * 0.7071, period, phase)
    if name == "checkerboard":
        w = 2 * np.pi / period
        s = np.sin(u * w + phase) * np.sin(v * w + phase)
        return patch * np.clip(0.5 + s * period / 2, 0.0, 1.0)
    if name == "dot-grid":
        du = np.mod(u + phase * period, period) - period / 2
        dv = np.mod(v + phase * period, period) - period / 2
        return patch * _soft(np.sqrt(du * du + dv * dv) - 0.33 * period)
    raise ValueError(label)


def _draw(rng: np.random.Generator, p: dict[str, float]) -> dict[str, np.ndarray]:
    """Random parameters of one block of :data:`CHUNK` images, drawn in a fixed order."""
    n, f32 = CHUNK, np.float32
    q = {"label": rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)}  # balanced block
    q["cx"] = ((SIZE - 1) / 2 + rng.uniform(-p["center_jitter"], p["center_jitter"], n)).astype(f32)
    q["cy"] = ((SIZE - 1) / 2 + rng.uniform(-p["center_jitter"], p["center_jitter"], n)).astype(f32)
    q["r"] = rng.uniform(p["radius_min"], p["radius_max"], n).astype(f32)
    q["theta"] = np.deg2rad(rng.uniform(-p["rotation_deg"], p["rotation_deg"], n)).astype(f32)
    q["period"] = rng.uniform(p["period_min"], p["period_max"], n).astype(f32)
    q["phase"] = rng.uniform(0, 2 * np.pi, n).astype(f32)
    delta = rng.uniform(p["contrast_min"], p["contrast_max"], (n, 3)).astype(f32)
    dark = (rng.random(n) >= p["polarity"])[:, None]  # foreground darker than the background
    low = (rng.random((n, 3)) * (1 - delta)).astype(f32)  # the darker of the two colours
    q["bg"] = np.where(dark, low + delta, low)
    q["fg"] = np.where(dark, low, low + delta)
    q["sigma"] = rng.uniform(p["noise_min"], p["noise_max"], n).astype(f32)
    q["noise"] = rng.standard_normal((n, 3, SIZE, SIZE), dtype=f32)
    return q


@functools.lru_cache(maxsize=48)  # 48 blocks of 500 images: 74 MB
def _block(seed_words: tuple[int, ...], params: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Render the :data:`CHUNK` images (uint8 [CHUNK, 3, 32, 32]) and labels of one seeded block, once per process
    (a run's training and attacks, and every run of a ``reproduce`` or ``quickstart``, load the same blocks);
    read-only arrays.

    All parameters are drawn for the whole block and each image is rendered from its own, so image i of the
    block is the same whatever the number of images asked for."""
    q = _draw(np.random.default_rng(np.random.SeedSequence(list(seed_words))), dict(params))
    n, f32 = CHUNK, np.float32
    labels, cx, cy, r, theta = q["label"], q["cx"], q["cy"], q["r"], q["theta"]
    period, phase, bg, fg, sigma, noise = q["period"], q["phase"], q["bg"], q["fg"], q["sigma"], q["noise"]

    grid = np.arange(SIZE, dtype=f32)
    x = grid[None, None, :] - cx[:, None, None]
    y = grid[None, :, None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = cos * x + sin * y
    v = -sin * x + cos * y
    cov = np.empty((n, SIZE, SIZE), dtype=f32)
    col = (slice(None), None, None)
    for k in range(len(CLASSES)):
        m = labels == k
        if m.any():
            cov[m] = _coverage(k, u[m], v[m], r[m][col], period[m][col], phase[m][col])
    img = bg[:, :, None, None] + (fg - bg)[:, :, None, None] * cov[:, None]
    img += sigma[:, None, None, None] * noise
    images = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def generate(
    n: int, *, data_seed: int = 0, split: str = "train", params: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` synthetic images (uint8 [n, 3, 32, 32]) and labels (int64 [n]).

    Deterministic in (``data_seed``, ``split``); the first k images do not depend on ``n``.
    """
    p = tuple(sorted({**PARAMS, **(params or {})}.items()))
    xs, ys = [], []
    for i, start in enumerate(range(0, n, CHUNK)):
        x, y = _block((int(data_seed), _STREAMS[split], i), p)
        xs.append(x[:n - start])  # copied by the concatenation below: the blocks stay unchanged
        ys.append(y[:n - start])
    if not xs:
        return np.zeros((0, 3, SIZE, SIZE), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------------------------------------
# registration

SYNTHETIC_INFO = DatasetInfo(  # mean/std measured on 10 000 generated images (data_seed 0)
    "synthetic",
    len(CLASSES),
    (3, SIZE, SIZE),
    mean=(0.381, 0.381, 0.377),
    std=(0.232, 0.233, 0.233),
    augment="crop-flip",
)
OPTIONS = {
    "data_seed": OptionSpec(int, 0, "seed of the generator (independent of the run seed)", minimum=0),
    "n_train": OptionSpec(int, 5000, "number of generated training images (before the val split)", minimum=2),
    "n_test": OptionSpec(int, 1000, "number of generated test images", minimum=1),
}


@register_dataset(
    "synthetic",
    info=SYNTHETIC_INFO,
    options=OPTIONS,
    needs_data_dir=False,
    help="embedded 32x32 RGB shapes and textures, 10 classes, generated offline in about a second",
)
def load_synthetic(root: Path, download: bool, options: dict) -> RawDataset:
    """Generate the synthetic train and test sets (``root`` and ``download`` are ignored)."""
    seed = int(options["data_seed"])
    x_train, y_train = generate(int(options["n_train"]), data_seed=seed, split="train")
    x_test, y_test = generate(int(options["n_test"]), data_seed=seed, split="test")
    extra = {
        "synthetic": {
            "generator": GENERATOR_VERSION,
            "data_seed": seed,
            "n_train": int(options["n_train"]),
            "n_test": int(options["n_test"]),
            "classes": list(CLASSES),
            "params": dict(PARAMS),
        }
    }
    return RawDataset(x_train, y_train, x_test, y_test, "generated", extra)
