"""The data side of the recipe fidelity fixes: SAT's scaling and brightness jitter (CIFAR dataset options) and the
seeded random evaluation subset (``attack --sample-seed``, gradient-reg Table 4's "1000 randomly selected images")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbench import api, runs
from advbench.cli import main
from advbench.data import DATASETS, load_splits
from advbench.data.batching import augment_batch, batches, jitter_batch
from advbench.data.core import TensorSplit, split_permutation
from advbench.errors import UserError


def _square(n: int = 3, side: int = 16, value: float = 0.5) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32)
    lo = (32 - side) // 2
    x[:, :, lo:lo + side, lo:lo + side] = value
    return x


def _draws(seed: int, n: int, scale: float, brightness: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors jitter_batch draws from a fresh generator seeded ``seed`` (scales first, then brightness)."""
    g = torch.Generator().manual_seed(seed)
    s = 1 + scale * (2 * torch.rand(n, generator=g) - 1)
    b = 1 + brightness * (2 * torch.rand(n, generator=g) - 1)
    return s, b


def test_brightness_multiplies_each_image_by_its_factor():
    x = _square()
    out = jitter_batch(x, torch.Generator().manual_seed(3), brightness=0.4)
    _, factors = _draws(3, 3, 0.0, 0.4)
    for img, f in zip(out, factors, strict=True):
        assert torch.allclose(img, (x[0] * f).clamp(0, 1), atol=1e-6)  # analytic: x * f, clamped to [0, 1]
    assert not torch.allclose(out[0], out[1])  # one factor per image


def test_scaling_resizes_a_centred_square_by_its_factor():
    x = _square(n=4, side=16)
    out = jitter_batch(x, torch.Generator().manual_seed(5), scale=0.3)
    scales, _ = _draws(5, 4, 0.3, 0.0)
    for img, s in zip(out, scales, strict=True):
        # the bright area of a square of side 16 scaled about the centre is (16 s)^2, up to the blurred border
        area = float((img[0] > 0.25).sum())
        assert abs(area ** 0.5 - 16 * float(s)) <= 1.5, (area, float(s))
        assert float(img.max()) <= 0.5 + 1e-6 and float(img.min()) >= 0.0


def test_jitter_off_changes_nothing_and_keeps_the_crop_flip_stream():
    """scale = brightness = 0 is the old augmentation bit for bit (same random numbers, same result)."""
    x = torch.rand(5, 3, 32, 32)
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1), scale=0.0, brightness=0.0)
    assert torch.equal(a, b)
    # with jitter, the crop and flip are the same draws, then the jitter is applied on top
    c = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1), brightness=0.2)
    g = torch.Generator().manual_seed(1)
    crop = augment_batch(x, "crop-flip", g)
    assert torch.allclose(c, jitter_batch(crop, g, brightness=0.2))


def test_jitter_shards_equal_the_whole_batch():
    """Distributed training: each rank's part of the batch is jittered exactly as those rows of the whole."""
    x = torch.rand(6, 3, 32, 32)
    whole = augment_batch(x, "crop-flip", torch.Generator().manual_seed(2), scale=0.1, brightness=0.1)
    part = augment_batch(x[2:5], "crop-flip", torch.Generator().manual_seed(2), part=(2, 6), scale=0.1,
                         brightness=0.1)
    assert torch.allclose(part, whole[2:5], atol=1e-6)


def test_batches_pass_the_jitter_through():
    split = TensorSplit((torch.rand(8, 3, 32, 32) * 255).to(torch.uint8), torch.arange(8))
    plain = [x for x, _, _ in batches(split, 4, shuffle=True, seed=0, augment="crop-flip")]
    jit = [x for x, _, _ in batches(split, 4, shuffle=True, seed=0, augment="crop-flip", brightness=0.5)]
    again = [x for x, _, _ in batches(split, 4, shuffle=True, seed=0, augment="crop-flip", brightness=0.5)]
    assert not torch.allclose(plain[0], jit[0])
    assert all(torch.equal(a, b) for a, b in zip(jit, again, strict=True))  # deterministic (resume is bit-exact)


def test_cifar_options():
    info = DATASETS.get("cifar10").info({"scale": 0.1, "brightness": "0.1"})
    assert (info.scale, info.brightness, info.augment) == (0.1, 0.1, "crop-flip")
    assert DATASETS.get("cifar100").info().scale == 0.0
    with pytest.raises(UserError, match=r"scale=1.5 for cifar10 must be in \[0, 1\)"):
        DATASETS.get("cifar10").info({"scale": 1.5})


def test_random_test_subset_is_seeded_and_recorded():
    opts = {"n_train": 40, "n_test": 50}
    first = load_splits("synthetic", n_test=10, options=opts)
    a = load_splits("synthetic", n_test=10, options=opts, test_sample_seed=7)
    b = load_splits("synthetic", n_test=10, options=opts, test_sample_seed=7)
    full = load_splits("synthetic", options=opts)
    want = np.sort(split_permutation(50, 7)[:10])  # the first 10 of the seed's permutation, in index order
    assert torch.equal(a.test.x, full.test.x[torch.from_numpy(want)]) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.test.x, first.test.x)
    assert a.meta["test_subset"] == "10 test images drawn at random with sample seed 7"
    assert a.meta["test_sample_seed"] == 7 and first.meta["test_subset"].startswith("first 10")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("r")
    run_dir, _ = api.train(out=root, name="run", defense="standard", dataset="synthetic", epochs=1, n_train=24,
                           batch_size=24, device="cpu", settings={"val_n": 8, "data.n_train": 60, "data.n_test": 40})
    return run_dir


def test_attack_sample_seed_is_recorded(run, capsys):
    code = main(["attack", str(run), "--attack", "fgsm", "--n-eval", "12", "--sample-seed", "3", "--quiet",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    result = runs.read_json(run / "attacks" / "adhoc-fgsm.json")
    assert result["source"]["sample_seed"] == 3
    assert result["source"]["test_subset"] == "12 test images drawn at random with sample seed 3"
    first = api.attack(run, suite=None, attack="fgsm", n_eval=12, device="cpu", force=True)
    assert "sample_seed" not in first["source"]  # the first N, as before


def test_attack_sample_seed_refused_cleanly(run, capsys):
    code = main(["attack", str(run), "--attack", "fgsm", "--n-eval", "4", "--sample-seed", "-1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--sample-seed must be >= 0" in err[0]
