"""Black-box and minimum-distance attacks against their oracles (evaluation-protocols.md Part C 6, 7, 10, 11)."""

from __future__ import annotations

import math

import pytest
import torch
from test_attacks_models import SmallNet, small_problem

from advbench.attacks import SUITES, build_attack
from advbench.attacks.base import AttackContext
from advbench.attacks.mindist import min_distance
from advbench.attacks.rays import rays_search
from advbench.attacks.simba import dct_matrix, simba
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.threat import ThreatModel


def _linear_distance(model, x, y, w, norm):
    s = x.flatten(1) @ w + model.b.detach()
    m = torch.where(y == 1, s, -s)
    return m / (w.abs().sum() if norm == "linf" else w.norm())


# ----------------------------------------------------------------------------------------------- SimBA (C11)


@pytest.mark.parametrize("variant", ["pixel", "dct"])
def test_simba_probability_never_increases_and_costs_at_most_two_queries(variant):
    model, x, y = small_problem(48)
    threat = ThreatModel.parse("8/255")
    out = simba(model, x, y, threat, variant=variant, step=threat.eps, max_iters=150,
                generator=torch.Generator().manual_seed(0), record=True)
    trace = torch.stack(out.trace)  # [iterations + 1, B]
    assert bool((trace[1:] <= trace[:-1]).all())
    per_iter = torch.stack(out.queries_per_iteration)
    assert int(per_iter.max()) <= 2
    assert torch.equal(out.queries, 1 + per_iter.sum(0))  # one clean query plus what each iteration spent
    assert bool((out.queries <= 1 + 2 * out.iterations).all())
    delta = out.x_adv - x
    assert float(delta.abs().max()) <= threat.eps + 1e-7 and out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    with torch.no_grad():
        assert torch.allclose(torch.softmax(model(out.x_adv), 1).gather(1, y[:, None]).squeeze(1), out.prob)
        assert (model(out.x_adv).argmax(1) == y).float().mean() < (model(x).argmax(1) == y).float().mean()


def test_simba_dct_basis_is_orthonormal_and_query_budget_is_respected():
    m = dct_matrix(8, torch.device("cpu"), torch.float64)
    assert torch.allclose(m @ m.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    model, x, y = small_problem(32)
    res = build_attack("simba", ThreatModel.parse("4/255"), {"max_queries": 41, "variant": "dct"})(
        model, x, y, generator=torch.Generator().manual_seed(1))
    assert max(res.per_sample["queries"]) <= 41
    assert build_attack("simba", ThreatModel.parse("4/255")).kind == "black-box"


# ------------------------------------------------------------------------------------------------ RayS (C10)


def test_rays_finds_the_linf_boundary_distance_of_a_linear_model(linear_problem):
    model, x, y, w, _b = linear_problem
    true = _linear_distance(model, x, y, w, "linf")
    keep = true < 0.25  # the [0, 1] box does not bind along the optimal ray
    tol = 1e-4
    out = rays_search(model, x[keep], y[keep], max_queries=3000, tol=tol, generator=torch.Generator().manual_seed(0))
    found = out.distance
    assert bool((found >= true[keep] - 1e-9).all()) and bool((found - true[keep] <= tol + 1e-9).all())
    # the attack: accuracy at eps is exactly "distance > eps", and ADBD is their mean
    threat = ThreatModel("linf", 8 / 255, "8/255")
    res = build_attack("rays", threat, {"max_queries": 3000, "tol": tol})(model, x[keep], y[keep],
                                                                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(res.correct, true[keep] > threat.eps)
    summary = type(build_attack("rays", threat)).summarize(res.per_sample, [{}], [], threat)
    assert summary["adbd"] == pytest.approx(float(true[keep].mean()), abs=tol)
    assert summary["n_not_found"] == 0 and max(res.per_sample["queries"]) <= 3000 + 40


# -------------------------------------------------------------------------------------------- transfer (C6)


def test_transfer_from_the_model_itself_is_the_white_box_attack_bit_for_bit():
    model, x, y = small_problem(64)
    threat = ThreatModel.parse("6/255")
    white = build_attack("pgd", threat, {"steps": 10, "select": "last"})(model, x, y,
                                                                         generator=torch.Generator().manual_seed(3))
    ctx = AttackContext(source_model=model, source={"model": "self"})
    transfer = build_attack("transfer", threat, {"steps": 10}, ctx)(model, x, y,
                                                                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(transfer.x_adv, white.x_adv) and torch.equal(transfer.correct, white.correct)
    cw_white = build_attack("cw-inf", threat, {"steps": 10, "select": "last"})(
        model, x, y, generator=torch.Generator().manual_seed(4))
    cw_transfer = build_attack("transfer", threat, {"steps": 10, "method": "cw-inf"}, ctx)(
        model, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(cw_transfer.x_adv, cw_white.x_adv)


def test_blackbox_suite_transfers_from_a_source_and_skips_transfer_without_one(tmp_path):
    model, x, y = small_problem(48)
    torch.manual_seed(11)
    source = SmallNet().eval()  # an untrained, independent source: its examples barely transfer
    suite = SUITES.get("blackbox")
    small = type(suite)("blackbox", tuple(
        e.__class__(e.label, e.attack, {**e.options, **({"max_iters": 40} if e.attack == "simba" else {}),
                                        **({"n_queries": 60} if e.attack == "square" else {}),
                                        **({"steps": 5} if e.attack == "transfer" else {})})
        for e in suite.entries))
    threat = ThreatModel.parse("8/255")
    job = EvalJob(small, [threat], n_eval=48, batch_size=48, hygiene=False, available=frozenset({"source_model"}),
                  transfer_source={"model": "random SmallNet"})
    res = evaluate_suite(model, (x, y), job, tmp_path / "a" / "attacks" / "blackbox.json",
                         device=torch.device("cpu"), context=AttackContext(source_model=source, source={"m": 1}))
    labels = [r["label"] for r in res["results"]]
    assert labels == ["SimBA", "Square", "Transfer-PGD20", "Transfer-PGD1000", "Transfer-CW20"]
    white = build_attack("pgd", threat, {"steps": 10})(model, x, y, generator=torch.Generator().manual_seed(0))
    for r in res["results"][2:]:
        assert r["kind"] == "black-box" and r["accuracy"] >= white.correct.float().mean().item()
        assert r["summary"]["source_accuracy"] is not None
    job2 = EvalJob(small, [threat], n_eval=48, batch_size=48, hygiene=False)
    res2 = evaluate_suite(model, (x, y), job2, tmp_path / "b" / "attacks" / "blackbox.json",
                          device=torch.device("cpu"))
    assert [r["label"] for r in res2["results"]] == ["SimBA", "Square"]
    assert [s["label"] for s in res2["skipped"]] == ["Transfer-PGD20", "Transfer-PGD1000", "Transfer-CW20"]
    assert all("source" in s["reason"] for s in res2["skipped"])


def test_square_runs_alone_within_its_query_budget():
    model, x, y = small_problem(32)
    res = build_attack("square", ThreatModel.parse("8/255"), {"n_queries": 50})(model, x, y)
    # AutoAttack's own checks and our clean/verdict passes add a handful of forwards per image
    assert res.forward / len(x) <= 50 + 12
    assert res.info["components"] == ["square"] and res.info["n_queries"] == 50
    assert res.correct.float().mean() <= (model(x).argmax(1) == y).float().mean()


# --------------------------------------------------------------------------------------- min distance (C7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bisection_pgd_returns_the_linear_distance_and_zero_for_misclassified(linear_problem, norm):
    model, x, y, w, _b = linear_problem
    y = y.clone()
    y[:4] = 1 - y[:4]  # four misclassified points: distance 0
    true = _linear_distance(model, x, y, w, norm)
    eps_max, bisection = (0.5, 16) if norm == "linf" else (4.0, 18)
    dist, x_best = min_distance(model, x, y, norm, eps_max=eps_max, bisection=bisection, steps=8, step_ratio=0.25,
                                init="zero", generator=None)
    assert torch.equal(dist[:4], torch.zeros(4, dtype=dist.dtype))
    coord = true.abs() * (1.0 if norm == "linf" else w.abs().max() / w.norm())
    ok = (true > 0) & (coord < 0.28)  # box never binds along the optimal direction
    assert int(ok.sum()) > 20
    tol = 2 * eps_max / 2**bisection
    assert bool(((dist[ok] - true[ok]).abs() <= tol).all())
    with torch.no_grad():
        assert bool((model(x_best[ok]).argmax(1) != y[ok]).all())  # the closest point found is adversarial


def test_min_dist_attack_curve_and_error_at_eps(linear_problem, tmp_path):
    model, x, y, w, _b = linear_problem
    threat = ThreatModel("linf", 8 / 255, "8/255")
    job = EvalJob(SUITES.get("distance-pgd"), [threat], n_eval=64, batch_size=32, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "distance.json", device=torch.device("cpu"))
    linf, l2 = res["results"]
    assert (linf["norm"], linf["eps"]) == ("linf", "8/255") and (l2["norm"], l2["eps"]) == ("l2", "0.5")
    true = _linear_distance(model, x, y, w, "linf")
    assert linf["correct"] == [int(v) for v in (true > threat.eps).tolist()]
    s = linf["summary"]
    errors = [1 - p["accuracy"] for p in s["curve"]]
    assert all(b >= a for a, b in zip(errors, errors[1:], strict=False))  # empirical error non-decreasing in eps
    assert s["empirical_error_at_eps"] == pytest.approx(1 - linf["accuracy"])
    found = [d for d in linf["per_sample"]["distance"] if d is not None]
    assert s["mean_distance"] == pytest.approx(sum(found) / len(found))
    assert not math.isnan(l2["summary"]["mean_distance"])
