"""The DAWNBench progressive-resize schedule (``--set schedule=dawnbench``): the learning rate at the paper's phase
boundaries and inside the phases, the phases' pixel sizes, batch sizes and crop scales on a format-exact ImageNet
fixture, the random-resized crop against torchvision's pixel arithmetic, no weight decay on biases, and a resume
at and after a phase boundary equal bit for bit to an uninterrupted run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_imagenet import label_of, write_imagenet
from torchvision.transforms.v2 import functional as tvf

from advbench import api, runs
from advbench.config import TrainConfig, lr_factor, phase_at, phase_batch
from advbench.core.signals import Interrupted, StopFlag
from advbench.engine.progressive import crop_box, crop_tensor, draw_crops
from advbench.engine.setup import build_optimizer
from advbench.engine.train import Trainer
from advbench.errors import UserError
from advbench.models import build_model


def paper_cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{"schedule": "dawnbench", "epochs": 29, "lr": 0.25, "batch_size": 512, **kw})


# the spec's numbers (gradient-regularization.md §1): ep 0-8 0.25 -> 0.5, 8-15 0.5 -> 0.0625; 15-25 0.1 -> 0.01,
# 25-28 0.01 -> 0.001; 28-29 0.000625 -> 0.0000625, linear within each piece
@pytest.mark.parametrize(("t", "lr"), [
    (0, 0.25), (4, 0.375), (8, 0.5), (11.5, 0.28125), (15 - 1e-9, 0.0625), (15, 0.1), (20, 0.055), (25, 0.01),
    (26.5, 0.0055), (28 - 1e-9, 0.001), (28, 0.000625), (28.5, 0.00034375), (29 - 1e-9, 0.0000625),
])
def test_lr_at_phase_boundaries_and_mid_phase(t: float, lr: float) -> None:
    cfg = paper_cfg()
    cfg.validate()
    assert cfg.lr * lr_factor(cfg, t) == pytest.approx(lr, rel=1e-6, abs=1e-12)
    half = paper_cfg(lr=0.125)  # lr scales every rate by lr / 0.25
    assert half.lr * lr_factor(half, t) == pytest.approx(lr / 2, rel=1e-6, abs=1e-12)


def test_phases_of_the_paper_and_shortened() -> None:
    cfg = paper_cfg()
    got = [(phase_at(cfg, e).size, phase_batch(cfg, phase_at(cfg, e)), phase_at(cfg, e).min_scale)
           for e in (0, 14, 15, 27, 28)]
    assert got == [(128, 512, 0.08), (128, 512, 0.08), (224, 192, 0.087), (224, 192, 0.087), (288, 128, 0.5)]
    short = paper_cfg(epochs=3, phase_epochs=[1, 1, 1], batch_size=16)
    short.validate()
    assert [phase_at(short, e).size for e in range(3)] == [128, 224, 288]
    assert [phase_batch(short, phase_at(short, e)) for e in range(3)] == [16, 6, 4]  # 512 : 192 : 128
    # the learning-rate points keep their place inside a shortened phase: epoch 8 of 15 -> 8/15 of epoch 0
    assert short.lr * lr_factor(short, 8 / 15) == pytest.approx(0.5)
    assert short.lr * lr_factor(short, 1 + 10 / 13) == pytest.approx(0.01)
    assert short.lr * lr_factor(short, 2.5) == pytest.approx(0.00034375)


@pytest.mark.parametrize("settings", [
    {"epochs": 10},  # not 29 and no phase_epochs
    {"epochs": 3, "phase_epochs": [2, 0, 1]},
    {"epochs": 4, "phase_epochs": [1, 1, 1]},
    {"epochs": 3, "phase_epochs": [1, 2]},
    {"epochs": 3, "phase_epochs": [1, 1, 1], "schedule": "cosine"},
])
def test_bad_phase_settings_are_one_line(settings: dict) -> None:
    with pytest.raises(UserError) as err:
        paper_cfg(**settings).validate()
    assert "\n" not in str(err.value) and "phase" in str(err.value)


def test_random_resized_crop_box_and_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = draw_crops(gen, 400)
    fell_back = 0
    for d in draws:
        left, top, w, h = crop_box(40, 30, 0.08, d)
        assert 0 <= left and left + w <= 40 and 0 <= top and top + h <= 30 and w > 0 and h > 0
        if (left, top, w, h) == (0, 0, 40, 30):
            fell_back += 1
            continue
        assert 0.08 * 1200 * 0.8 <= w * h <= 1200  # area fraction in [min_scale, 1] up to rounding
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15  # ratio in [3/4, 4/3] up to rounding
    assert fell_back < 20  # 10 tries almost always find a box
    # a 10:1 strip can hold no box of ratio <= 4/3 with area >= 50%: the centred 4:3 fallback, as torchvision's
    assert crop_box(100, 10, 0.5, draws[0]) == (43, 0, 13, 10)
    # the pixels: torchvision's resized crop (bilinear, antialias) of the same box, flipped when the draw says so
    img = torch.rand(3, 30, 40)
    for d in draws[:6]:
        left, top, w, h = crop_box(40, 30, 0.08, d)
        want = tvf.resized_crop(img, top, left, h, w, [24, 24], antialias=True)
        want = tvf.horizontal_flip(want) if float(d[-1]) < 0.5 else want
        torch.testing.assert_close(crop_tensor(img, 24, 0.08, d), want.clamp(0, 1), rtol=0, atol=1e-5)


def test_no_weight_decay_on_biases() -> None:
    model = build_model("small-cnn", num_classes=10)
    plain = build_optimizer(TrainConfig(weight_decay=1e-4), model)
    assert [g["weight_decay"] for g in plain.param_groups] == [1e-4]
    split = build_optimizer(TrainConfig(weight_decay=1e-4, bias_decay=False), model)
    decayed, free = split.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    assert {names[id(p)] for p in free["params"]} == {n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_imagenet(root)
    return root


def short_run(tree: Path) -> dict:
    return dict(dataset="imagenet", model="small-cnn", epochs=3, batch_size=8, n_train=12, lr=0.05,
                weight_decay=1e-4, device="cpu", data_dir=str(tree),
                settings={"schedule": "dawnbench", "phase_epochs": "1,1,1", "bias_decay": "false", "val_size": 0,
                          "select": "last", "model.width": 4, "model.hidden": 16})


def test_short_schedule_batches_per_phase(tree: Path) -> None:
    opts = short_run(tree)
    cfg = TrainConfig(**{k: v for k, v in opts.items() if k not in ("settings",)},
                      schedule="dawnbench", phase_epochs=[1, 1, 1], val_size=0)
    trainer = Trainer(cfg, tree / "unused")
    seen = {}
    for epoch in range(3):
        shapes = [tuple(x.shape) for x, _, _ in trainer.epoch_batches(epoch, 0)]
        seen[epoch] = shapes
        assert trainer.epoch_steps(epoch) == len(shapes)
    # 12 training images in global batches of 8, 3 and 2 (512 : 192 : 128 of batch_size 8), at 128, 224, 288 px
    assert seen[0] == [(8, 3, 128, 128), (4, 3, 128, 128)]
    assert seen[1] == [(3, 3, 224, 224)] * 4
    assert seen[2] == [(2, 3, 288, 288)] * 6
    x, y, idx = next(trainer.epoch_batches(1, 0))
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(y, trainer.splits.train.y[idx])
    # the crops are of the labelled images: the fixture's flat colours survive cropping and resizing
    assert [label_of(img * 255) for img in x] == y.tolist()
    # batch k of a pass does not depend on the batches before it (what a resume relies on)
    again = list(trainer.epoch_batches(1, 2))
    full = list(trainer.epoch_batches(1, 0))
    assert len(again) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(again, full[2:], strict=True))


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("stop_at", [(0, 1), (1, 1)])  # the last batch of phase 1; inside phase 2
def test_resume_across_phases_is_bit_exact(tmp_path: Path, tree: Path, stop_at: tuple[int, int]) -> None:
    ref_dir, _ = api.train(out=tmp_path, name="ref", **short_run(tree))
    flag = StopFlag()

    def hook(e: int, b: int) -> None:
        if (e, b) == stop_at:
            flag.request("test")

    with pytest.raises(Interrupted):
        api.train(out=tmp_path, name="cut", stop=flag, batch_hook=hook, fresh=True, **short_run(tree))
    cut = tmp_path / "cut"
    assert runs.read_json(cut / "summary.json")["status"] == "interrupted"
    _, summary = api.train(resume=cut)
    assert summary["status"] == "completed"
    ref, got = _weights(ref_dir), _weights(cut)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    ref_m, cut_m = runs.read_jsonl(ref_dir / "metrics.jsonl"), runs.read_jsonl(cut / "metrics.jsonl")
    assert [m["epoch"] for m in cut_m] == [0, 1, 2]
    for a, b in zip(ref_m, cut_m, strict=True):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"]
    assert [m["lr"] for m in ref_m] == pytest.approx([0.05 * 0.0625 / 0.25, 0.05 * 0.001 / 0.25,
                                                       0.05 * 0.0000625 / 0.25], rel=1e-6)
    assert math.isfinite(ref_m[-1]["loss"])
