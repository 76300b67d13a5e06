"""``report --cost``: passes per step, seconds per epoch and peak memory of real (tiny) training runs beside
their robustness, in the comparison grid and in a paper grid."""

from __future__ import annotations

import json

import pytest

from advbench import api, runs
from advbench.cli import main

_DATA = ["data.n_train=160", "data.n_test=32", "val_n=16", "val_attack_steps=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """standard (seeds 0 and 1) and pgd-at with 2 attack steps on synthetic data, each attacked by PGD-2."""
    out = tmp_path_factory.mktemp("cost")
    for defense, seed, extra in (("standard", 0, []), ("standard", 1, []), ("pgd-at", 0, ["steps=2"])):
        run_dir, _ = api.train(out=out, name=f"{defense}-s{seed}", dataset="synthetic", model="small-cnn",
                               defense=defense, epochs=2, batch_size=32, n_train=96, seed=seed, device="cpu",
                               quiet=True, settings=[*_DATA, *extra])
        api.attack(run_dir, attack="pgd", attack_options=["steps=2"], n_eval=16, device="cpu", quiet=True)
    return out


def _cells(text: str) -> dict[str, dict[str, str]]:
    """Markdown grid -> {row label: {column: cell}}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        out[cells[0]] = dict(zip(head, cells, strict=True))
    return out


def _expected(run) -> tuple[float, float]:
    """(mean train seconds per epoch, peak MB) read straight from the run's metrics lines."""
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return (sum(m["train_seconds"] for m in lines) / len(lines),
            max(m["peak_mem_bytes"] for m in lines) / 2**20)


def test_cost_columns_of_the_comparison_grid(trained, capsys):
    assert main(["report", str(trained), "--cost"]) == 0
    text = capsys.readouterr().out
    grid = _cells(text)
    assert "Passes/step = forward + backward passes" in text
    std, at = grid["standard"], grid["pgd-at (steps=2)"]
    assert std["Passes/step"] == "2.0 ± 0.0"  # one forward + one backward per image, both seeds
    assert at["Passes/step"] == "6.0"  # PGD-2: 2 attack forward/backward + the training forward/backward
    secs, peak = _expected(trained / "pgd-at-s0")
    assert at["s/epoch"] == f"{secs:.1f}" and at["Peak MB"] == f"{peak:.0f}"
    s0, s1 = _expected(trained / "standard-s0")[0], _expected(trained / "standard-s1")[0]
    assert std["s/epoch"].startswith(f"{(s0 + s1) / 2:.1f} ± ")
    assert main(["report", str(trained)]) == 0
    assert "Passes/step" not in capsys.readouterr().out  # off by default


def test_cost_in_json_and_a_run_without_records(trained, tmp_path):
    _, js = api.report([trained], fmt="json", cost=True)
    grid = json.loads(js)["grid"]
    assert {"Passes/step", "s/epoch", "Peak MB"} <= set(grid["columns"])
    run = tmp_path / "copy"
    import shutil

    shutil.copytree(trained / "pgd-at-s0", run)
    (run / "metrics.jsonl").unlink()
    summary = runs.read_json(run / "summary.json")
    runs.write_json(run / "summary.json", {k: v for k, v in summary.items()
                                           if k not in ("passes_per_step", "peak_mem_bytes")})
    _, text = api.report([run], cost=True)
    row = _cells(text)["pgd-at (steps=2)"]
    assert row["Passes/step"] == row["s/epoch"] == row["Peak MB"] == "—"  # not recorded: a dash, no error


def test_cost_columns_of_a_paper_grid(tmp_path):
    smoke = {"epochs": 1, "base_epochs": 1, "base_n_train": 48, "n_train": 48, "batch_size": 16, "val_n": 8,
             "val_attack_steps": 1, "train_attack_steps": 2, "n_eval": 8, "n_eval_expensive": 4,
             "synthetic_options": {"n_train": 120, "n_test": 16}}
    out = tmp_path / "repro"
    api.reproduce("scorpio", "2b", out=out, rows=["Standard", "Adv Train (PGD-10)"], smoke=smoke, device="cpu")
    _, text = api.report([out], grid="scorpio:2b", cost=True)
    grid = _cells(text)
    assert grid["Standard"]["Passes/step"] == "2.0"
    assert grid["Adv Train (PGD-10)"]["Passes/step"] == "6.0"  # smoke scale: 2 attack steps
    assert grid["CURE"]["Passes/step"] == "—"  # a row with no run
    assert "s/epoch = measured training seconds" in text
    _, js = api.report([out], fmt="json", grid="scorpio:2b", cost=True)
    assert json.loads(js)["cost"]["Standard"]["Passes/step"] == [2.0]
