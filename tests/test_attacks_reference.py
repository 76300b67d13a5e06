"""Our attacks against reference implementations: torchattacks (PGD, test-only) and pyautoattack called directly."""

from __future__ import annotations

import pytest
import torch
from test_attacks_models import small_problem

from advbench.attacks import SUITES, Suite, SuiteEntry, build_attack
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.threat import ThreatModel


@pytest.mark.parametrize("eps", ["2/255", "4/255", "8/255"])
def test_pgd_suite_agrees_with_torchattacks_within_one_point(eps, tmp_path):
    import torchattacks  # test-only reference (the "test" extra)
    model, x, y = small_problem(500)
    threat = ThreatModel.parse(eps)
    # our pgd suite's PGD-20 (step 2/255, uniform start, first-misclassified iterate), through the evaluation engine
    pgd20 = tuple(e for e in SUITES.get("pgd").entries if e.label == "PGD-20")
    job = EvalJob(Suite("pgd", pgd20), [threat], n_eval=500, batch_size=250, hygiene=False)
    ours = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "pgd.json", device=torch.device("cpu"))
    ours_acc = ours["results"][0]["accuracy"]
    torch.manual_seed(0)
    ref = torchattacks.PGD(model, eps=threat.eps, alpha=2 / 255, steps=20, random_start=True)
    x_ref = ref(x, y)
    with torch.no_grad():
        ref_acc = (model(x_ref).argmax(1) == y).float().mean().item()
    assert 0.05 < ref_acc < 0.95  # a regime where the two could disagree
    assert abs(ours_acc - ref_acc) <= 0.01
    # deterministic variant (no random start, last iterate): identical per sample
    mine = build_attack("pgd", threat, {"steps": 20, "step_size": "2/255", "init": "zero", "select": "last"})
    ref0 = torchattacks.PGD(model, eps=threat.eps, alpha=2 / 255, steps=20, random_start=False)
    x_ref0 = ref0(x, y)
    with torch.no_grad():
        ref_correct = model(x_ref0).argmax(1) == y
    assert torch.equal(mine(model, x, y).correct, ref_correct)


def _direct_autoattack(model, x, y, threat, **set_attrs):
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="Linf" if threat.norm == "linf" else "L2", eps=threat.eps, seed=0,
                    version="standard", device="cpu")
    aa.verbose = False
    for path, value in set_attrs.items():
        obj, attr = path.split(".")
        setattr(getattr(aa, obj), attr, value)
    _x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=len(x))
    return y_adv == y


def test_autoattack_equals_pyautoattack_called_directly_at_the_same_seed(tmp_path):
    model, x, y = small_problem(64)
    threat = ThreatModel.parse("6/255")
    job = EvalJob(Suite("aa", (SuiteEntry("AutoAttack", "autoattack", {"n_queries": 200}),)), [threat], n_eval=64,
                  batch_size=32, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "aa.json", device=torch.device("cpu"))
    # pyautoattack directly, on each evaluation batch, same seed (0) and settings (targets capped at classes - 1)
    overrides = {"square.n_queries": 200, "apgd_targeted.n_target_classes": 3, "fab.n_target_classes": 3}
    expected = torch.cat([_direct_autoattack(model, x[i:i + 32], y[i:i + 32], threat, **overrides) for i in (0, 32)])
    assert res["results"][0]["correct"] == [int(v) for v in expected.tolist()]
    assert 0 < res["results"][0]["accuracy"] < res["clean"]["accuracy"]
    summary = res["results"][0]["summary"]
    assert summary["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert summary["n_target_classes"] == 3 and summary["verdict_mismatch"] == 0
    assert summary["robust_after"]["square"] == pytest.approx(res["results"][0]["accuracy"])


def test_autoattack_on_a_linear_model_gives_the_analytic_accuracy(linear_problem):
    model, x, y, w, _b = linear_problem
    model, x = model.float(), x.float()
    threat = ThreatModel("linf", 8 / 255, "8/255")
    res = build_attack("autoattack", threat, {"n_queries": 100})(model, x, y)
    s = x.flatten(1) @ w.float() + model.b
    analytic = torch.where(y == 1, s, -s) > threat.eps * w.float().abs().sum()
    assert torch.equal(res.correct, analytic)
    # two classes: APGD-T's DLR loss is impossible; the adapter skips it and says so
    assert "apgd-t" in res.info["skipped"] and any("apgd-t skipped" in f for f in res.info["flags"])


def test_each_component_alone_is_no_stronger_than_the_ensemble_on_every_batch(tmp_path):
    model, x, y = small_problem(64)
    threat = ThreatModel.parse("4/255")
    entries = SUITES.get("autoattack-components").entries
    suite = Suite("both", (SuiteEntry("AA", "autoattack", {"n_queries": 150}),
                           *[SuiteEntry(e.label, e.attack, {"n_queries": 150} if e.attack == "square" else {})
                             for e in entries]))
    job = EvalJob(suite, [threat], n_eval=64, batch_size=32, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "both.json", device=torch.device("cpu"))
    by = {r["label"]: r["correct"] for r in res["results"]}
    for b in range(2):
        part = slice(32 * b, 32 * (b + 1))
        ensemble = sum(by["AA"][part])
        for label in ("APGD-CE", "APGD-T", "FAB-T", "Square"):
            assert sum(by[label][part]) >= ensemble, (label, b)


def test_smoke_autoattack_is_pyautoattack_custom_apgd_ce_and_apgd_t_on_3_target_classes(tmp_path):
    """The smoke variant of the autoattack suite (``autoattack-smokeN``): APGD-CE + APGD-T, 1 restart, APGD-T on 3
    target classes of 10; per image equal to pyautoattack called directly with those settings. An AutoAttack
    entry that names its own target classes keeps them."""
    from pyautoattack import AutoAttack

    import advbench.api  # noqa: F401  (installs the lookup of smoke suites)
    from advbench.papers.suites import ensure_suite

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(40, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image clean-correct
    threat = ThreatModel.parse("4/255")
    suite = SUITES.get(ensure_suite("autoattack-smoke40"))
    (entry,) = suite.entries
    assert entry.options["n_target_classes"] == 3 and entry.options["attacks"] == ["apgd-ce", "apgd-t"]
    assert "APGD-T on 3 target classes" in suite.description
    job = EvalJob(suite, [threat], n_eval=40, batch_size=40, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "aa.json", device=torch.device("cpu"))
    assert res["results"][0]["summary"]["n_target_classes"] == 3
    aa = AutoAttack(model, norm="Linf", eps=threat.eps, seed=0, version="custom", attacks=["apgd-ce", "apgd-t"],
                    device="cpu")
    aa.verbose = False
    aa.apgd.n_restarts = 1
    aa.apgd_targeted.n_target_classes = 3
    _x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=40)
    assert res["results"][0]["correct"] == [int(v) for v in (y_adv == y).tolist()]
    assert 0 < res["results"][0]["accuracy"] < 1  # a regime where a wrong setting could show
    # an entry with its own target classes keeps them in its smoke variant
    from advbench.papers.suites import _cheaper

    options, changed = _cheaper(SuiteEntry("AutoAttack", "autoattack", {"n_target_classes": 9}))
    assert options["n_target_classes"] == 9 and "9 target classes" in changed
