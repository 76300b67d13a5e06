"""Smoke scale compresses every option a defense measures in epochs, also one whose default depends on other
options: TRADES-AWP's 10 warm-up epochs (the default of its trades base, left at None in the options) used to stay
10 in a 3-epoch smoke run, so the weight perturbation never switched on and the row trained bit for bit as TRADES."""

from __future__ import annotations

from advbench.defenses import DEFENSES
from advbench.papers.plan import make_plan
from advbench.papers.published import published_tables
from advbench.papers.recipes import get_recipe


def _smoke_plans(tmp_path):
    for paper, table in published_tables():
        recipe = get_recipe(paper, table)
        if recipe is None:
            continue
        try:
            plan = make_plan(paper, table, scale="smoke", out=tmp_path, device="cpu")
        except Exception:  # noqa: BLE001 - tables without a smoke plan (quoted, not numeric) are not this test's
            continue
        yield f"{paper}:{table}", plan


def test_every_smoke_run_with_a_weight_perturbation_warmup_perturbs_within_its_epochs(tmp_path):
    seen = 0
    for key, plan in _smoke_plans(tmp_path):
        for run in plan.runs:
            defense = DEFENSES.get(run.options["defense"])
            if "warmup_epochs" not in defense.epoch_options:
                continue
            options = {k.removeprefix("defense."): v for k, v in run.settings.items() if k.startswith("defense.")}
            opts = defense.Options(**options)
            warmup = opts.resolved("warmup_epochs") if hasattr(opts, "resolved") else opts.warmup_epochs
            assert warmup is not None and int(warmup) < int(run.options["epochs"]), (key, run.row, warmup)
            seen += 1
    assert seen >= 3  # the TRADES-AWP and RAT-on-AWP rows of RAT's tables


def test_trades_awp_smoke_row_is_no_longer_trades(tmp_path):
    plan = make_plan("randomized-at", "2", scale="smoke", out=tmp_path, device="cpu")
    awp = next(p for p in plan.runs if p.options["defense"] == "trades-awp")
    trades = next(p for p in plan.runs if p.options["defense"] == "trades")
    assert awp.settings["defense.warmup_epochs"] == 1 and awp.overrides["warmup_epochs"] == 1
    assert awp.hash != trades.hash
