"""Dataset containers, the dataset registry and :func:`load_splits` (train / val / test splits).

Loaders are plain functions returning numpy arrays (:class:`RawDataset`); this module turns them
into in-memory uint8 tensors and carves the validation split out of the training set. A set too large
for memory (ImageNet) is a :class:`LazyImages` instead: a list of files decoded batch by batch when
indexed. Importing it does not import torch (the CLI lists datasets without paying for it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advbench.core.options import convert
from advbench.errors import UserError
from advbench.registry import Registry, closest

if TYPE_CHECKING:
    import torch

AUGMENTS: tuple[str, ...] = ("crop-flip", "crop", "none")
DEFAULT_VAL_MAX = 1000  # val_size default: min(1000, 10% of the training set)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: classes, image shape (C, H, W), normalisation, augmentation."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    #: photometric/geometric jitter on top of ``augment`` (dataset options ``scale`` and ``brightness``): each
    #: training image is scaled about its centre by a factor uniform in [1 - scale, 1 + scale] and its brightness
    #: multiplied by one uniform in [1 - brightness, 1 + brightness] (SAT's "scaling, and brightness jitter")
    scale: float = 0.0
    brightness: float = 0.0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        for name in ("scale", "brightness"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"dataset option {name}={getattr(self, name)} for {self.name} must be in [0, 1) "
                                f"(e.g. {name}=0.1: a factor in [0.9, 1.1])")
        if not (len(self.mean) == len(self.std) == self.shape[0]):
            raise ValueError("mean and std need one value per channel")


@dataclass
class TensorSplit:
    """Images ``x`` [N, C, H, W] and int64 labels ``y`` [N] held in memory: a loaded split (uint8 in 0..255), or
    the images an evaluation runs on (also float in [0, 1]; see :func:`advbench.engine.job.as_eval_data`)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray | slice) -> TensorSplit:
        """Return the examples selected by ``idx`` (indices or a slice) as a new split (lazy images stay lazy)."""
        return TensorSplit(take(self.x, idx), self.y[idx])


class LazyImages:
    """Images kept as files and decoded when indexed: stands where a uint8 ``[N, C, H, W]`` tensor would.

    ``images[i]`` (an int, a slice, or an index tensor/array) decodes those files with ``decode(path) ->
    uint8 [C, H, W]`` in a thread pool and returns a CPU uint8 tensor, so batching, evaluation and digests
    work unchanged; :meth:`select` (used for splits and subsets) returns another ``LazyImages`` over the chosen
    files without decoding anything. The last slice decoded is kept, so the evaluation's repeated
    ``x[:n]`` decodes once. ``shape``, ``ndim``, ``device`` (CPU) and ``len`` answer as for the tensor.
    """

    lazy = True
    ndim = 4

    def __init__(self, files: Sequence[str], image_shape: tuple[int, int, int],
                 decode: Callable[[str], np.ndarray], workers: int | None = None) -> None:
        self.files = list(files)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.decode = decode
        self.workers = workers or min(16, os.cpu_count() or 1)
        self._cached: tuple[tuple[int, int, int], Any] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, C, H, W), as a tensor's."""
        return (len(self.files), *self.image_shape)

    @property
    def device(self) -> Any:
        """Always the CPU (decoded batches are moved by the caller)."""
        import torch

        return torch.device("cpu")

    def _positions(self, idx: Any) -> list[int]:
        if isinstance(idx, slice):
            return list(range(len(self.files)))[idx]
        if isinstance(idx, (int, np.integer)):
            return [int(idx)]
        return [int(i) for i in np.asarray(idx.cpu() if hasattr(idx, "cpu") else idx).reshape(-1)]

    def select(self, idx: Any) -> LazyImages:
        """The images at ``idx`` (slice or indices) as another lazy set; nothing is decoded."""
        return LazyImages([self.files[i] for i in self._positions(idx)], self.image_shape, self.decode, self.workers)

    def __getitem__(self, idx: Any) -> Any:
        import torch

        key = idx.indices(len(self.files)) if isinstance(idx, slice) else None
        if key is not None and self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        pos = self._positions(idx)
        out = np.empty((len(pos), *self.image_shape), dtype=np.uint8)

        def work(k: int) -> None:
            out[k] = self.decode(self.files[pos[k]])

        if len(pos) > 1 and self.workers > 1:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(pos))) as pool:
                list(pool.map(work, range(len(pos))))
        else:
            for k in range(len(pos)):
                work(k)
        result = torch.from_numpy(out)
        if isinstance(idx, (int, np.integer)):
            return result[0]
        if key is not None:
            self._cached = (key, result)
        return result


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is a :class:`LazyImages` (decoded on indexing) rather than an in-memory array."""
    return isinstance(x, LazyImages)


def take(x: Any, idx: Any) -> Any:
    """``x[idx]`` for arrays and tensors; for :class:`LazyImages` the lazy selection (nothing decoded)."""
    return x.select(idx) if is_lazy(x) else x[idx]


@dataclass
class DataSplits:
    """Train, validation (held out from train) and test splits plus a JSON-able ``meta`` record."""

    info: DatasetInfo
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    meta: dict = field(default_factory=dict)


@dataclass
class RawDataset:
    """What a loader returns: full train and test sets as numpy arrays in the original order.

    ``x_*`` are uint8 [N, C, H, W], ``y_*`` int64 [N]; ``source`` says where they came from and
    ``extra`` holds loader-specific metadata (generator parameters, folder variant, ...).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OptionSpec:
    """A dataset option (``--set data.options.NAME=VALUE``): its type, default and help text."""

    type: type
    default: Any
    help: str
    minimum: int | None = None


LoadFn = Callable[[Path, bool, dict], RawDataset]


@dataclass(frozen=True)
class DatasetLoader:
    """A registered dataset: callable as ``loader(root, download, options) -> RawDataset``."""

    name: str
    load: LoadFn
    info_fn: Callable[[dict], DatasetInfo]
    options: dict[str, OptionSpec]
    needs_data_dir: bool = True

    def __call__(self, root: Path, download: bool, options: dict) -> RawDataset:
        return self.load(root, download, options)

    def info(self, options: dict | None = None) -> DatasetInfo:
        """The dataset's :class:`DatasetInfo` for the given options (defaults when None)."""
        return self.info_fn(self.resolve_options(options))

    def resolve_options(self, options: dict | None) -> dict:
        """Check option names, coerce values to their types and fill in defaults."""
        out = {k: spec.default for k, spec in self.options.items()}
        for key, value in (options or {}).items():
            name = str(key).strip().replace("-", "_")
            if name not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                hits = closest(str(key), list(self.options))
                hint = f"; did you mean {hits[0]!r}?" if hits else f" (options: {known})"
                raise UserError(f"unknown option '{key}' for dataset {self.name}{hint}")
            spec = self.options[name]
            coerced = convert(value, spec.type, f"dataset option {name} of {self.name}")
            if spec.minimum is not None and coerced < spec.minimum:
                raise UserError(f"dataset option {name}={coerced} for {self.name} must be >= {spec.minimum}")
            out[name] = coerced
        return out


DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    info: DatasetInfo | Callable[[dict], DatasetInfo],
    help: str,
    options: dict[str, OptionSpec] | None = None,
    needs_data_dir: bool = True,
) -> Callable[[LoadFn], DatasetLoader]:
    """Decorator registering a loader function ``fn(root, download, options) -> RawDataset``."""

    def deco(fn: LoadFn) -> DatasetLoader:
        info_fn = info if callable(info) else (lambda _opts, _i=info: _i)
        loader = DatasetLoader(name, fn, info_fn, dict(options or {}), needs_data_dir)
        DATASETS.add(name, loader, help)
        return loader

    return deco


def dataset_names() -> list[str]:
    """Registered dataset names, in registration order."""
    return DATASETS.names()


def dataset_info(name: str, options: dict | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name`` (with ``options``) without loading any data."""
    return DATASETS.get(name).info(options)


def dataset_options(name: str) -> dict[str, OptionSpec]:
    """The options dataset ``name`` accepts (name -> :class:`OptionSpec`)."""
    return dict(DATASETS.get(name).options)


def default_data_dir() -> Path:
    """Root folder for datasets: ``$ADVBENCH_DATA_DIR`` or ``~/.cache/advbench/data``."""
    env = os.environ.get("ADVBENCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "advbench" / "data"


def split_permutation(n: int, split_seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``split_seed`` (not on library versions).

    Each index gets a SplitMix64 hash of (index, seed) and the indices are sorted by it, so the
    validation split is the same on every machine and every numpy/torch version.
    """
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(split_seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.argsort(z, kind="stable").astype(np.int64)


def _fingerprint(idx: np.ndarray) -> str:
    """Short hash of an index array, recorded so runs can check they share a split."""
    return hashlib.sha256(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()[:16]


def _check_raw(name: str, raw: RawDataset, info: DatasetInfo) -> None:
    """Fail loudly when a loader returns arrays that do not match its DatasetInfo."""
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        dtype_ok = is_lazy(x) or x.dtype == np.uint8
        if not dtype_ok or x.ndim != 4 or tuple(x.shape[1:]) != info.shape or len(x) != len(y):
            raise UserError(
                f"{name} {split} data in {raw.source} has shape {tuple(x.shape)} {getattr(x, 'dtype', 'lazy')}, "
                f"expected [N, {', '.join(map(str, info.shape))}] uint8; the files look corrupt"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise UserError(
                f"{name} {split} labels in {raw.source} fall outside 0..{info.num_classes - 1}; "
                "the files look corrupt"
            )


def _train_val_indices(name: str, n_full: int, val_size: int | None, n_train: int | None,
                       split_seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(val_size, sorted validation indices, sorted training indices) of a training set of ``n_full`` images:
    the validation split is the first ``val_size`` of the ``split_seed`` permutation, training the first
    ``n_train`` of the rest. UserError for sizes that do not fit."""
    if val_size is None:
        val_size = min(DEFAULT_VAL_MAX, n_full // 10)
    if val_size < 0 or val_size >= n_full:
        raise UserError(
            f"val_size={val_size} is invalid for {name}: "
            f"need 0 <= val_size < {n_full} (the training set size)"
        )
    perm = split_permutation(n_full, split_seed)
    val_idx = np.sort(perm[:val_size])
    rest = perm[val_size:]
    if n_train is not None:
        if n_train < 1 or n_train > len(rest):
            raise UserError(
                f"n_train={n_train} is invalid for {name}: {len(rest)} training examples are left "
                f"after holding out val_size={val_size}; choose 1..{len(rest)}"
            )
        rest = rest[:n_train]
    return val_size, val_idx, np.sort(rest)


def _split_meta(loader: DatasetLoader, root: Path, raw: RawDataset, opts: dict, info: DatasetInfo, *,
                split_seed: int, val_size: int, n_train: int | None, n_test: int | None, train_idx: np.ndarray,
                val_idx: np.ndarray, n_test_keep: int) -> dict[str, Any]:
    """The JSON-able record of how the splits were cut (stored with every run)."""
    return {
        "dataset": loader.name,
        "data_dir": str(root) if loader.needs_data_dir else None,
        "source": raw.source,
        "options": opts,
        "num_classes": info.num_classes,
        "shape": list(info.shape),
        "augment": info.augment,
        "split_seed": int(split_seed),
        "val_size": int(val_size),
        "n_train_available": len(raw.y_train) - int(val_size),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_test_available": len(raw.y_test),
        "n_test": n_test_keep,
        "train_subset": None
        if n_train is None
        else f"first {n_train} of the split_seed permutation after val",
        "test_subset": None if n_test is None else f"first {n_test} test images in original order",
        "val_fingerprint": _fingerprint(val_idx),
        "train_fingerprint": _fingerprint(train_idx),
    }


def load_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    n_train: int | None = None,
    val_size: int | None = None,
    split_seed: int = 0,
    n_test: int | None = None,
    options: dict | None = None,
    test_sample_seed: int | None = None,
) -> DataSplits:
    """Load dataset ``name`` into memory as train / val / test :class:`TensorSplit` s.

    The validation split is the first ``val_size`` examples of the training set permuted by
    ``split_seed`` (default size ``min(1000, 10%)``); ``n_train`` keeps the first ``n_train`` of
    the remaining permuted examples; ``n_test`` keeps the first ``n_test`` test examples in the
    original order, or, with ``test_sample_seed``, ``n_test`` test examples drawn at random (the first ``n_test``
    of the ``test_sample_seed`` permutation of :func:`split_permutation`: "We attack 1000 randomly selected
    images"). Every kept set stays in ascending index order. Raises UserError on bad input.
    """
    import torch

    loader = DATASETS.get(name)
    opts = loader.resolve_options(options)
    info = loader.info_fn(opts)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    raw = loader(root, download, opts)
    _check_raw(loader.name, raw, info)

    val_size, val_idx, train_idx = _train_val_indices(loader.name, len(raw.y_train), val_size, n_train, split_seed)
    n_test_full = len(raw.y_test)
    if n_test is not None and (n_test < 1 or n_test > n_test_full):
        raise UserError(
            f"n_test={n_test} is invalid for {loader.name}: its test set has {n_test_full} images; "
            f"choose 1..{n_test_full} (--n-eval)"
        )
    n_keep = n_test_full if n_test is None else n_test

    def split(x: Any, y: np.ndarray) -> TensorSplit:
        images = x if is_lazy(x) else torch.from_numpy(np.ascontiguousarray(x))
        return TensorSplit(images, torch.from_numpy(y.astype(np.int64)))

    train = split(take(raw.x_train, train_idx), raw.y_train[train_idx])
    val = split(take(raw.x_train, val_idx), raw.y_train[val_idx])
    if test_sample_seed is None:
        test = split(take(raw.x_test, slice(0, n_keep)), raw.y_test[:n_keep])
    else:
        test_idx = np.sort(split_permutation(n_test_full, test_sample_seed)[:n_keep])
        test = split(take(raw.x_test, test_idx), raw.y_test[test_idx])
    meta = {**_split_meta(loader, root, raw, opts, info, split_seed=split_seed, val_size=val_size, n_train=n_train,
                          n_test=n_test, train_idx=train_idx, val_idx=val_idx, n_test_keep=len(test)), **raw.extra}
    if test_sample_seed is not None:
        meta["test_subset"] = f"{n_keep} test images drawn at random with sample seed {test_sample_seed}"
        meta["test_sample_seed"] = int(test_sample_seed)
        meta["test_fingerprint"] = _fingerprint(test_idx)
    return DataSplits(info=info, train=train, val=val, test=test, meta=meta)


def not_found(title: str, path: Path, extra: str = "") -> UserError:
    """The one-line error for a dataset missing on disk (names the path and the flags)."""
    return UserError(f"{title} not found in {path}{extra}; pass --download or --data-dir DIR")


def download_failed(title: str, root: Path, err: BaseException, url: str) -> UserError:
    """The one-line error for a failed download (no network, disk full, ...)."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(
        f"could not download {title} into {root} ({reason}); fetch {url} yourself, "
        f"unpack it there and pass --data-dir {root}"
    )
