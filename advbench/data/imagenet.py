"""ImageNet-1k (ILSVRC-2012) from an ImageFolder layout, decoded lazily, batch by batch.

Expected: ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` (the validation images sorted into
their class folders, as torchvision's ``ImageFolder`` and the usual ``valprep.sh`` leave them), where ROOT
is the data dir itself, ``DATA/imagenet`` or ``DATA/ILSVRC2012`` (or ``--set data.folder=NAME``). Labels
are the indices of the sorted wnid folders of ``train/`` (torchvision's order, the one pretrained models
use). The 1.28M training images do not fit in memory, so the splits hold :class:`LazyImages`: the file
list, each image decoded (PIL, RGB) and preprocessed when a batch asks for it.

Preprocessing (option ``preprocess``), applied to every split, as torchvision's ``Resize(R)`` (shorter side
to R, bilinear, the longer side ``int(R·long/short)``) then ``CenterCrop(S)``:

* ``standard``: R = 256, S = 224, the usual ImageNet evaluation crop;
* ``finlay-288``: R = 328, S = 288, Finlay & Oberman's evaluation at 288 px (their code: ``Resize(int(288·1.14))``
  + ``CenterCrop(288)``; the paper states only that distances are measured at 288 px).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from advbench.data.core import DatasetInfo, LazyImages, OptionSpec, RawDataset, register_dataset
from advbench.errors import UserError

EXTENSIONS = (".jpeg", ".jpg", ".png")
NUM_CLASSES = 1000
#: preprocess name -> (resize of the shorter side, centre crop)
PREPROCESS: dict[str, tuple[int, int]] = {"standard": (256, 224), "finlay-288": (328, 288)}
OPTIONS = {
    "preprocess": OptionSpec(str, "standard", "standard (resize 256, centre crop 224) or finlay-288 "
                                              "(resize 328, centre crop 288)"),
    "folder": OptionSpec(str, "", "folder under the data dir holding train/ and val/ (default: the data dir, "
                                  "imagenet/ or ILSVRC2012/)"),
}
CANDIDATES = ("", "imagenet", "ILSVRC2012")


def preprocess_sizes(options: dict) -> tuple[int, int]:
    """(resize, crop) of the ``preprocess`` option; UserError naming the choices for another value."""
    name = str(options.get("preprocess", "standard")).strip().lower()
    if name not in PREPROCESS:
        raise UserError(f"dataset option preprocess={name!r} for imagenet is unknown; "
                        f"choose one of {', '.join(PREPROCESS)}")
    return PREPROCESS[name]


def imagenet_info(options: dict) -> DatasetInfo:
    """ImageNet's :class:`DatasetInfo` for the chosen preprocessing (1000 classes, 3 × crop × crop)."""
    crop = preprocess_sizes(options)[1]
    return DatasetInfo("imagenet", NUM_CLASSES, (3, crop, crop), mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225), augment="crop-flip")


def resize_crop(image, resize: int, crop: int) -> np.ndarray:
    """``Resize(resize)`` + ``CenterCrop(crop)`` of a PIL RGB image as torchvision computes them;
    uint8 [3, crop, crop]."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BILINEAR)
    w, h = image.size
    if w < crop or h < crop:
        raise UserError(f"resize {resize} is smaller than the crop {crop}")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode(path: str, resize: int, crop: int) -> np.ndarray:
    """Decode one image file as RGB and preprocess it; a one-line UserError for an unreadable file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return resize_crop(im.convert("RGB"), resize, crop)
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def find_imagenet(root: Path, folder: str = "") -> Path | None:
    """The folder holding ``train/`` and ``val/``: ``root/folder`` when given, else root, root/imagenet or
    root/ILSVRC2012 (the first that has both)."""
    for name in (folder,) if folder else CANDIDATES:
        path = root / name if name else root
        if (path / "train").is_dir() and (path / "val").is_dir():
            return path
    return None


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of ``split_dir``."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def list_split(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image paths (sorted within each class) and labels under ``split_dir/<wnid>/``."""
    files: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(classes):
        names = sorted(e.name for e in os.scandir(split_dir / wnid)
                       if e.is_file() and os.path.splitext(e.name)[1].lower() in EXTENSIONS)
        files += [str(split_dir / wnid / n) for n in names]
        labels += [label] * len(names)
    return files, labels


def check_layout(path: Path, train_classes: list[str], val_classes: list[str]) -> None:
    """One-line errors for a tree that is not the ILSVRC-2012 ImageFolder layout."""
    if len(train_classes) != NUM_CLASSES:
        raise UserError(f"ImageNet folder {path / 'train'} has {len(train_classes)} class folders, expected "
                        f"{NUM_CLASSES} (one per wnid, e.g. train/n01440764/)")
    if val_classes != train_classes:
        if not val_classes:
            raise UserError(f"ImageNet folder {path / 'val'} has no class folders: sort the validation images into "
                            "val/<wnid>/ (e.g. with the ILSVRC2012 devkit's labels) and try again")
        missing = sorted(set(train_classes) - set(val_classes))[:3]
        extra = sorted(set(val_classes) - set(train_classes))[:3]
        raise UserError(f"ImageNet val/ class folders differ from train/ (missing {missing}, extra {extra}) "
                        f"in {path}")


@register_dataset(
    "imagenet",
    info=imagenet_info,
    options=OPTIONS,
    help="ImageNet-1k (ILSVRC-2012) train/val ImageFolder, decoded lazily; preprocess standard|finlay-288",
)
def load_imagenet(root: Path, download: bool, options: dict) -> RawDataset:
    """Lazy train and val (= test) sets: file lists decoded and preprocessed batch by batch."""
    resize, crop = preprocess_sizes(options)
    folder = str(options["folder"])
    path = find_imagenet(root, folder)
    if path is None:
        where = root / folder if folder else root
        raise UserError(f"ImageNet not found in {where} (expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG); "
                        "it cannot be downloaded automatically: get ILSVRC-2012 from image-net.org and pass "
                        "--data-dir DIR")
    train_classes = class_folders(path / "train")
    check_layout(path, train_classes, class_folders(path / "val"))
    train_files, train_labels = list_split(path / "train", train_classes)
    test_files, test_labels = list_split(path / "val", train_classes)
    if not train_files or not test_files:
        raise UserError(f"ImageNet folder {path} has no images in train/ or val/")
    load = partial(decode, resize=resize, crop=crop)
    shape = (3, crop, crop)
    return RawDataset(
        LazyImages(train_files, shape, load),  # type: ignore[arg-type]
        np.asarray(train_labels, dtype=np.int64),
        LazyImages(test_files, shape, load),  # type: ignore[arg-type]
        np.asarray(test_labels, dtype=np.int64),
        str(path),
        extra={"classes": train_classes, "preprocess": {"name": str(options["preprocess"]).strip().lower(),
                                                        "resize": resize, "crop": crop}},
    )
