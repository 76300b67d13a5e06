"""Recipes that span blocks and threat models, and transfer sources from any row (issue 15 parts 1-2).

The oracles are the papers' own settings: SAT App. A (lr 0.1 for WideResNet, weight decay 2e-4 for CIFAR-100, the
WRN step schedule), SOAR App. E.5 (L2-trained ADV/TRADES at eps 1.74 beside the Linf-trained SOAR of Table 1).
"""

from __future__ import annotations

import dataclasses

import pytest

from advbench.errors import UserError
from advbench.papers.plan import make_plan
from advbench.papers.recipes import Block, Source, blocks_of, get_recipe


def _by_block(plan):
    out: dict[str | None, list] = {}
    for p in plan.runs:
        if not p.base:
            out.setdefault(p.block, []).append(p)
    return out


def test_sat_table1_plans_every_block_with_the_papers_settings(tmp_path):
    plan = make_plan("sat", "1", scale="paper", out=tmp_path, device="cpu")
    blocks = _by_block(plan)
    assert set(blocks) == {None, "CIFAR-10 / WideResNet-34-10", "CIFAR-100 / PreAct-ResNet-20",
                           "CIFAR-100 / WideResNet-34-10"}
    assert all(len(runs) == 6 for runs in blocks.values())  # AT, TRADES, DAT, CAT20, H-SAT, P-SAT in every block
    expect = {None: ("cifar10", "preact-resnet20", 0.05, 5e-4),
              "CIFAR-10 / WideResNet-34-10": ("cifar10", "wrn-34-10", 0.1, 5e-4),
              "CIFAR-100 / PreAct-ResNet-20": ("cifar100", "preact-resnet20", 0.05, 2e-4),
              "CIFAR-100 / WideResNet-34-10": ("cifar100", "wrn-34-10", 0.1, 2e-4)}
    for name, runs in blocks.items():
        for p in runs:
            o = p.options
            assert (o["dataset"], o["model"], o["lr"], o["weight_decay"]) == expect[name], (name, p.row)
            sat = p.options["defense"] in ("h-sat", "p-sat")
            wrn = o["model"] == "wrn-34-10"
            assert (p.settings.get("defense.lambda_schedule") == "step-wrn") == (sat and wrn)
    assert len({p.hash for p in plan.runs}) == len(plan.runs)


def test_main_block_runs_keep_their_names_when_blocks_are_added(tmp_path):
    main = make_plan("sat", "1", scale="paper", out=tmp_path, device="cpu", blocks=["CIFAR-10 / PreAct-ResNet-20"])
    full = make_plan("sat", "1", scale="paper", out=tmp_path, device="cpu")
    assert {p.name for p in main.runs} == {p.name for p in full.runs if p.block is None}
    assert all(p.block is None for p in main.runs)


def test_block_option_plans_a_subset_and_an_unknown_block_is_one_line(tmp_path):
    plan = make_plan("sat", "3", scale="paper", out=tmp_path, device="cpu", blocks=["CIFAR-10 / 24/255"])
    assert plan.runs and all(p.options["eps"] == "24/255" and p.block == "CIFAR-10 / 24/255" for p in plan.runs)
    with pytest.raises(UserError, match="has no block 'nope'; blocks: CIFAR-10 / 16/255, CIFAR-10 / 24/255"):
        make_plan("sat", "3", scale="paper", out=tmp_path, blocks=["nope"])


def test_imagenette_block_gets_dats_imagenette_decay_and_its_own_lr(tmp_path):
    plan = make_plan("sat", "3", scale="paper", out=tmp_path, device="cpu", blocks=["Imagenette / 16/255"])
    dat = next(p for p in plan.runs if p.options["defense"] == "dat")
    assert dat.settings["defense.fosc_epochs"] == 40.0  # "40 for Imagenette" (SAT App. A)
    assert {p.options["dataset"] for p in plan.runs} == {"imagenette"} and dat.options["lr"] == 0.1


def test_smoke_scale_plans_threat_blocks_and_says_why_it_skips_the_others(tmp_path):
    plan = make_plan("sat", "2", scale="smoke", out=tmp_path, device="cpu")
    eps = {p.options["eps"] for p in plan.runs if not p.base}
    assert eps == {"0.3", "0.45"} and not plan.skipped_blocks
    sat1 = make_plan("sat", "1", scale="smoke", out=tmp_path, device="cpu")
    assert "only by the model" in sat1.skipped_blocks["CIFAR-10 / WideResNet-34-10"]
    assert "not on disk" in sat1.skipped_blocks["CIFAR-100 / PreAct-ResNet-20"]
    assert "block CIFAR-100 / PreAct-ResNet-20: smoke scale" in sat1.describe()


def test_rows_trained_under_their_own_threat_model(tmp_path):
    plan = make_plan("soar", "9", scale="paper", out=tmp_path, device="cpu")
    rows = {p.row: p for p in plan.runs if not p.base and p.seed == 0}  # SOAR's tables plan 3 seeds
    assert (rows["ADV"].options["norm"], rows["ADV"].options["eps"]) == ("l2", "1.74")
    assert rows["ADV"].settings == {"defense.steps": 10, "defense.step_size": 0.44}
    assert (rows["TRADES"].options["norm"], rows["TRADES"].options["eps"]) == ("l2", "1.74")
    assert (rows["SOAR"].options["norm"], rows["SOAR"].options["eps"]) == ("linf", "8/255")
    # the Linf SOAR of Table 9 is the SOAR run of Table 1 (one run, two tables)
    table1 = make_plan("soar", "1", scale="paper", out=tmp_path, device="cpu", rows=["ResNet / SOAR"])
    assert rows["SOAR"].hash == next(p.hash for p in table1.runs if p.row == "ResNet / SOAR" and p.seed == 0)
    assert all(s[2] == "l2" for s in rows["ADV"].suites)


def test_a_suite_may_craft_transfer_attacks_on_a_planned_row(tmp_path, monkeypatch):
    from advbench.api.reproduce import _stages
    from advbench.papers import recipes

    key = ("randomized-at", "4")
    original = get_recipe(*key)
    surrogate = "Wu et al. (2020) [76](0_th)"
    patched = dataclasses.replace(original, sources={"rat-transfer": Source(row=surrogate)}, blocks=())
    monkeypatch.setitem(recipes._RECIPES, key, patched)
    plan = make_plan(*key, scale="paper", out=tmp_path, device="cpu")
    rows = {p.row: p for p in plan.runs if not p.base}
    assert set(rows) == {surrogate, "+ Ours (1_st + 2_nd)"}  # the source is the row's own run, trained once
    assert rows["+ Ours (1_st + 2_nd)"].sources["rat-transfer"] == rows[surrogate].hash
    order = [plan.runs[i].row for stage in _stages(plan.runs) for i in stage]
    assert order.index(surrogate) < order.index("+ Ours (1_st + 2_nd)")  # trained before it is attacked from


def test_an_independent_source_is_planned_once_per_seed_and_trains_before_its_users(tmp_path):
    from advbench.api.reproduce import _stages

    plan = make_plan("randomized-at", "4", scale="paper", out=tmp_path, device="cpu", seeds=[0, 1],
                     blocks=["CIFAR-10"])
    sources = [p for p in plan.runs if p.role == "source"]
    assert sorted(p.seed for p in sources) == [1000, 1001]
    assert all(p.options["defense"] == "pgd-at" and not p.suites for p in sources)
    users = [p for p in plan.runs if p.role == "row"]
    assert {p.sources["rat-transfer"] for p in users} == {p.hash for p in sources}
    first = set(_stages(plan.runs)[0])
    assert all(plan.runs.index(s) in first or plan.runs.index(s) in _stages(plan.runs)[1] for s in sources)


def test_blocks_partition_the_printed_cells():
    for paper, table in (("sat", "1"), ("sat", "2"), ("sat", "3"), ("randomized-at", "2"), ("randomized-at", "3"),
                         ("randomized-at", "4"), ("randomized-at", "5")):
        recipe = get_recipe(paper, table)
        cells = [(r, c) for b in blocks_of(recipe) for r in b.rows for c in b.columns]
        assert len(cells) == len(set(cells)), (paper, table)


def test_a_block_naming_labels_outside_the_table_is_refused():
    from advbench.papers.recipes import register

    bad = dataclasses.replace(get_recipe("sat", "2"), blocks=(Block("x", columns=("no such column",)),))
    with pytest.raises(ValueError, match="names labels not in the table"):
        register(bad)


def test_cli_block_option(tmp_path, capsys):
    from advbench.cli import main

    code = main(["reproduce", "sat", "--table", "2", "--scale", "paper", "--block", "0.45", "--dry-run",
                 "--out", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0 and "[block 0.45]" not in out  # one block planned: no tag needed
    assert "block 0.45: mnist, sat-cnn, linf 0.45" in out
    code = main(["reproduce", "sat", "--table", "2", "--block", "0.5", "--dry-run", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and "has no block '0.5'; blocks: 0.3, 0.45" in err and len(err.strip().splitlines()) == 1


def test_swept_row_plans_one_run_per_value_and_keeps_the_default_values_run_name(tmp_path):
    plan = make_plan("scorpio", "2(a)", scale="paper", out=tmp_path, device="cpu", rows=["Gradient Reg"])
    runs = [p for p in plan.runs if p.row == "Gradient Reg"]
    assert sorted(p.settings.get("defense.lam", 0.1) for p in runs) == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    assert any("the grid keeps the largest lam" in n for n in plan.notes)


def test_sweep_keeps_the_largest_value_within_the_tolerance_of_the_reference():
    import pandas as pd

    from advbench.report.grid_runs import pick_sweeps

    recipe = get_recipe("scorpio", "2(a)")

    def entry(clean):
        sub = pd.DataFrame([{"kind": "clean", "accuracy": clean}])
        return (0.0, "run", sub, {}, None)

    chosen = {("main", "Adv Train (PGD-10)", 0, None): entry(0.80),
              **{("main", "Gradient Reg", 0, lam): entry(acc) for lam, acc in
                 ((0.01, 0.92), (0.1, 0.85), (1.0, 0.79), (10.0, 0.60))}}
    notes = pick_sweeps(chosen, recipe)
    kept = [k[3] for k in chosen if k[1] == "Gradient Reg"]
    assert kept == [1.0]  # 79 >= 80 - 2; 10.0 (60) is too far below AT's 80
    assert "lam = 1 kept" in notes[0] and "10: 60.0" in notes[0]
