"""The contract every registered defense keeps, checked over the whole registry (a new defense file is covered
without editing this test): on a tiny conv net and two batches,

(a) the forward and backward passes a training step spends, counted by :class:`PassCounter`, equal the
    declared ``inherent_passes`` (at most them for the methods with early termination or subsets);
(b) the step's logged scalars are finite and it changes the weights;
(c) ``state_dict()`` survives a checkpoint round trip (``torch.load(weights_only=True)``) and a defense loaded
    from it continues exactly as the original does;
(d) the class fact ``double_backward`` is True exactly when a training step differentiates through a gradient
    (``torch.autograd.grad`` / ``backward`` with ``create_graph=True``, recorded by wrapping both);
(e) ``name`` is the registered name, and the defense lives in a file named after it.

The options are the defaults with the inner attacks shortened (``SMALL``), so the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.passes import PassCounter
from advbench.defenses import DEFENSES, Defense, StepContext, build_defense
from advbench.threat import ThreatModel

LINF = ThreatModel.parse("8/255", "linf")
CLASSES = 10
NAMES = DEFENSES.names()

#: option values that keep every step tiny; each applies to the defenses that have the option
SMALL = {"steps": 2, "bisection_steps": 2, "replay_m": 2, "fw_steps": 1, "chunk": 4, "lambda_schedule": "constant",
         "warmup_epochs": 0}
#: per-defense additions: a λ strictly inside (0, 1) runs the curricula's subset and early-stop paths
EXTRA = {"p-sat": {"lam": 0.5}, "h-sat": {"lam": 0.5}}
#: early termination (P-SAT, DAT), subsets (H-SAT) or only the correctly classified samples (MMA): the declared
#: passes are an upper bound (docs/defenses.md, "cost at most that"; tests/test_at_train.py checks the same)
AT_MOST = {"p-sat", "dat", "h-sat", "mma"}
#: modules that hold shared helpers and register nothing
HELPERS = {"base", "input_gradients", "per_sample_state", "kl_divergence", "weight_perturbation", "sat_curriculum",
           "expansion_point"}
#: registered names that share a file with the method they preset
PRESETS = {"trades-awp": "awp"}


class TinyNet(nn.Module):
    """conv-BN-softplus-pool-linear on 3×8×8 inputs, 10 classes (BN present so that BN modes matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, CLASSES)
        self.num_classes = CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.softplus(self.bn(self.conv(x))), 2).flatten(1))


def small_options(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(DEFENSES.get(name).Options)}
    return {k: v for k, v in {**SMALL, **EXTRA.get(name, {})}.items() if k in fields}


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, StepContext]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.rand(8, 3, 8, 8, generator=g)
    y = torch.randint(0, CLASSES, (8,), generator=g)
    ctx = StepContext(epoch=0, step=step, steps_per_epoch=2, epochs=1, num_classes=CLASSES,
                      idx=torch.arange(8) + 8 * step)
    return x, y, ctx


def train_step(defense: Defense, model: nn.Module, step: int, seed: int = 0) -> dict[str, float]:
    """One step of plain SGD on batch ``step`` with the global RNG at ``seed`` (random starts, label noise)."""
    x, y, ctx = batch(step)
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return defense.train_step(model, optimizer, x, y, ctx)


def same(a, b) -> bool:
    """Deep equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b, strict=True))
    return a == b


class CreateGraphRecorder:
    """Wraps ``torch.autograd.grad`` and ``torch.autograd.backward`` (which ``Tensor.backward`` calls) and
    records every call made with ``create_graph=True``, however the argument is passed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for fn in ("grad", "backward"):
            monkeypatch.setattr(torch.autograd, fn, self._wrap(getattr(torch.autograd, fn)))

    def _wrap(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def wrapper(*args, **kwargs):
            if signature.bind(*args, **kwargs).arguments.get("create_graph"):
                self.calls.append(original.__name__)
            return original(*args, **kwargs)

        return wrapper


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_the_create_graph_recorder_sees_both_spellings(monkeypatch):
    """The oracle of (d) can fail: it sees create_graph=True through autograd.grad and Tensor.backward (which
    passes it positionally) and nothing for first-order gradients."""
    rec = CreateGraphRecorder(monkeypatch)
    w = torch.ones(3, requires_grad=True)
    (g,) = torch.autograd.grad((w**3).sum(), w)
    (w**2).sum().backward()
    assert rec.calls == []
    (g,) = torch.autograd.grad((w**3).sum(), w, create_graph=True)
    g.sum().backward(create_graph=True)
    w.grad = None  # break the parameter-gradient reference cycle that backward(create_graph=True) makes
    assert rec.calls == ["grad", "backward"]


def test_the_registry_is_the_package():
    """Every module of advbench/defenses except the helpers registers at least one defense, and the helpers none."""
    import pkgutil

    import advbench.defenses as pkg

    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    homes = {DEFENSES.get(n).__module__.rsplit(".", 1)[1] for n in NAMES}
    assert not homes & HELPERS
    assert homes | HELPERS == modules


@pytest.mark.parametrize("name", NAMES)
def test_name_is_the_registration_and_the_file(name):
    """(e): the class, an instance and describe() carry the registered name; the file is named after it."""
    cls = DEFENSES.get(name)
    defense = build_defense(name, LINF, small_options(name))
    assert cls.name == name and defense.name == name and defense.describe()["defense"] == name
    assert cls.__module__ == f"advbench.defenses.{PRESETS.get(name, name).replace('-', '_')}"


@pytest.mark.parametrize("name", NAMES)
def test_step_passes_loss_weights_and_double_backward(name, monkeypatch):
    """(a), (b) and (d) on one training step."""
    torch.manual_seed(0)
    model = TinyNet().train()
    defense = build_defense(name, LINF, small_options(name))
    before = [p.detach().clone() for p in model.parameters()]
    recorder = CreateGraphRecorder(monkeypatch)
    with PassCounter(model) as counter:
        logs = train_step(defense, model, 0)
    monkeypatch.undo()

    assert defense.inherent_passes is not None, "a defense declares its inherent passes"
    counted = (counter.forward / 8, counter.backward / 8)
    if name in AT_MOST:
        assert all(0 < c <= d for c, d in zip(counted, defense.inherent_passes, strict=True)), counted
    else:
        assert counted == tuple(defense.inherent_passes)

    assert "loss" in logs and all(math.isfinite(v) for v in logs.values()), logs
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)), "weights unchanged"
    assert model.training and all(p.requires_grad for p in model.parameters())

    assert type(defense).double_backward == bool(recorder.calls), recorder.calls


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    """(c): the state survives a weights-only checkpoint round trip, equals the original after loading, and the
    loaded defense takes the next step exactly as the original does."""
    torch.manual_seed(0)
    model = TinyNet().train()
    defense = build_defense(name, LINF, small_options(name))
    train_step(defense, model, 0)
    state = defense.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = build_defense(name, LINF, small_options(name))
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert same(loaded.state_dict(), state)

    twin = copy.deepcopy(model)
    logs = train_step(defense, model, 1, seed=7)
    twin_logs = train_step(loaded, twin, 1, seed=7)
    assert same(twin_logs, logs)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
    assert same(loaded.state_dict(), defense.state_dict())
