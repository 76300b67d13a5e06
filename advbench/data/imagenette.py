"""Imagenette (10 easy ImageNet classes) from an ImageFolder layout, resized into memory.

Expected: ``ROOT/imagenette2*/train/<wnid>/*.JPEG`` and ``.../val/<wnid>/*.JPEG`` (the fast.ai
archives ``imagenette2``, ``imagenette2-320`` or ``imagenette2-160``), or ``ROOT/{train,val}``
directly. Every image is resized so its shorter side is ``size`` and centre-cropped to
``size x size`` (option ``size``, default 224), decoded with a thread pool into uint8 tensors.
The ``val`` folder is the test split; validation is held out from ``train`` as for every dataset.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
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

URL = "https://s3.amazonaws.com/fast-ai-imageclas/{name}.tgz"
EXTENSIONS = (".jpeg", ".jpg", ".png")
OPTIONS = {
    "size": OptionSpec(int, 224, "image side after resize + centre crop (pixels)", minimum=8),
    "folder": OptionSpec(str, "", "folder under the data dir to read (default: pick an imagenette2* folder)"),
}


def imagenette_info(options: dict) -> DatasetInfo:
    """Imagenette's :class:`DatasetInfo` for the chosen ``size``."""
    size = int(options.get("size", 224))
    return DatasetInfo(
        "imagenette",
        10,
        (3, size, size),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        augment="crop-flip",
    )


def _variant_side(path: Path) -> int:
    """Shorter image side of an imagenette2 variant folder (``-160``, ``-320``; full size = large)."""
    m = re.search(r"-(\d+)$", path.name)
    return int(m.group(1)) if m else 10**6


def _is_imagefolder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val").is_dir()


def find_imagenette(root: Path, size: int, folder: str = "") -> Path | None:
    """The folder holding ``train/`` and ``val/``: ``root/folder`` when given, ``root`` itself, or
    the smallest ``root/imagenette2*`` variant whose images are at least ``size`` pixels."""
    if folder:
        return root / folder if _is_imagefolder(root / folder) else None
    if _is_imagefolder(root):
        return root
    cands = sorted((p for p in root.glob("imagenette2*") if _is_imagefolder(p)), key=_variant_side)
    if not cands:
        return None
    big_enough = [p for p in cands if _variant_side(p) >= size]
    return big_enough[0] if big_enough else cands[-1]


def list_images(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Image paths and labels under ``split_dir/<class>/``; classes are sorted folder names."""
    if classes is None:
        classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        cdir = split_dir / name
        if not cdir.is_dir():
            raise UserError(f"Imagenette folder {split_dir} has no class folder '{name}' (found in train/)")
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in EXTENSIONS:
                files.append(f)
                labels.append(label)
    return files, labels, classes


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode ``path`` as RGB, resize its shorter side to ``size``, centre-crop; uint8 [3, size, size]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # fast JPEG decode at a reduced scale, still >= size
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def load_images(files: list[Path], size: int) -> np.ndarray:
    """Decode ``files`` in parallel threads into one uint8 array [N, 3, size, size]."""
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = load_image(files[i], size)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(files))))
    return out


def _download(root: Path, size: int) -> None:
    """Fetch and unpack the smallest fast.ai archive that has images of at least ``size`` pixels."""
    name = "imagenette2-160" if size <= 160 else "imagenette2-320" if size <= 320 else "imagenette2"
    url = URL.format(name=name)
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(url, download_root=str(root))
    except Exception as err:
        raise download_failed("Imagenette", root, err, url) from None


@register_dataset(
    "imagenette",
    info=imagenette_info,
    options=OPTIONS,
    help="Imagenette: 9.5k/3.9k ImageNet images of 10 classes (ImageFolder), resized to --size",
)
def load_imagenette(root: Path, download: bool, options: dict) -> RawDataset:
    """Imagenette train and val (= test) folders decoded to uint8 arrays of side ``options['size']``."""
    size, folder = int(options["size"]), str(options["folder"])
    path = find_imagenette(root, size, folder)
    if path is None and download and not folder:
        _download(root, size)
        path = find_imagenette(root, size, folder)
    if path is None:
        where = root / folder if folder else root / "imagenette2*"
        hint = f" (expected train/<wnid>/*.JPEG and val/; get {URL.format(name='imagenette2-320')})"
        raise not_found("Imagenette", where, hint)
    train_files, train_labels, classes = list_images(path / "train")
    test_files, test_labels, _ = list_images(path / "val", classes)
    if len(classes) != 10:
        raise UserError(f"Imagenette folder {path / 'train'} has {len(classes)} class folders, expected 10")
    if not train_files or not test_files:
        raise UserError(f"Imagenette folder {path} has no images in train/ or val/")
    return RawDataset(
        load_images(train_files, size),
        np.asarray(train_labels, dtype=np.int64),
        load_images(test_files, size),
        np.asarray(test_labels, dtype=np.int64),
        str(path),
        extra={"classes": classes},
    )
