"""Minimum-distance attacks against their oracles (evaluation-protocols.md Part C 7): on linear models every attack
returns |margin| / ||Δw||_* (dual norm), misclassified points get d = 0, empirical error is non-decreasing in eps,
CW-L2 agrees with torchattacks' CW, and best-of is at most each of its members per image."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TwoClassLinear
from test_attacks_models import small_problem
from torch import nn

from advbench.attacks import SUITES, Suite, SuiteEntry, build_attack
from advbench.attacks.distances import prox_norm
from advbench.engine import checklist
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: small budgets that still reach the oracle on 48-dimensional linear models
FAST = {
    "cw-l2": {"steps": 100, "search_steps": 5},
    "deepfool": {},
    "hopskipjump": {"iterations": 25, "init_evals": 50, "max_evals": 200},
    "logbarrier": {"outer": 10, "inner": 20},
    "min-dist": {"bisection": 14, "steps": 8},
}
BEST = {"members": ["cw-l2", "hopskipjump", "logbarrier", "min-dist"],
        "member_options": {k: v for k, v in FAST.items() if k != "deepfool"}}


class MultiLinear(nn.Module):
    """logits = W x + b (K classes)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def _distances(res) -> torch.Tensor:
    return torch.tensor([math.inf if v is None else v for v in res.per_sample["distance"]], dtype=torch.float64)


def _binary(n: int = 48):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)
    s = x.flatten(1) @ w
    b = -float(s.median())
    y = ((s + b) > 0).long()
    y[:4] = 1 - y[:4]  # four misclassified points: distance 0
    model = TwoClassLinear(w, b).double().eval()
    m = torch.where(y == 1, s + b, -(s + b))
    return model, x, y, {"l2": m / w.norm(), "linf": m / w.abs().sum()}


def _multiclass(n: int = 40, k: int = 4):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(k, 48, generator=g, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)
    z = x.flatten(1) @ w.T
    b = -z.mean(0)
    model = MultiLinear(w, b).double().eval()
    z = z + b
    y = z.argmax(1)  # every point correct
    true = {}
    for norm in ("l2", "linf"):
        dw = w[y][:, None, :] - w[None, :, :]  # [n, k, d]: w_y - w_j
        dual = dw.abs().sum(2) if norm == "linf" else dw.norm(dim=2)
        gap = z.gather(1, y[:, None]) - z  # z_y - z_j
        true[norm] = torch.where(torch.arange(k)[None] == y[:, None], math.inf, gap / dual.clamp_min(1e-30)).amin(1)
    return model, x, y, true


def _check(name: str, norm: str, dist: torch.Tensor, true: torch.Tensor) -> None:
    ok = (true > 0) & (true < 0.25)  # the box [0, 1] never binds along the optimal direction
    assert int(ok.sum()) >= 20
    d, t = dist[ok], true[ok]
    assert bool((d >= t * (1 - 1e-9)).all())  # a verified adversarial point is never closer than the boundary
    rel = (d - t) / t
    if name == "cw-l2":  # Adam moves every pixel by about lr / 2 per step (tanh space): resolution ~ lr = 0.01
        assert bool((d - t <= 0.02 * t + 0.01).all()), (d - t).max()
        assert float(rel.median()) <= 0.02
    elif name == "hopskipjump" and norm == "linf":  # sign steps from an estimated gradient: slower in Linf
        assert float(rel.median()) <= 0.05 and float(rel.quantile(0.8)) <= 0.1, rel
    elif name == "hopskipjump":
        assert float(rel.max()) <= 0.03, rel
    else:
        assert float(rel.max()) <= 1e-2, rel


CASES = [(a, n) for a in ("deepfool", "hopskipjump", "logbarrier", "min-dist", "best-of") for n in ("l2", "linf")]


@pytest.mark.parametrize(("name", "norm"), [("cw-l2", "l2"), *CASES])
def test_distance_attacks_find_the_binary_linear_distance_and_zero_for_misclassified(name, norm):
    model, x, y, true = _binary()
    opts = BEST if name == "best-of" else FAST[name]
    res = build_attack(name, ThreatModel(norm, 0.02, "0.02"), opts)(model, x, y, generator=torch.Generator()
                                                                    .manual_seed(0))
    dist = _distances(res)
    assert torch.equal(dist[:4], torch.zeros(4, dtype=torch.float64))  # misclassified: d = 0
    _check(name, norm, dist, true[norm])
    assert res.correct.tolist() == (dist > 0.02).tolist()  # correct at eps iff d > eps
    if name == "best-of":
        for member in BEST["members"]:
            each = torch.tensor([math.inf if v is None else v for v in res.per_sample[f"distance[{member}]"]],
                                dtype=torch.float64)
            assert bool((dist <= each).all())
        assert res.per_sample["winner"][:4] == ["clean"] * 4
        assert set(res.per_sample["winner"][4:]) <= set(BEST["members"])


@pytest.mark.parametrize(("name", "norm"), [("cw-l2", "l2"), ("deepfool", "l2"), ("deepfool", "linf")])
def test_distance_attacks_find_the_multiclass_linear_distance(name, norm):
    """min over classes j of (z_y - z_j) / ||w_y - w_j||_* (the nearest of the union of half-spaces)."""
    model, x, y, true = _multiclass()
    res = build_attack(name, ThreatModel(norm, 0.02, "0.02"), FAST[name])(model, x, y,
                                                                          generator=torch.Generator().manual_seed(0))
    _check(name, norm, _distances(res), true[norm])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_logbarrier_converges_on_the_multiclass_linear_model(norm):
    """LogBarrier is a local method (its start picks the wrong class's half-space on some images): never closer
    than the true distance, the median exact, and in L2 every image at the distance to the half-space of the class
    it ends in."""
    model, x, y, true = _multiclass()
    res = build_attack("logbarrier", ThreatModel(norm, 0.9, "0.9"), FAST["logbarrier"])(
        model, x, y, generator=torch.Generator().manual_seed(0))
    d, t = _distances(res), true[norm]
    ok = t < 0.25
    assert bool((d[ok] >= t[ok] * (1 - 1e-9)).all()) and float(((d - t) / t)[ok].median()) <= 0.01
    if norm == "l2":
        w, b = model.w.detach(), model.b.detach()
        j = model(res.x_adv).argmax(1)
        z = x.flatten(1) @ w.T + b
        local = (z.gather(1, y[:, None]) - z.gather(1, j[:, None])).squeeze(1) / (w[y] - w[j]).norm(dim=1)
        assert float(((d - local) / local)[ok].abs().max()) <= 0.01


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_prox_of_the_norm_solves_its_minimisation(norm):
    """prox_{a||.||}(v) = argmin_u a||u|| + ½||u - v||²: check against the optimality condition (v - u)/a in the
    subdifferential of the norm at u: for L2 a unit vector along u; for Linf an L1-unit vector supported on the
    entries at the maximum, with their signs."""
    g = torch.Generator().manual_seed(3)
    v = torch.randn(5, 30, generator=g, dtype=torch.float64)
    a = torch.tensor([0.1, 0.5, 1.0, 3.0, 1e3], dtype=torch.float64)
    u = prox_norm(v, a, norm)
    s = (v - u) / a[:, None]
    for i in range(5):
        if norm == "l2":
            if float(u[i].norm()) > 0:
                assert torch.allclose(s[i], u[i] / u[i].norm(), atol=1e-9)
            else:
                assert float(v[i].norm()) <= float(a[i])
        else:
            top = u[i].abs().max()
            if float(top) > 0:
                assert float(s[i].abs().sum()) == pytest.approx(1.0, abs=1e-9)
                off = u[i].abs() < top - 1e-12
                assert float(s[i][off].abs().max()) < 1e-9
                assert bool((s[i][~off] * u[i][~off] >= -1e-12).all())
            else:
                assert float(v[i].abs().sum()) <= float(a[i]) + 1e-12


class _Shifted(nn.Module):
    """The model's logits + 100: same argmax and margins; torchattacks' CW takes max(one_hot·z) and
    max((1 - one_hot)·z), which equal z_y and max_{j!=y} z_j only when logits are positive."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 100.0


def test_cw_l2_medians_agree_with_torchattacks():
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = small_problem(96)
    model = _Shifted(net).eval()
    x = x.clamp(1e-3, 1 - 1e-3)  # torchattacks maps 0 and 1 to atanh(±1) = ±inf: such pixels never move
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    ref = torchattacks.CW(model, c=1.0, kappa=0.0, steps=100, lr=0.01)(x, y)
    with torch.no_grad():
        ref_ok = correct & (model(ref).argmax(1) != y)
    ref_d = (ref - x).flatten(1).norm(dim=1)
    res = build_attack("cw-l2", ThreatModel("l2", 0.5, "0.5"),
                       {"c": 1.0, "search_steps": 1, "steps": 100, "lr": 0.01, "refine": 0})(model, x, y)
    ours = _distances(res).float()
    both = ref_ok & torch.isfinite(ours) & correct
    assert int(both.sum()) >= 40
    med_ref, med_ours = float(ref_d[both].median()), float(ours[both].median())
    print(f"CW-L2 median L2 distance on {int(both.sum())} images: advbench {med_ours:.4f}, torchattacks {med_ref:.4f}")
    assert med_ours == pytest.approx(med_ref, rel=0.03)
    # with the binary search over c the distances only get smaller
    searched = _distances(build_attack("cw-l2", ThreatModel("l2", 0.5, "0.5"),
                                       {"search_steps": 4, "steps": 100, "refine": 0})(model, x, y)).float()
    assert float(searched[both].median()) <= med_ours * 1.01


def test_best_of_is_at_most_each_member_run_alone():
    model, x, y = small_problem(24)
    threat = ThreatModel("l2", 0.3, "0.3")
    members = {"cw-l2": {"steps": 30, "search_steps": 2}, "deepfool": {}, "min-dist": {"bisection": 6, "steps": 5}}
    best = _distances(build_attack("best-of", threat, {"members": list(members), "member_options": members})(
        model, x, y))
    for name, opts in members.items():
        alone = _distances(build_attack(name, threat, opts)(model, x, y))
        assert bool((best <= alone).all()), name


def test_error_at_eps_list_is_non_decreasing_and_stored_per_image(tmp_path):
    model, x, y, true = _binary(64)
    members = {"deepfool": {}, "min-dist": {"bisection": 8, "steps": 5}}
    suite = Suite("d", (SuiteEntry("Best-Linf", "best-of", {"members": list(members), "member_options": members,
                                                            "eps_list": ["1/255", "2/255", "8/255", "0.1"]},
                                   norm="linf"),))
    threat = ThreatModel("linf", 4 / 255, "4/255")
    job = EvalJob(suite, [threat], n_eval=64, batch_size=32, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "d.json", device=torch.device("cpu"))
    (r,) = res["results"]
    dist = r["per_sample"]["distance"]
    assert len(dist) == 64 and dist[:4] == [0.0] * 4 and len(r["per_sample"]["winner"]) == 64
    s = r["summary"]
    assert list(s["empirical_error"]) == ["4/255", "1/255", "2/255", "8/255", "0.1"]
    values = sorted((ThreatModel.parse(k, "linf").eps, v) for k, v in s["empirical_error"].items())
    assert all(b[1] >= a[1] for a, b in zip(values, values[1:], strict=False))
    assert s["empirical_error"]["8/255"] == pytest.approx(sum(1 for d in dist if d <= 8 / 255) / 64)
    errors = [1 - p["accuracy"] for p in s["curve"]]
    assert all(b >= a for a, b in zip(errors, errors[1:], strict=False))
    assert r["correct"] == [int(d > threat.eps) for d in dist]
    assert s["empirical_error_at_eps"] == pytest.approx(1 - r["accuracy"])
    assert sum(s["winner_counts"].values()) == 64


def test_distance_attacks_are_left_out_of_the_fgsm_comparison_by_kind_not_name():
    def result(attack, acc):
        return {"key": attack, "attack": attack, "kind": "white-box", "norm": "linf", "eps": "8/255", "n": 10,
                "correct": [1] * int(10 * acc) + [0] * (10 - int(10 * acc))}
    weaker = [result("fgsm", 0.2), result("logbarrier", 0.9), result("cw-l2", 0.9), result("best-of", 0.9)]
    assert checklist.check_iterative_vs_single_step({"results": weaker}) is None
    flagged = checklist.check_iterative_vs_single_step({"results": [result("fgsm", 0.2), result("pgd", 0.9)]})
    assert flagged is not None and flagged.status != "pass"


@pytest.mark.parametrize(("name", "options", "words"), [
    ("best-of", {"members": ["pgd"]}, "not a minimum-distance attack"),
    ("best-of", {"members": ["min-dist"], "member_options": {"cw-l2": {}}}, "not among members"),
    ("cw-l2", {"eps_list": ["8/0"]}, "division by zero"),
    ("logbarrier", {"shrink": 1.5}, "shrink"),
])
def test_bad_options_are_one_line_user_errors(name, options, words):
    with pytest.raises(UserError, match=words):
        build_attack(name, ThreatModel("l2", 0.5, "0.5"), options)


def test_the_distance_suite_is_best_of_in_both_norms():
    entries = SUITES.get("distance").entries
    assert [(e.label, e.attack, e.norm) for e in entries] == [("Best-Linf", "best-of", "linf"),
                                                              ("Best-L2", "best-of", "l2")]


def test_distance_curves_plot_pools_the_stored_distances(tmp_path):
    from fake_runs import write_run

    from advbench import runs
    from advbench.report import load_frame
    from advbench.report.plots import _distances, distance_curves

    for seed, dist in ((0, [0.0, 0.01, None, 0.05]), (1, [0.02, 0.03, 0.04, None])):
        run = write_run(tmp_path, f"std-{seed}", "standard", seed=seed, suite="distance")
        res = runs.read_json(run / "attacks" / "distance.json")
        res["results"][0].update(attack="best-of", label="Best-Linf", per_sample={"distance": dist})
        runs.write_json(run / "attacks" / "distance.json", res)
    frame = load_frame([tmp_path])
    pooled = _distances(frame)
    assert list(pooled) == [("linf", "standard", "Best-Linf")]
    assert sorted(pooled[("linf", "standard", "Best-Linf")], key=lambda d: (d is None, d)) == \
        [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, None, None]
    path = distance_curves(frame, tmp_path / "plots" / "distance_curves.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert distance_curves(frame[frame["suite"] != "distance"], tmp_path / "none.png") is None


def _count_searches(monkeypatch):
    from advbench.attacks import distances

    calls = []
    original = distances.DistanceAttack.distances

    def counted(self, model, x, y, generator):
        calls.append(type(self).__name__)
        return original(self, model, x, y, generator)

    monkeypatch.setattr(distances.DistanceAttack, "distances", counted)
    monkeypatch.setattr(distances, "_MEMO", type(distances._MEMO)())
    return calls


def test_a_suite_at_several_eps_searches_each_batch_once_and_agrees_with_one_eps_alone(tmp_path, monkeypatch):
    """The second eps of a suite reads the first one's distances (the search does not depend on eps); the stored
    distances equal those of each eps evaluated alone in a fresh process-state (so a resumed evaluation, which
    starts with nothing remembered, gives the same result), and correctness at each eps is d > eps."""
    model, x, y, _ = _binary(48)
    suite = Suite("d", (SuiteEntry("Linf", "min-dist", {"bisection": 8, "steps": 5}, norm="linf"),))
    threats = [ThreatModel("linf", 2 / 255, "2/255"), ThreatModel("linf", 8 / 255, "8/255")]
    calls = _count_searches(monkeypatch)
    both = evaluate_suite(model, (x, y), EvalJob(suite, threats, n_eval=48, batch_size=24, hygiene=False),
                          tmp_path / "both" / "attacks" / "d.json", device=torch.device("cpu"))
    assert calls == ["MinDist"] * 2  # 2 batches, each searched once for both eps
    r2, r8 = both["results"]
    assert r2["per_sample"]["distance"] == r8["per_sample"]["distance"]
    dist = r2["per_sample"]["distance"]
    for r, t in ((r2, threats[0]), (r8, threats[1])):
        assert r["correct"] == [int(d is None or d > t.eps) for d in dist]
    for t, r in zip(threats, (r2, r8), strict=True):
        calls.clear()
        from advbench.attacks import distances
        distances._MEMO.clear()
        alone = evaluate_suite(model, (x, y), EvalJob(suite, [t], n_eval=48, batch_size=24, hygiene=False),
                               tmp_path / t.eps_text.replace("/", "-") / "attacks" / "d.json",
                               device=torch.device("cpu"))
        assert len(calls) == 2 and alone["results"][0]["per_sample"]["distance"] == dist
        assert alone["results"][0]["correct"] == r["correct"]


def test_remembered_distances_are_not_returned_for_changed_weights_or_another_batch(monkeypatch):
    from advbench.attacks.distances import _remembered

    model, x, y, _ = _binary(16)
    attack = build_attack("deepfool", ThreatModel("l2", 0.5, "0.5"), {})
    calls = _count_searches(monkeypatch)
    d1 = _remembered(attack, model, x, y, None)[0]
    assert torch.equal(_remembered(attack, model, x, y, None)[0], d1) and len(calls) == 1
    _remembered(attack, model, x[:8], y[:8], None)
    assert len(calls) == 2  # another batch
    with torch.no_grad():  # the same model object with its sign flipped: the correct points are now the wrong ones
        model.w.neg_()
        model.b.neg_()
    d2 = _remembered(attack, model, x, y, None)[0]
    assert len(calls) == 3
    assert bool((d2[d1 > 0] == 0).all()) and bool((d2[d1 == 0] > 0).all())
