"""Shared fixtures: tiny linear models with analytic adversarial optima, and a CPU-only, quiet setup."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

os.environ.setdefault("ADVBENCH_DATA_DIR", "/nonexistent-advbench-data")  # tests never read a real cache
torch.set_num_threads(1)  # tiny tensors: one thread is fastest and avoids oversubscription
# Python's bytecode cache, where the environment turned it off (PYTHONDONTWRITEBYTECODE): without it every
# interpreter the suite starts (xdist workers, CLI subprocesses, torchrun ranks, --jobs workers) compiles
# advbench and the test files from source again, about 0.9 s of a command's start-up. The caches go to the
# __pycache__ folders beside the sources (ignored by git).
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False


#: files run first, longest first, so that two pytest-xdist workers (``-n 2 --dist loadfile``) finish together:
#: the real-digit smoke grid (5 min on both cores) starts at once, and a file of many quick tests follows it on
#: its worker (a worker is given another file while it has 2 or fewer tests pending, so the file queued behind
#: the grid must be a quick one); every other file keeps pytest-xdist's default order, most tests first.
FIRST = ("test_digits_smoke.py", "test_threat_registry_config.py", "test_crash_injection.py",
         "test_distributed_train.py", "test_attacks_engine.py", "test_quickstart.py", "test_distributed_eval.py",
         "test_extension_by_one_file.py", "test_gradient_reg_tables.py")


def pytest_collection_modifyitems(config, items):
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def rank(item):
        name = item.path.name
        return (FIRST.index(name), 0, name) if name in FIRST else (len(FIRST), -counts[name], name)

    items.sort(key=rank)  # stable: a file's tests keep their order


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one intra-op thread, even after a test that changed it: tiny batches run as fast on one
    thread on an idle machine and about 10× faster when the two cores are shared (OpenMP threads spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own: a command's default folder (``./runs``) is then never the
    checkout's, where README command 1 (`advbench quickstart`) leaves its runs; there `advbench attack` with no
    RUN attacked them all instead of saying "no RUN given"."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


class TwoClassLinear(nn.Module):
    """logits = [0, w·x + b]: class 1 iff w·x + b > 0; margin of class y is ±(w·x + b)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b), dtype=w.dtype))
        self.bn = nn.BatchNorm1d(1)  # present only to prove attacks do not touch BN state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


class LogReg(nn.Module):
    """Logistic regression as a two-logit model [0, wᵀx + b]: its CE equals the BCE of σ(wᵀx + b)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(b, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


@pytest.fixture
def linear_problem():
    """A 2-class linear model and points in the interior of [0,1]^d (so the box never binds)."""
    g = torch.Generator().manual_seed(0)
    d = 48
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64)
    s = x.flatten(1) @ w
    b = -float(s.median())
    y = ((s + b) > 0).long()
    model = TwoClassLinear(w, b).double().eval()
    return model, x, y, w, b
