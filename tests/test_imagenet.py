"""The ``imagenet`` dataset on format-exact fixture trees written here (1000 wnid class folders of tiny JPEGs in
train/ and val/): labels, splits, lazy decoding, the two preprocessings against torchvision's transforms, the
one-line errors (and exit code 2 on the command line), and clean top-5 accuracy in the evaluation results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from advbench.data import batches, dataset_info, is_lazy, load_splits
from advbench.data.imagenet import decode
from advbench.errors import UserError

WNIDS = [f"n{1440764 + 3 * i:08d}" for i in range(1000)]  # the real format: n + 8 digits, sorted = label order


def colour(label: int) -> tuple[int, int, int]:
    """A flat colour that encodes the label (JPEG keeps flat colours within a few levels)."""
    return (label % 10) * 25, (label // 10 % 10) * 25, (label // 100) * 25


def write_imagenet(root: Path, val_per_class: int = 1, flat_val: bool = False, classes: int = 1000) -> Path:
    """``root/imagenet/{train,val}/<wnid>/`` with ILSVRC-2012 file names: ``<wnid>_<k>.JPEG`` in train/ (two per
    class), ``ILSVRC2012_val_<8 digits>.JPEG`` in val/ (in class folders unless ``flat_val``)."""
    base = root / "imagenet"
    n_val = 0
    for label, wnid in enumerate(WNIDS[:classes]):
        (base / "train" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (12 + k, 10), colour(label)).save(base / "train" / wnid / f"{wnid}_{k + 1}.JPEG")
        vdir = base / "val" if flat_val else base / "val" / wnid
        vdir.mkdir(parents=True, exist_ok=True)
        for _ in range(val_per_class):
            n_val += 1
            Image.new("RGB", (10, 14), colour(label)).save(vdir / f"ILSVRC2012_val_{n_val:08d}.JPEG")
    return base


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_imagenet(root)
    return root


def label_of(img: torch.Tensor) -> int:
    r, g, b = (int(round(float(v) / 25)) for v in img.float().mean(dim=(1, 2)))
    return r + 10 * g + 100 * b


def test_layout_labels_and_splits(tree: Path) -> None:
    s = load_splits("imagenet", data_dir=tree)
    assert s.info.num_classes == 1000 and s.info.shape == (3, 224, 224) and s.info.augment == "crop-flip"
    assert s.info.mean == (0.485, 0.456, 0.406)
    assert is_lazy(s.train.x) and is_lazy(s.val.x) and is_lazy(s.test.x)
    assert (len(s.train), len(s.val), len(s.test)) == (1800, 200, 1000)  # val_size = min(1000, 10%)
    assert s.test.x.shape == (1000, 3, 224, 224)
    assert s.test.y.tolist() == list(range(1000))  # one val image per class, in wnid order
    assert sorted(s.train.y.tolist() + s.val.y.tolist()) == sorted(list(range(1000)) * 2)
    assert s.meta["classes"] == WNIDS and s.meta["source"] == str(tree / "imagenet")
    assert s.meta["preprocess"] == {"name": "standard", "resize": 256, "crop": 224}
    picked = [0, 7, 123, 999]
    x = s.test.x[torch.tensor(picked)]
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 224, 224)
    assert [label_of(img) for img in x] == picked  # the decoded pixels belong to the labelled class
    first = s.test.x[:3]
    assert s.test.x[:3] is first  # the evaluation's repeated x[:n] decodes once
    sub = s.train.subset(torch.tensor([5, 9]))
    assert is_lazy(sub.x) and [label_of(img) for img in sub.x[:2]] == sub.y.tolist()


def test_batches_decode_lazily(tree: Path) -> None:
    s = load_splits("imagenet", data_dir=tree, n_train=40, options={"preprocess": "finlay-288"})
    assert s.info.shape == (3, 288, 288)
    seen = 0
    for x, y, idx in batches(s.train, 16, shuffle=True, seed=1, augment="crop-flip"):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 288, 288) and 0 <= float(x.min()) <= float(x.max()) <= 1
        centre = (x[:, :, 100:188, 100:188] * 255).to(torch.uint8)  # away from the zero padding of the crop
        assert [label_of(img) for img in centre] == y.tolist()
        assert torch.equal(s.train.y[idx], y)
        seen += len(y)
    assert seen == 40


def test_decoding_waits_for_the_batch(tmp_path: Path) -> None:
    """A corrupt file loads (nothing is decoded up front) and fails in one line when its batch is decoded."""
    base = write_imagenet(tmp_path)
    bad = base / "val" / WNIDS[2] / "ILSVRC2012_val_00000003.JPEG"
    bad.write_bytes(b"not a jpeg")
    s = load_splits("imagenet", data_dir=tmp_path, val_size=0)
    assert s.test.x[:2].shape == (2, 3, 224, 224)
    with pytest.raises(UserError, match="cannot read image .*ILSVRC2012_val_00000003.JPEG"):
        s.test.x[:3]


@pytest.mark.parametrize(("preprocess", "resize", "crop"), [("standard", 256, 224), ("finlay-288", 328, 288)])
def test_preprocessing_equals_torchvision(tmp_path: Path, preprocess: str, resize: int, crop: int) -> None:
    """Resize(shorter side) + CenterCrop as torchvision's transforms do it, for landscape, portrait, square,
    grayscale, CMYK and PNG inputs, small and large."""
    rng = np.random.default_rng(0)
    reference = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop)])
    cases = [((500, 375), "RGB", "JPEG"), ((333, 500), "RGB", "JPEG"), ((400, 400), "L", "JPEG"),
             ((640, 427), "CMYK", "JPEG"), ((41, 29), "RGB", "PNG"), ((resize, 300), "RGB", "PNG")]
    for k, ((w, h), mode, fmt) in enumerate(cases):
        arr = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8).squeeze()
        path = tmp_path / f"img{k}.{fmt.lower()}"
        Image.fromarray(arr, mode=mode).save(path, format=fmt)
        ours = decode(str(path), resize, crop)
        with Image.open(path) as im:
            ref = np.asarray(reference(im.convert("RGB")), dtype=np.uint8).transpose(2, 0, 1)
        assert ours.shape == (3, crop, crop) and np.array_equal(ours, ref), (preprocess, w, h, mode)
    assert dataset_info("imagenet", {"preprocess": preprocess}).shape == (3, crop, crop)


def test_missing_and_malformed_trees(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        load_splits("imagenet", data_dir=root)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"ImageNet not found in {root}") and "--data-dir" in msg
    flat = tmp_path / "flat"
    write_imagenet(flat, flat_val=True, classes=1000)
    with pytest.raises(UserError, match=r"no class folders: sort the validation images into val/<wnid>/"):
        load_splits("imagenet", data_dir=flat)
    few = tmp_path / "few"
    write_imagenet(few, classes=10)
    with pytest.raises(UserError, match="has 10 class folders, expected 1000"):
        load_splits("imagenet", data_dir=few)
    with pytest.raises(UserError, match="standard, finlay-288"):
        dataset_info("imagenet", {"preprocess": "finlay"})


def test_cli_missing_data_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "advbench", "train", "--dataset", "imagenet", "--data-dir",
                           str(tmp_path / "none"), "--out", str(tmp_path / "runs"), "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "ImageNet not found in" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class FixedLogits(nn.Module):
    """Logits read from a table by the image's index, which is written in its first pixel (x·255)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0, 0, 0] * 255).round().long()
        return self.table[idx] * self.scale


def test_clean_top5_against_hand_count() -> None:
    """7 classes, 6 images. Ranks of the label among the logits (1 = largest): 1, 7, 5, 5, 7, 2, so top-1 is 1/6
    and top-5 (rank ≤ 5) is 4/6."""
    from advbench.api.tensors import evaluate_tensors

    table = torch.tensor([
        [9., 1, 2, 3, 4, 5, 6],  # label 0 (logit 9): the largest -> rank 1
        [9., 1, 8, 7, 6, 5, 4],  # label 1 (logit 1): the smallest -> rank 7
        [1., 2, 3, 4, 5, 6, 7],  # label 2 (logit 3): 7, 6, 5, 4 above -> rank 5
        [7., 6, 5, 4, 3, 2, 1],  # label 4 (logit 3): 7, 6, 5, 4 above -> rank 5
        [1., 2, 3, 4, 5, 6, 7],  # label 0 (logit 1): the smallest -> rank 7
        [2., 9, 1, 1, 1, 1, 1],  # label 0 (logit 2): 9 above -> rank 2
    ])
    labels = torch.tensor([0, 1, 2, 4, 0, 0])
    ranks = [int((row > row[lab]).sum()) + 1 for row, lab in zip(table, labels, strict=True)]
    assert ranks == [1, 7, 5, 5, 7, 2]
    x = torch.zeros(6, 3, 4, 4)
    x[:, 0, 0, 0] = torch.arange(6) / 255
    res = evaluate_tensors(FixedLogits(table), x, labels, attack="fgsm", eps="0", hygiene=False, device="cpu")
    assert res["clean"]["accuracy"] == pytest.approx(1 / 6)
    assert res["clean"]["top5_correct"] == [1, 0, 1, 1, 0, 1]
    assert res["clean"]["top5_accuracy"] == pytest.approx(4 / 6) and res["clean_top5_acc"] == pytest.approx(4 / 6)
    few = evaluate_tensors(FixedLogits(table[:, :5]), x, labels.clamp(max=4), attack="fgsm", eps="0",
                           hygiene=False, device="cpu")
    assert "clean_top5_acc" not in few and "top5_accuracy" not in few["clean"]  # 5 classes: top-5 is trivial
