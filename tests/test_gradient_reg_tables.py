"""gradient-reg Tables 1, 2, 3, 5, 6 (issue 16 part 3): reproduce plans the certifications and distance suites, and
each grid cell is the stored certification or distance result it names, recomputed here from the per-image values
the result files store (the oracle), end to end on the embedded synthetic data at a tiny smoke scale."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from advbench import api, runs
from advbench.papers.plan import make_plan
from advbench.report import load_frame
from advbench.report.paper_grids import build_paper_grid

TINY = {"epochs": 1, "base_epochs": 1, "base_n_train": 48, "n_train": 48, "batch_size": 16, "val_n": 8,
        "val_attack_steps": 1, "train_attack_steps": 2, "n_eval": 8, "n_eval_expensive": 4,
        "synthetic_options": {"n_train": 120, "n_test": 16}}


@pytest.fixture(scope="module")
def table2(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("gr2")
    api.reproduce("gradient-reg", "2", out=out, rows=["CIFAR-10 / Undefended"], smoke=TINY, device="cpu")
    run = next(p.parent for p in (out / "smoke-base").rglob("config.json"))
    return out, run


def test_every_table_of_the_paper_has_a_recipe_with_certifications_where_it_certifies(tmp_path):
    want = {"1": {"omega-linf"}, "2": {"lbound-l2", "omega-l2"}, "3": {"omega-l2"}, "5": {"smoothing-sigma0.25"},
            "6": {"omega-l2"}}
    for table, names in want.items():
        plan = make_plan("gradient-reg", table, scale="paper", out=tmp_path, device="cpu")
        assert plan.runs and all({k["name"] for _, k in p.certify} == names for p in plan.runs if p.role == "row")
    smooth = make_plan("gradient-reg", "5", scale="paper", out=tmp_path, device="cpu").runs[0].certify[0][1]
    assert (smooth["sigma"], smooth["n"], smooth["n0"], smooth["alpha"]) == (0.25, 100_000, 100, 0.001)
    smoke = make_plan("gradient-reg", "5", scale="smoke", out=tmp_path, device="cpu").runs[0].certify[0][1]
    assert smoke["n"] < 100_000  # smoke scale certifies with fewer noise draws


def test_table2_cells_are_the_stored_mean_distances(table2):
    out, run = table2
    grid = build_paper_grid(load_frame([out]), "gradient-reg", "2")
    row = "CIFAR-10 / Undefended"
    for col, name in (("mean adversarial distance: L-bound", "lbound-l2"),
                      ("mean adversarial distance: ω-bound", "omega-l2")):
        stored = runs.read_json(run / "certify" / f"{name}.json")
        dist = [d if d is not None else math.inf for d in stored["per_sample"]["distance"]]
        assert grid.values[(row, col)] == [pytest.approx(sum(dist) / len(dist))]
    best = next(r for r in runs.read_json(run / "attacks" / "finlay-l2-smoke4.json")["results"]
                if r["label"] == "Best-L2")
    found = [d for d in best["per_sample"]["distance"] if d is not None]
    assert grid.values[(row, "mean adversarial distance: empirical")] == [pytest.approx(sum(found) / len(found))]
    clean = runs.read_json(run / "attacks" / "finlay-l2-smoke4.json")["clean"]["accuracy"]
    assert grid.values[(row, "% clean error")] == [pytest.approx(100 - 100 * clean)]


def test_table6_and_table3_read_the_omega_certification(table2):
    out, run = table2
    stored = runs.read_json(run / "certify" / "omega-l2.json")
    # Table 6 reuses the same base run (same config) and the same certification
    api.reproduce("gradient-reg", "6", out=out, rows=["Undefended"], smoke=TINY, device="cpu")
    grid6 = build_paper_grid(load_frame([out]), "gradient-reg", "6")
    for r in stored["certified"]:
        if r["eps"] in ("0.25", "0.5", "0.75", "1.0", "1.25", "1.5"):
            assert grid6.values[("Undefended", r["eps"])] == [pytest.approx(100 - 100 * r["accuracy"])]
    assert "n-eval: 8 (first N test images" in grid6.caption  # the certified images, not a dash
    errors = [grid6.values[("Undefended", e)][0] for e in ("0.25", "0.5", "0.75", "1.0", "1.25", "1.5")]
    assert errors == sorted(errors)  # certified error never falls as the radius grows
    api.reproduce("gradient-reg", "3", out=out, rows=["CIFAR-10 / Undefended"], smoke=TINY, device="cpu")
    grid3 = build_paper_grid(load_frame([out]), "gradient-reg", "3")
    run3 = Path(grid3.runs_per_row["CIFAR-10 / Undefended"][0])
    stored3 = runs.read_json(run3 / "certify" / "omega-l2.json")
    omega = {float(e["eps"]): e["omega"] for e in stored3["summary"]["omega"]}
    for col, eps in (("ω(0.5)", 0.5), ("ω(1.0)", 1.0)):
        assert grid3.values[("CIFAR-10 / Undefended", col)] == [pytest.approx(omega[eps])]
    assert omega[0.5] <= omega[1.0]  # ω is non-decreasing in eps
