"""Deterministic mini-batches and vectorised augmentation for in-memory :class:`TensorSplit` s.

The order of a pass and the augmentation of each batch are pure functions of
(``seed``, ``epoch``, batch index): the permutation comes from a ``torch.Generator`` seeded with
(seed, epoch) and each batch's augmentation from one seeded with (seed, epoch, batch index). So
``start_batch=k`` yields exactly batches k.. of the full pass, which makes mid-epoch resume
bit-exact. The global RNG is never touched. Random numbers are drawn on the CPU, so the result
does not depend on the device.

Distributed training (``shard=(rank, world)``) yields each rank its contiguous part of every global
batch (:func:`shard_rows`); the augmentation random numbers are drawn for the whole global batch and
sliced, so the union of the ranks' batches is exactly the single-process batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from advbench.data.core import AUGMENTS, TensorSplit


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts`` by hashing (different parts give unrelated streams)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches in one pass over ``n`` examples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def shard_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous part of a batch of ``n`` rows (sizes differ by <= 1)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator, *,
                  part: tuple[int, int] | None = None, scale: float = 0.0, brightness: float = 0.0) -> torch.Tensor:
    """Augment a batch ``x`` [B, C, H, W] (any dtype, any device), returning a new tensor.

    ``"crop-flip"``: zero-pad by H//8 (4 for 32x32) on each side, take a random HxW crop, then flip
    horizontally with probability 0.5; ``"crop"``: pad and crop only; ``"none"``: ``x`` unchanged.
    Implemented as one gather, so the cost is one pass over the batch. Random numbers are drawn
    from ``generator`` in a fixed order (row offsets, column offsets, flips). ``part=(start, total)``
    says that ``x`` holds rows start..start+B-1 of a batch of ``total`` rows: the random numbers are
    drawn for all ``total`` rows and sliced, so the result equals those rows of the augmented whole.
    ``scale``/``brightness`` > 0 add :func:`jitter_batch` after the crop and flip (their random numbers are drawn
    after the crop's and flip's, so a batch without jitter is augmented exactly as before).
    """
    if kind not in AUGMENTS:
        raise ValueError(f"unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTS)}")
    if kind == "none" or x.shape[0] == 0:
        return x
    b, c, h, w = x.shape
    start, total = part if part is not None else (0, b)
    sl = slice(start, start + b)
    ph, pw = max(1, h // 8), max(1, w // 8)
    dev = generator.device
    oy = torch.randint(0, 2 * ph + 1, (total,), generator=generator, device=dev)[sl].to(x.device) - ph
    ox = torch.randint(0, 2 * pw + 1, (total,), generator=generator, device=dev)[sl].to(x.device) - pw
    cols = torch.arange(w, device=x.device).expand(b, w)
    if kind == "crop-flip":
        flip = (torch.rand(total, generator=generator, device=dev)[sl] < 0.5).to(x.device)
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H] source rows
    cols = ox[:, None] + cols  # [B, W] source columns
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    flat = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # [B, H, W]
    out = torch.gather(x.reshape(b, c, h * w), 2, flat.reshape(b, 1, h * w).expand(b, c, h * w))
    out = out.reshape(b, c, h, w)
    out = torch.where(valid[:, None], out, torch.zeros((), dtype=x.dtype, device=x.device))
    if scale or brightness:
        out = jitter_batch(out, generator, start=start, total=total, scale=scale, brightness=brightness)
    return out


def jitter_batch(x: torch.Tensor, generator: torch.Generator, *, start: int = 0, total: int | None = None,
                 scale: float = 0.0, brightness: float = 0.0) -> torch.Tensor:
    """Scale each image of ``x`` (float in [0, 1]) about its centre by a factor uniform in [1 - scale, 1 + scale]
    (torchvision's affine: bilinear, zero fill) and multiply its brightness by one uniform in
    [1 - brightness, 1 + brightness] (torchvision's adjust_brightness, clamped to [0, 1]). The factors are drawn
    from ``generator`` for all ``total`` rows (scales, then brightness factors) and rows start.. of them used."""
    from torchvision.transforms.v2 import functional as tvf

    b = x.shape[0]
    total = b if total is None else total
    dev = generator.device
    sl = slice(start, start + b)
    scales = (1 + scale * (2 * torch.rand(total, generator=generator, device=dev) - 1))[sl].tolist()
    lights = (1 + brightness * (2 * torch.rand(total, generator=generator, device=dev) - 1))[sl].tolist()
    out = []
    for img, s, f in zip(x, scales, lights, strict=True):
        if scale:
            img = tvf.affine(img, angle=0.0, translate=[0, 0], scale=s, shear=[0.0, 0.0],
                             interpolation=tvf.InterpolationMode.BILINEAR, fill=0.0)
        if brightness:
            img = tvf.adjust_brightness(img, f)
        out.append(img)
    return torch.stack(out) if out else x


def batches(
    split: TensorSplit,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    augment: str = "none",
    device: torch.device | str = "cpu",
    drop_last: bool = False,
    shard: tuple[int, int] | None = None,
    pin_memory: bool | None = None,
    scale: float = 0.0,
    brightness: float = 0.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Iterate over ``split`` in mini-batches ``(x, y, idx)``.

    ``x`` is float32 in [0, 1] on ``device`` (uint8 images are divided by 255, float images are
    taken as they are) augmented with ``augment``; ``y`` is int64 on ``device``; ``idx`` is int64
    on the CPU: the positions of the batch's examples in ``split`` (any object with ``.x``, ``.y``).
    With ``shuffle`` the order is a permutation seeded by (seed, epoch), otherwise 0..N-1.
    ``start_batch=k`` skips the first k batches and yields exactly what the full pass would.
    ``shard=(rank, world)``: yield only this rank's contiguous part of each batch (:func:`shard_rows`),
    augmented exactly as those rows of the whole batch. ``pin_memory`` (default: on for a CUDA
    ``device`` when the split lives on the CPU) copies through page-locked memory with non-blocking
    transfers; a split already on ``device`` is indexed in place (no copy at all).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}")
    n = len(split)
    total = num_batches(n, batch_size, drop_last)
    if not 0 <= start_batch <= total:
        raise ValueError(f"start_batch={start_batch} outside 0..{total}")
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("perm", seed, epoch)))
    else:
        order = torch.arange(n)
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard={shard} must be (rank, world) with 0 <= rank < world")
    dev = torch.device(device)
    pin = dev.type == "cuda" if pin_memory is None else bool(pin_memory)
    pin = pin and dev.type == "cuda" and split.x.device.type == "cpu"
    return _iterate(split, order, batch_size, total, start_batch, seed, epoch, augment, dev, shard, pin,
                    (scale, brightness))


def _iterate(
    split: TensorSplit,
    order: torch.Tensor,
    batch_size: int,
    total: int,
    start_batch: int,
    seed: int,
    epoch: int,
    augment: str,
    device: torch.device,
    shard: tuple[int, int] | None,
    pin: bool,
    jitter: tuple[float, float] = (0.0, 0.0),
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The generator behind :func:`batches` (arguments already validated)."""
    for i in range(start_batch, total):
        idx = order[i * batch_size : (i + 1) * batch_size]
        part = None
        if shard is not None:
            n_all = idx.shape[0]
            lo, hi = shard_rows(n_all, *shard)
            idx, part = idx[lo:hi], (lo, n_all)
        if split.x.device.type != "cpu":
            x, y = split.x[idx.to(split.x.device)], split.y[idx.to(split.y.device)]
        else:
            x, y = split.x[idx], split.y[idx]
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        x = x.to(device, non_blocking=pin)
        x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        y = y.to(device, non_blocking=pin)
        if augment != "none":
            x = augment_batch(x, augment, torch.Generator().manual_seed(derive_seed("aug", seed, epoch, i)), part=part,
                              scale=jitter[0], brightness=jitter[1])
        yield x, y, idx
