"""Stored results are reused only for the same evaluation: every input that decides a result is in its key.

The two cases an audit found (another model of the same class answered from the cache; the same model on
other images answered from the cache) and, for every reuse key, a change of any input invalidates it.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from torch import nn

from advbench import api, runs
from advbench.attacks import SUITES
from advbench.config import TrainConfig, config_to_dict
from advbench.core.digest import code_identity, data_digest, weights_digest
from advbench.engine.job import EvalJob, identity_of
from advbench.threat import ThreatModel


class Const(nn.Module):
    """Logits that ignore the image except through a tiny linear term: predicts ``cls`` almost everywhere."""

    def __init__(self, cls: int, n_classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same cls gives the same weights
        self.lin = nn.Linear(3 * 32 * 32, n_classes)
        with torch.no_grad():
            self.lin.weight.mul_(1e-3)
            self.lin.bias.zero_()
            self.lin.bias[cls] = 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _images(seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _mark(path) -> None:
    """Tag a stored result, so that a reuse (which returns the file as stored) is visible."""
    runs.write_json(path, {**runs.read_json(path), "_marker": True})


def _eval(model: nn.Module, data, out) -> dict:
    return api.evaluate(model, dataset=data, attack="fgsm", n_eval=40, batch_size=40, device="cpu", out=out,
                        hygiene=False)


def test_another_model_of_the_same_class_is_not_answered_from_the_cache(tmp_path):
    x, y = _images(0)
    y[:30], y[30:] = 3, 0  # 75% of the labels are class 3
    out = tmp_path / "external"  # one results folder for both, as evaluate()'s default runs/external is
    good = _eval(Const(3), (x, y), out)
    other = _eval(Const(5), (x, y), out)
    assert good["clean"]["accuracy"] == pytest.approx(0.75)
    # the audit's failure: the second model was reported with the first one's numbers and per-sample results
    expected = float((Const(5)(x).argmax(1) == y).float().mean())
    assert other["clean"]["accuracy"] == pytest.approx(expected) and expected < 0.5
    assert other["identity"]["weights"] != good["identity"]["weights"]
    # the same model again is reused (same fingerprint, nothing recomputed)
    _mark(out / "attacks" / "adhoc-fgsm.json")
    again = _eval(Const(5), (x, y), out)
    assert again["fingerprint"] == other["fingerprint"] and again.get("_marker") is True


def test_the_same_model_on_other_images_is_not_answered_from_the_cache(tmp_path):
    model = Const(3)
    x1, y1 = _images(1)
    x2, y2 = _images(2)
    y1[:] = 3  # every image of the first set is labelled 3: clean accuracy 100%
    y2[:] = 4  # every image of the second set is labelled 4: clean accuracy 0%
    first = _eval(model, (x1, y1), tmp_path / "ext")
    second = _eval(model, (x2, y2), tmp_path / "ext")
    assert first["clean"]["accuracy"] == 1.0 and second["clean"]["accuracy"] == 0.0
    assert first["identity"]["data"] != second["identity"]["data"]


def test_attack_on_a_run_whose_checkpoint_was_replaced_recomputes(tmp_path):
    common = dict(dataset="synthetic", epochs=1, n_train=64, batch_size=32, device="cpu", out=tmp_path,
                  settings={"val_n": 16, "data.n_train": 200, "data.n_test": 40})
    run_a, _ = api.train(defense="standard", name="a", seed=0, **common)
    run_b, _ = api.train(defense="standard", name="b", seed=1, **common)
    first = api.attack(run_a, attack="fgsm", n_eval=40, batch_size=40, device="cpu", hygiene=False)
    _mark(run_a / "attacks" / "adhoc-fgsm.json")
    again = api.attack(run_a, attack="fgsm", n_eval=40, batch_size=40, device="cpu", hygiene=False)
    assert again.get("_marker") is True  # unchanged run: reused
    shutil.copy(run_b / "checkpoints" / "best.pt", run_a / "checkpoints" / "best.pt")
    replaced = api.attack(run_a, attack="fgsm", n_eval=40, batch_size=40, device="cpu", hygiene=False)
    assert replaced["identity"]["weights"] != first["identity"]["weights"]
    ref = api.attack(run_b, attack="fgsm", n_eval=40, batch_size=40, device="cpu", hygiene=False)
    assert replaced["identity"]["weights"] == ref["identity"]["weights"]
    assert [r["correct"] for r in replaced["results"]] == [r["correct"] for r in ref["results"]]


# --- every reuse key: a change of any input changes the key -------------------------------------------------

def _job(**change) -> EvalJob:
    model = Const(3)
    x, y = _images(0)
    base = dict(suite=SUITES.get("pgd-lite"), threats=[ThreatModel.parse("8/255")], n_eval=40, batch_size=20,
                seed=0, source={"run": "r", "checkpoint": "best", "epoch": 3}, transfer_source=None, hygiene=True,
                available=frozenset(), identity=identity_of(model, (x, y), 40))
    base.update(change)
    return EvalJob(**base)


@pytest.mark.parametrize("change", [
    {"suite": SUITES.get("pgd")},
    {"threats": [ThreatModel.parse("4/255")]},
    {"threats": [ThreatModel.parse("0.5", "l2")]},
    {"n_eval": 39},
    {"batch_size": 10},
    {"seed": 1},
    {"source": {"run": "r", "checkpoint": "last", "epoch": 3}},
    {"transfer_source": {"run": "s"}},
    {"hygiene": False},
    {"available": frozenset({"source_model"})},
    {"identity": identity_of(Const(4), _images(0), 40)},  # other weights
    {"identity": identity_of(Const(3), _images(9), 40)},  # other images
    {"identity": identity_of(nn.Sequential(Const(3)), _images(0), 40)},  # same weights, other code
    {"identity": identity_of(Const(3), _images(0), 40, source_model=Const(1))},  # a transfer source model
])
def test_eval_job_fingerprint_covers_every_input(change):
    assert _job(**change).fingerprint() != _job().fingerprint()


def test_digests_see_values_dtypes_shapes_and_labels():
    m = Const(3)
    d0 = weights_digest(m)
    with torch.no_grad():
        m.lin.weight[0, 0] += 1e-7
    assert weights_digest(m) != d0
    assert weights_digest(Const(3).double()) != weights_digest(Const(3))
    assert code_identity(Const(3)) != code_identity(nn.Sequential(Const(3)))
    x, y = _images(0)
    assert data_digest(x, y) != data_digest(x, y.flip(0))
    assert data_digest(x, y) != data_digest(x.double(), y)
    assert data_digest(x, y) == data_digest(x.clone(), y.clone())


def test_reproduce_config_hash_covers_every_field_that_decides_a_run(tmp_path):
    from advbench.papers.plan import _NOT_HASHED, config_hash

    base = config_to_dict(TrainConfig())
    h0 = config_hash(base)
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_HASHED:
            assert config_hash({**base, f.name: "elsewhere"}) == h0  # where data lives does not change a run
            continue
        v = base[f.name]
        if isinstance(v, bool):
            new = not v
        elif isinstance(v, (int, float)):
            new = v + 1
        elif isinstance(v, dict):
            new = {**v, "x": 1}
        elif isinstance(v, (list, tuple)):
            new = [*v, 1]
        else:
            new = f"{v}-changed"
        assert config_hash({**base, f.name: new}) != h0, f.name
    # a base run named by path is hashed by its own content: the same config elsewhere, the same hash
    for where in ("a", "b"):
        runs.write_json(tmp_path / where / "config.json", {"config": base})
    assert config_hash({**base, "init_from": str(tmp_path / "a")}) == config_hash(
        {**base, "init_from": str(tmp_path / "b")})
    runs.write_json(tmp_path / "b" / "config.json", {"config": {**base, "seed": 7}})
    assert config_hash({**base, "init_from": str(tmp_path / "a")}) != config_hash(
        {**base, "init_from": str(tmp_path / "b")})
