"""Training batches of a progressive-resize schedule (``--set schedule=dawnbench``): random-resized crops of a
phase's pixel size, in the phase's batch size.

A random-resized crop (the crop of Szegedy et al. that torchvision's ``RandomResizedCrop`` implements) takes a
box of area fraction uniform in [``min_scale``, 1] of the image and aspect ratio log-uniform in [3/4, 4/3], at a
uniform position, tries that up to 10 times until the box fits in the image, and otherwise falls back to the
largest centred box whose ratio is clamped to [3/4, 4/3]; the box is resized (bilinear) to ``size`` x ``size``
and flipped horizontally with probability 1/2.

Exactness (resume, distributed): the pass's order is the permutation :func:`advbench.data.batches` uses for
(seed, epoch), and the random numbers of batch i come from one generator seeded with (seed, epoch, i), drawn as
fractions for every row of the global batch before any image is looked at (10 area, ratio and two position
draws per row, then the flips). So a batch does not depend on the batches before it (``start_batch=k`` yields
exactly batches k.. of the full pass), nor on the image sizes, and a rank's rows equal those rows of the
single-process batch.

Images kept as files (:class:`~advbench.data.LazyImages`, ImageNet) are cropped from the decoded original file,
as the DAWNBench loader does; in-memory images from the stored (already preprocessed) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from advbench.data.batching import derive_seed, num_batches, shard_rows
from advbench.data.core import TensorSplit, is_lazy
from advbench.errors import UserError

ATTEMPTS = 10
RATIO = (3 / 4, 4 / 3)


def draw_crops(generator: torch.Generator, total: int) -> torch.Tensor:
    """Uniform fractions for ``total`` crops: [total, 4 * ATTEMPTS + 1] (areas, log-ratios, x, y per attempt, then
    the flip), drawn in that order from ``generator``."""
    parts = [torch.rand(total, ATTEMPTS, generator=generator, dtype=torch.float64) for _ in range(4)]
    flip = torch.rand(total, 1, generator=generator, dtype=torch.float64)
    return torch.cat([*parts, flip], dim=1)


def crop_box(width: int, height: int, min_scale: float, draws: torch.Tensor | list[float]) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of one random-resized crop of a ``width`` x ``height`` image from its
    row of :func:`draw_crops`."""
    d = [float(v) for v in draws]
    area = width * height
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    for k in range(ATTEMPTS):
        target = area * (min_scale + (1.0 - min_scale) * d[k])
        ratio = math.exp(lo + (hi - lo) * d[ATTEMPTS + k])
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = min(width - w, int(d[2 * ATTEMPTS + k] * (width - w + 1)))
            top = min(height - h, int(d[3 * ATTEMPTS + k] * (height - h + 1)))
            return left, top, w, h
    ratio = width / height  # fallback: the centred box, its ratio clamped to [3/4, 4/3]
    if ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def crop_tensor(image: torch.Tensor, size: int, min_scale: float, draws: torch.Tensor) -> torch.Tensor:
    """The random-resized crop of one image [C, H, W] (uint8 or float in [0, 1]) as float32 [C, size, size]."""
    left, top, w, h = crop_box(int(image.shape[-1]), int(image.shape[-2]), min_scale, draws)
    box = image[:, top:top + h, left:left + w].to(torch.float32)
    if image.dtype == torch.uint8:
        box = box / 255.0
    out = F.interpolate(box[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    out = out.clamp_(0.0, 1.0)
    return out.flip(-1) if float(draws[-1]) < 0.5 else out


def crop_file(path: str, size: int, min_scale: float, draws: torch.Tensor) -> np.ndarray:
    """The random-resized crop of one image file (decoded as RGB): uint8 [3, size, size]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    left, top, w, h = crop_box(image.width, image.height, min_scale, draws)
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if float(draws[-1]) < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def phase_batches(split: TensorSplit, batch_size: int, *, size: int, min_scale: float, seed: int, epoch: int,
                  start_batch: int = 0, device: torch.device | str = "cpu", shard: tuple[int, int] | None = None,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches ``(x, y, idx)`` of ``split`` as random-resized crops: ``x`` float32 [B, C, size,
    size] in [0, 1] on ``device``; ``y`` on ``device``; ``idx`` (CPU) the examples' positions in ``split``.
    ``start_batch`` and ``shard`` as in :func:`advbench.data.batches`."""
    n = len(split)
    total = num_batches(n, batch_size)
    if not 0 <= start_batch <= total:
        raise ValueError(f"start_batch={start_batch} outside 0..{total}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("perm", seed, epoch)))
    lazy = is_lazy(split.x)
    pool: Any = ThreadPoolExecutor(max_workers=split.x.workers) if lazy else None
    dev = torch.device(device)
    try:
        for i in range(start_batch, total):
            idx = order[i * batch_size:(i + 1) * batch_size]
            draws = draw_crops(torch.Generator().manual_seed(derive_seed("rrc", seed, epoch, i)), idx.shape[0])
            if shard is not None:
                lo, hi = shard_rows(idx.shape[0], *shard)
                idx, draws = idx[lo:hi], draws[lo:hi]
            if lazy:
                files = [split.x.files[int(j)] for j in idx]
                arrays = list(pool.map(lambda a: crop_file(a[0], size, min_scale, a[1]), zip(files, draws,
                                                                                              strict=True)))
                x = torch.from_numpy(np.stack(arrays)).to(torch.float32).div_(255.0) if arrays else \
                    torch.zeros(0, 3, size, size)
            else:
                images = split.x[idx.to(split.x.device)].cpu()
                x = torch.stack([crop_tensor(img, size, min_scale, d) for img, d in zip(images, draws, strict=True)]) \
                    if len(images) else torch.zeros(0, int(split.x.shape[1]), size, size)
            yield x.to(dev), split.y[idx.to(split.y.device)].to(dev), idx
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
