"""Paper claims checked on measured grids: verdicts and standard errors on hand-built grids (hand-computed oracles,
a Monte Carlo check of the Sum column's variance), the published numbers, and one reproduce -> report run."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from advbench.papers.published import table_layout
from advbench.papers.recipes import Claim, get_recipe, register
from advbench.report.claims import Z, cell_se, claims_text, evaluate_claim, evaluate_claims
from advbench.report.paper_grids import PaperGrid

MAIN_TABLES = [("sat", "1"), ("sat", "2"), ("soar", "1"), ("scorpio", "2(a)"), ("scorpio", "2(b)"),
               ("randomized-at", "1"), ("randomized-at", "2"), ("gradient-reg", "4")]


def _grid(paper: str, table: str, cells: dict[tuple[str, str], tuple[list[float], list[int]]],
          claims: tuple[Claim, ...] = ()) -> PaperGrid:
    recipe = get_recipe(paper, table)
    assert recipe is not None
    grid = PaperGrid(table_layout(paper, table), dataclasses.replace(recipe, claims=claims or recipe.claims))
    for key, (values, counts) in cells.items():
        grid.values[key] = list(values)
        grid.counts[key] = list(counts)
    return grid


SOAR_CLAIM = Claim("SOAR above ADV under PGD-20", "greater", "PGD20", "ResNet / SOAR", other="ResNet / ADV")


@pytest.mark.parametrize("n, verdict", [(100, "within noise"), (1000, "agrees")])
def test_greater_claim_uses_binomial_standard_errors(n, verdict):
    grid = _grid("soar", "1", {("ResNet / SOAR", "PGD20"): ([60.0], [n]), ("ResNet / ADV", "PGD20"): ([50.0], [n])})
    res = evaluate_claim(grid, SOAR_CLAIM)
    se = 100 * math.sqrt(0.6 * 0.4 / n + 0.5 * 0.5 / n)  # 7.000 at n=100, 2.214 at n=1000
    assert res.difference == pytest.approx(10.0) and res.se == pytest.approx(se)
    assert res.verdict == verdict
    assert cell_se(grid, "ResNet / SOAR", "PGD20") == pytest.approx(100 * math.sqrt(0.24 / n))


def test_reversed_order_beyond_noise_disagrees_and_missing_cells_are_not_measured():
    grid = _grid("soar", "1", {("ResNet / SOAR", "PGD20"): ([40.0], [2000]),
                               ("ResNet / ADV", "PGD20"): ([50.0], [2000])})
    res = evaluate_claim(grid, SOAR_CLAIM)
    assert res.verdict == "disagrees" and res.difference == pytest.approx(-10.0)
    empty = _grid("soar", "1", {("ResNet / SOAR", "PGD20"): ([40.0], [2000])})
    res = evaluate_claim(empty, SOAR_CLAIM)
    assert res.verdict == "not measured" and "ResNet / ADV" in res.detail


def test_error_columns_lower_is_better():
    claim = Claim("h=0.1 below DBP", "less", "empirical % error / 2/255", "h = 0.1", other="double backpropagation")
    col = "empirical % error / 2/255"
    grid = _grid("gradient-reg", "4", {("h = 0.1", col): ([20.0], [500]),
                                       ("double backpropagation", col): ([30.0], [500])}, (claim,))
    res = evaluate_claim(grid, claim)
    # error 20% and 30%: the same binomial SE as accuracies 80% and 70%
    assert res.difference == pytest.approx(10.0)
    assert res.se == pytest.approx(100 * math.sqrt(0.2 * 0.8 / 500 + 0.3 * 0.7 / 500))  # 2.720
    assert res.verdict == "agrees"  # 10 > 1.96 * 2.72


def test_max_claim_takes_its_closest_rival_and_names_rows_not_measured():
    among = ("ResNet / ADV", "ResNet / TRADES", "ResNet / MART")
    claim = Claim("SOAR highest", "max", "PGD20", "ResNet / SOAR", among=among)
    cells = {("ResNet / SOAR", "PGD20"): ([56.0], [1000]), ("ResNet / ADV", "PGD20"): ([43.0], [1000]),
             ("ResNet / TRADES", "PGD20"): ([54.0], [1000])}
    res = evaluate_claim(_grid("soar", "1", cells, (claim,)), claim)
    se = 100 * math.sqrt(0.56 * 0.44 / 1000 + 0.54 * 0.46 / 1000)  # 2.22: 2 points is within noise
    assert res.verdict == "within noise" and res.difference == pytest.approx(2.0) and res.se == pytest.approx(se)
    assert "closest rival ResNet / TRADES 54.00" in res.detail and "not measured: ResNet / MART" in res.detail
    cells[("ResNet / TRADES", "PGD20")] = ([62.0], [1000])  # a rival above by 6 points (SE 2.20): disagrees
    res = evaluate_claim(_grid("soar", "1", cells, (claim,)), claim)
    assert res.verdict == "disagrees" and "highest measured: ResNet / TRADES" in res.detail
    cells[("ResNet / TRADES", "PGD20")] = ([40.0], [1000])  # both rivals far below: agrees
    assert evaluate_claim(_grid("soar", "1", cells, (claim,)), claim).verdict == "agrees"


def test_min_claim_over_every_measured_row():
    claim = Claim("CAT lowest", "min", "0.3 / Adv", "CAT20 [7]")
    cells = {("CAT20 [7]", "0.3 / Adv"): ([1.0], [100]), ("AT [23]", "0.3 / Adv"): ([8.0], [100])}
    res = evaluate_claim(_grid("sat", "2", cells, (claim,)), claim)
    se = 100 * math.sqrt(0.01 * 0.99 / 100 + 0.08 * 0.92 / 100)  # 2.89: 7 points > 1.96 SE
    assert res.verdict == "agrees" and res.se == pytest.approx(se) and res.difference == pytest.approx(7.0)


def test_seeds_take_the_larger_of_binomial_and_seed_standard_errors():
    grid = _grid("soar", "1", {("ResNet / SOAR", "PGD20"): ([60.0, 70.0], [100, 100])})
    # pooled binomial: p 0.65 on 200 images = 3.373; seeds: std 7.071 / sqrt(2) = 5.0
    assert cell_se(grid, "ResNet / SOAR", "PGD20") == pytest.approx(5.0)
    grid = _grid("soar", "1", {("ResNet / SOAR", "PGD20"): ([60.0, 61.0], [100, 100])})
    assert cell_se(grid, "ResNet / SOAR", "PGD20") == pytest.approx(100 * math.sqrt(0.605 * 0.395 / 200))


def test_sum_column_variance_includes_the_clean_robust_covariance():
    """Clean on 250 images (90%), Adv on the first 100 (50%), a robust image is always clean-correct:
    var = .9*.1/250 + .5*.5/100 + 2*.5*.1/250 = 0.00326 (hand-computed); checked by Monte Carlo too."""
    cells = {("P-SAT (ours)", "0.3 / Clean"): ([90.0], [250]), ("P-SAT (ours)", "0.3 / Adv"): ([50.0], [100]),
             ("P-SAT (ours)", "0.3 / Sum"): ([140.0], [])}
    grid = _grid("sat", "2", cells)
    se = cell_se(grid, "P-SAT (ours)", "0.3 / Sum")
    assert se == pytest.approx(100 * math.sqrt(0.00326))
    rng = np.random.default_rng(0)
    reps = 40000
    u = rng.random((reps, 250))
    clean = u < 0.9
    robust = u[:, :100] < 0.5  # robust (u < .5) implies clean-correct (u < .9): the nesting of the two indicators
    sums = 100 * (clean.mean(1) + robust.mean(1))
    assert sums.std() == pytest.approx(se, rel=0.02)


def test_claims_text_and_every_main_table_claim_holds_on_the_published_numbers():
    """The claims encode each paper's own ordering: on its published numbers (on its n test images) none disagrees;
    SAT Table 1's orderings are within noise even at n = 10000."""
    verdicts = {}
    for paper, table in MAIN_TABLES:
        layout, recipe = table_layout(paper, table), get_recipe(paper, table)
        assert recipe is not None and recipe.claims, (paper, table)
        cells = {k: ([c.value], [recipe.n_eval]) for k, c in layout.cells.items() if c.value is not None}
        results = evaluate_claims(_grid(paper, table, cells))
        for r in results:
            assert r.verdict in ("agrees", "within noise"), (paper, table, r.line())
            verdicts[(paper, table, r.claim.text)] = r.verdict
        text = claims_text(results)
        assert text[0].startswith("Claims") and f"{Z:.2f} SE" in text[0] and len(text) == len(results) + 1
    assert verdicts[("soar", "1", "SOAR is more robust than ADV under PGD-20 (ResNet)")] == "agrees"
    assert verdicts[("sat", "1", "TRADES has the highest AutoAttack accuracy (CIFAR-10, PreAct-ResNet-20)")] == \
        "within noise"  # 45.77 vs 45.19 on 10000 images: 0.58 +- 0.70


def test_a_claim_naming_an_unknown_row_is_refused_at_registration():
    recipe = get_recipe("soar", "1")
    bad = dataclasses.replace(recipe, claims=(Claim("x", "greater", "PGD20", "ResNet / SOAR", other="Nope"),))
    with pytest.raises(ValueError, match="claim 'x'"):
        register(bad)
    bad = dataclasses.replace(recipe, claims=(Claim("y", "max", "PGD20", "ResNet / SOAR", other="ResNet / ADV"),))
    with pytest.raises(ValueError, match="claim 'y'"):
        register(bad)
    assert get_recipe("soar", "1").claims == recipe.claims  # nothing registered


_TINY = {"epochs": 1, "base_epochs": 1, "base_n_train": 48, "n_train": 48, "batch_size": 16, "val_n": 8,
         "val_attack_steps": 1, "train_attack_steps": 2, "n_eval": 12, "n_eval_expensive": 6,
         "synthetic_options": {"n_train": 120, "n_test": 16}}


def test_report_grid_paper_prints_the_verdicts_of_real_runs(tmp_path, capsys):
    """reproduce two SOAR rows at a tiny smoke scale, then `report --grid --paper`: each claim's verdict and SE
    are those computed by hand from the stored attack results (n 12; PGD20-50 on the first 6)."""
    from advbench import api
    from advbench.cli import main

    api.reproduce("soar", "1", out=tmp_path, rows=["ResNet / ADV", "ResNet / SOAR"], smoke=_TINY, device="cpu")
    acc: dict[tuple[str, str], tuple[float, int]] = {}
    for meta in tmp_path.rglob("paper.json"):
        row = (json.loads(meta.read_text()).get("rows") or {}).get("soar:1")
        if row is None:
            continue
        for f in (meta.parent / "attacks").glob("*.json"):
            res = json.loads(f.read_text())
            for r in res["results"]:
                acc[(row, r["label"])] = (100 * r["accuracy"], int(r.get("n", res["n_eval"])))
    assert acc[("ResNet / SOAR", "PGD-20")][1] == 12 and acc[("ResNet / SOAR", "PGD-20-50")][1] == 6
    assert main(["report", str(tmp_path), "--grid", "soar:1", "--paper", "--format", "json"]) == 0
    claims = {c["claim"]: c for c in json.loads(capsys.readouterr().out)["claims"]}
    for text, label in (("SOAR is more robust than ADV under PGD-20 (ResNet)", "PGD-20"),
                        ("SOAR is more robust than ADV under PGD-20 with 50 restarts (ResNet)", "PGD-20-50")):
        (a, n), (b, _) = acc[("ResNet / SOAR", label)], acc[("ResNet / ADV", label)]
        se = 100 * math.sqrt((a / 100) * (1 - a / 100) / n + (b / 100) * (1 - b / 100) / n)
        c = claims[text]
        assert c["difference"] == pytest.approx(a - b) and c["se"] == pytest.approx(se)
        want = ("agrees" if a - b > Z * se else "disagrees" if a - b < -Z * se else "within noise") if se else (
            "agrees" if a > b else "disagrees" if a < b else "within noise")
        assert c["verdict"] == want
    assert "not measured: ResNet / TRADES, ResNet / MART, ResNet / MMA, ResNet / FOAR" in claims[
        "SOAR has the highest PGD-20 accuracy of the ResNet defenses"]["detail"]
    assert main(["report", str(tmp_path), "--grid", "soar:1", "--paper"]) == 0
    text = capsys.readouterr().out
    assert "Claims (the paper's headline orderings" in text and "SOAR is more robust than ADV" in text
    assert main(["report", str(tmp_path), "--grid", "soar:1"]) == 0  # without --paper: no claims
    assert "Claims (" not in capsys.readouterr().out
    assert Path(tmp_path).is_dir()
