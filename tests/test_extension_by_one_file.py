"""Adding a defense, a dataset, a model or an attack is one new file, with no edit to any list elsewhere.

The test copies the advbench package into a temporary folder, drops one file into each of ``defenses/``,
``data/``, ``models/`` and ``attacks/`` (nothing else changes), and runs the real command line on the copy:
the toy defense trains on the toy dataset with the toy model, and the toy attack attacks the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import advbench

TOY_DEFENSE = '''
"""Toy defense: cross-entropy on images with uniform noise added (a file dropped into defenses/)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advbench.defenses.base import DEFENSES, Defense


@dataclass
class ToyOptions:
    noise: float = 0.05


@DEFENSES.register("toy-noise", help="toy: CE on noisy images")
class ToyNoise(Defense):
    """CE(f(x + u)), u ~ U[-noise, noise]."""

    Options = ToyOptions
    inherent_passes = (1.0, 1.0)

    def loss(self, model, x, y, ctx):
        noisy = (x + (torch.rand_like(x) * 2 - 1) * self.options.noise).clamp(0, 1)
        return F.cross_entropy(model(noisy), y), {}
'''

TOY_DATASET = '''
"""Toy dataset: two classes of 16x16 grey images, bright left half or bright right half."""

import numpy as np

from advbench.data.core import DatasetInfo, RawDataset, register_dataset


def _make(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 1, 16, 16))
    for i in range(n):
        x[i, 0, :, (0 if y[i] == 0 else 8):(8 if y[i] == 0 else 16)] += 180
    return x.astype(np.uint8), y.astype(np.int64)


@register_dataset("toy-halves", info=DatasetInfo("toy-halves", 2, (1, 16, 16), (0.4,), (0.3,), "none"),
                  needs_data_dir=False, help="toy: bright left or right half, 16x16 grey")
def load_toy(root, download, options):
    xtr, ytr = _make(400, 0)
    xte, yte = _make(100, 1)
    return RawDataset(xtr, ytr, xte, yte, "generated")
'''

TOY_MODEL = '''
"""Toy model: one linear layer (a file dropped into models/)."""

from torch import nn

from advbench.models.base import MODELS


@MODELS.register("toy-linear", help="toy: flatten + linear")
def toy_linear(num_classes, in_channels=3, input_size=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))
'''

TOY_ATTACK = '''
"""Toy attack: the corner of the Linf ball that darkens every pixel (a file dropped into attacks/)."""

from advbench.attacks.base import ATTACKS, Attack


@ATTACKS.register("toy-darken", help="toy: x - eps, clipped")
class ToyDarken(Attack):
    """x - eps, clipped to [0, 1]."""

    def perturb(self, model, x, y, generator=None):
        return (x - self.threat.eps).clamp(0, 1)
'''


def test_a_new_defense_dataset_model_and_attack_are_one_file_each(tmp_path):
    pkg = tmp_path / "src" / "advbench"
    shutil.copytree(Path(advbench.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in (("defenses/toy_noise.py", TOY_DEFENSE), ("data/toy_halves.py", TOY_DATASET),
                      ("models/toy_linear.py", TOY_MODEL), ("attacks/toy_darken.py", TOY_ATTACK)):
        (pkg / rel).write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "advbench", *args], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    for what, name in (("defenses", "toy-noise"), ("datasets", "toy-halves"), ("models", "toy-linear"),
                       ("attacks", "toy-darken")):
        listed = cli("list", what)
        assert listed.returncode == 0 and name in listed.stdout, listed.stderr
    trained = cli("train", "--defense", "toy-noise", "--dataset", "toy-halves", "--model", "toy-linear",
                  "--epochs", "3", "--batch-size", "50", "--lr", "0.05", "--device", "cpu", "--quiet",
                  "--name", "toy", "--out", str(tmp_path / "runs"), "--set", "val_n=50", "--set", "noise=0.1")
    assert trained.returncode == 0, trained.stderr
    attacked = cli("attack", str(tmp_path / "runs" / "toy"), "--attack", "toy-darken", "--eps", "8/255",
                   "--n-eval", "100", "--device", "cpu", "--quiet")
    assert attacked.returncode == 0, attacked.stderr
    from advbench import runs

    result = runs.read_json(tmp_path / "runs" / "toy" / "attacks" / "adhoc-toy-darken.json")
    assert result["clean"]["accuracy"] > 0.9  # the halves are easy: the toy model learned them
    assert runs.read_json(tmp_path / "runs" / "toy" / "config.json")["config"]["defense"] == "toy-noise"
