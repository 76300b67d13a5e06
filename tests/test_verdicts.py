"""--adapt end to end, the checklist checks, per-result verdicts and the report's verdict column.

Oracles: the plain model's accuracy under the same suite (an adapted masked model must come within a few
points of it), exact per-image subset relations (EOT-PGD fooled sets grow with steps), and hand-built
result records whose right verdict is known.
"""

from __future__ import annotations

import pytest
import torch
from test_adaptive import NoisyInput, masked_models
from test_attacks_models import small_problem

from advbench import api
from advbench.attacks import Suite, SuiteEntry
from advbench.core.signals import Interrupted, StopFlag
from advbench.engine.checklist import run_all_checks
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.engine.verdict import attach_verdicts
from advbench.report import comparison_grid, load_frame

CPU = torch.device("cpu")
SUITE = Suite("mini", (SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-10", "pgd", {"steps": 10}),
                       SuiteEntry("PGD-40", "pgd", {"steps": 40})))


def _job(adapt: bool, n: int = 128, suite: Suite = SUITE) -> EvalJob:
    from advbench.threat import ThreatModel

    return EvalJob(suite, [ThreatModel.parse("8/255")], n_eval=n, batch_size=64, adapt=adapt)


def _checks(res):
    return {c["name"]: c for c in res["checks"]["checks"]}


def test_adapt_flags_every_masked_model_and_brings_it_to_the_plain_models_robust_accuracy(tmp_path):
    net, x, y = small_problem(128)
    plain = evaluate_suite(net, (x, y), _job(True), tmp_path / "plain" / "attacks" / "mini.json", device=CPU)
    assert plain["checks"]["status"] == "pass", plain["checks"]["flagged"]
    assert plain["adapt"]["entries"] == [] and plain["adapt"]["masking"] == {}
    assert all(r["verdict"]["summary"] == "trustworthy" for r in plain["results"] + plain["robust"])
    reference = plain["robust"][0]["accuracy"]
    expected = {"randomized": "EOT", "quantized": "BPDA prep", "saturated": "DLR", "numpy-blur": "BPDA prep"}
    kinds = {"randomized": "randomized", "quantized": "non-differentiable", "saturated": "saturated",
             "numpy-blur": "non-differentiable"}
    for name, model in masked_models(net).items():
        res = evaluate_suite(model, (x, y), _job(True), tmp_path / name / "attacks" / "mini.json", device=CPU)
        assert res["checks"]["status"] == "fail" and list(res["checks"]["masking"]) == [kinds[name]], name
        (entry,) = res["adapt"]["entries"]
        assert expected[name] in entry, entry
        adaptive = [r for r in res["results"] if r.get("adaptive")]
        assert [r["label"] for r in adaptive] == [entry]
        assert res["robust"][0]["attacks"] == ["FGSM", "PGD-10", "PGD-40"]  # the unadapted worst case
        unadapted, adapted = res["robust"][0], res["adapted"][0]
        assert adapted["unadapted_accuracy"] == unadapted["accuracy"]
        assert abs(adapted["accuracy"] - reference) <= 0.06, (name, adapted["accuracy"], reference)
        assert adapted["verdict"]["status"] == "trustworthy" and adaptive[0]["verdict"]["status"] == "trustworthy"
        assert unadapted["verdict"]["status"] == "likely-inflated", name
        assert "adapted worst case" in unadapted["verdict"]["summary"]
        assert _checks(res)["adaptive_coverage"]["status"] == "pass"
        assert _checks(res)["adaptive_large_eps"]["values"]["attacks"][0]["accuracy"] <= 0.02
        if name != "randomized":  # a randomized model's single noisy passes inflate *and* deflate it
            assert unadapted["accuracy"] > reference + 0.3, name


def test_without_adapt_a_masked_model_reads_likely_inflated_with_the_remedy(tmp_path):
    net, x, y = small_problem(128)
    res = evaluate_suite(masked_models(net)["saturated"], (x, y), _job(False), tmp_path / "attacks" / "mini.json",
                         device=CPU)
    assert "adapted" not in res and "adapt" not in res
    assert _checks(res)["adaptive_coverage"]["status"] == "fail"
    for r in res["results"] + res["robust"]:
        assert r["verdict"]["summary"].startswith("likely inflated: gradients masked (saturated logits)")
        assert r["verdict"]["summary"].endswith("run with --adapt")
    # AutoAttack's own checks (stored beside ours) do not see saturated logits; ours do
    assert _checks(res)["autoattack_flags"]["status"] == "pass" and _checks(res)["zero_gradients"]["status"] == "fail"


def test_eot_pgd_accuracy_is_non_increasing_in_steps_where_plain_pgd_rises(tmp_path):
    net, x, y = small_problem(128)
    steps = (5, 10, 20, 40)
    suite = Suite("mono", tuple([SuiteEntry(f"PGD-{k}", "pgd", {"steps": k}) for k in steps]
                                + [SuiteEntry(f"EOT-PGD-{k}", "adaptive-pgd", {"steps": k, "eot_samples": 5,
                                                                               "verdict_samples": 8})
                                   for k in steps]))
    res = evaluate_suite(NoisyInput(net).eval(), (x, y), _job(False, suite=suite), tmp_path / "attacks" / "m.json",
                         device=CPU)
    eot = [r for r in res["results"] if r["attack"] == "adaptive-pgd"]
    for fewer, more in zip(eot, eot[1:], strict=False):
        assert more["accuracy"] <= fewer["accuracy"]
        assert all(b <= a for a, b in zip(fewer["correct"], more["correct"], strict=True))  # fooled stays fooled
    pgd = [r["accuracy"] for r in res["results"] if r["attack"] == "pgd"]
    assert max(pgd[1:]) > pgd[0] or max(pgd[2:]) > pgd[1]  # plain PGD's noisy verdict rises with steps
    mono = _checks(res)["monotone_steps"]
    assert mono["status"] != "pass"
    assert all(p["increase"] <= 0 for p in mono["values"]["pairs"] if p["stronger"].startswith("EOT"))
    assert eot[-1]["verdict"]["status"] == "trustworthy"
    assert all(r["verdict"]["status"] == "likely-inflated" for r in res["results"] if r["attack"] == "pgd")


def test_a_model_at_chance_level_is_reported_as_such(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(200, 3, 8, 8)
    y = torch.arange(200) % 10  # balanced: chance is 10%
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0))  # always class 9: 10% clean
    res = evaluate_suite(model, (x, y), _job(False, n=200), tmp_path / "attacks" / "mini.json", device=CPU)
    chance = _checks(res)["chance_level"]
    assert chance["status"] == "fail" and res["checks"]["status"] == "fail"
    assert chance["values"]["chance"] == pytest.approx(0.1) and chance["values"]["clean_accuracy"] == pytest.approx(0.1)
    assert all(r["verdict"]["summary"].startswith("not meaningful: model at chance level")
               for r in res["results"] + res["robust"])
    net, xs, ys = small_problem(128)
    trained = evaluate_suite(net, (xs, ys), _job(False), tmp_path / "t" / "attacks" / "mini.json", device=CPU)
    assert _checks(trained)["chance_level"]["status"] == "pass"


def _record(results, clean=(1,) * 10):
    """A result record with 10 images for hand-made attack rows ``(label, attack, kind, options, correct)``."""
    rows = []
    for label, attack, kind, options, correct in results:
        rows.append({"key": label, "label": label, "attack": attack, "kind": kind, "options": options, "norm": "linf",
                     "eps": "8/255", "eps_float": 8 / 255, "n": len(correct), "correct": list(correct),
                     "accuracy": sum(correct) / len(correct), "x_range": [0.0, 1.0], "max_perturbation": 0.0})
    robust = [{"norm": "linf", "eps": "8/255", "eps_float": 8 / 255, "n": 10, "attacks": [r["key"] for r in rows],
               "correct": [int(all(v)) for v in zip(clean, *[r["correct"] for r in rows], strict=True)]}]
    robust[0]["accuracy"] = sum(robust[0]["correct"]) / 10
    return {"clean": {"accuracy": sum(clean) / 10, "n": 10, "correct": list(clean)}, "results": rows,
            "robust": robust}


def _verdicts(record, probe=None):
    record["checks"] = run_all_checks(record, probe, None, None, None)
    attach_verdicts(record)
    return {r["key"]: r["verdict"] for r in record["results"]}, record["robust"][0]["verdict"]


def test_checks_that_judge_the_attack_point_at_the_number_they_concern():
    ones, few = [1] * 10, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    # an iterative attack weaker than FGSM, and accuracy rising with steps
    v, worst = _verdicts(_record([("FGSM", "fgsm", "white-box", {}, few),
                                  ("PGD-10", "pgd", "white-box", {"steps": 10}, few),
                                  ("PGD-40", "pgd", "white-box", {"steps": 40}, ones)]))
    assert v["FGSM"]["status"] == "trustworthy" and v["PGD-10"]["status"] == "trustworthy"
    assert v["PGD-40"]["status"] == "likely-inflated"
    assert any("rises with more steps" in r["why"] for r in v["PGD-40"]["reasons"])
    assert any("weaker than single-step FGSM" in r["why"] for r in v["PGD-40"]["reasons"])
    assert worst["status"] == "trustworthy" and worst["trusted_by"] == ["FGSM", "PGD-10"]
    # not converged: twice the steps is clearly lower; a black-box attack beating the white-box one
    v, worst = _verdicts(_record([("PGD-10", "pgd", "white-box", {"steps": 10}, ones),
                                  ("PGD-40", "pgd", "white-box", {"steps": 40}, [1] * 6 + [0] * 4),
                                  ("Square", "square", "black-box", {}, few)]))
    assert v["PGD-10"]["summary"].startswith("likely inflated: not converged: PGD-40 is 40.0 points lower")
    assert any("black-box Square" in r["why"] for r in v["PGD-40"]["reasons"])
    assert v["Square"]["status"] == "trustworthy" and worst["status"] == "trustworthy"
    # a saturated model: the CE attack is not adapted, the DLR one is; without it the worst case is inflated too
    probe = {"n": 10, "large_eps_accuracy": 0.9, "large_eps": {}, "zero_grad_fraction": 1.0,
             "nonzero_grad_entries": 0.0, "margin_zero_grad_fraction": 0.0, "nondeterminism": 0.0, "num_classes": 10,
             "majority_fraction": 0.1, "input_min": 0.0, "input_max": 1.0, "autoattack_flags": [],
             "gradient_breakers": []}
    rows = [("PGD-10", "pgd", "white-box", {"steps": 10, "loss": "ce"}, ones),
            ("PGD-10-DLR", "pgd", "white-box", {"steps": 10, "loss": "dlr"}, few)]
    v, worst = _verdicts(_record(rows), probe)
    assert v["PGD-10"]["summary"] == "likely inflated: gradients masked (saturated logits); run with --adapt"
    assert v["PGD-10-DLR"]["status"] == "trustworthy" and worst["trusted_by"] == ["PGD-10-DLR"]
    v, worst = _verdicts(_record(rows[:1]), probe)
    assert worst["status"] == "likely-inflated" and worst["masking"] == ["saturated"]
    assert worst["reasons"][0]["why"].endswith("and no attack is adapted to it")


def test_attacks_declare_what_masking_they_suit():
    from advbench.engine.checklist import suited

    def s(attack, options=None, summary=None):
        return suited({"attack": attack, "options": options or {}, "summary": summary})

    assert s("pgd", {"loss": "ce"}) == set() and s("pgd", {"loss": "dlr"}) == {"saturated"}
    assert s("cw-inf") == {"saturated"} and s("scorpio-um") == {"saturated"} and s("scorpio-ul") == set()
    assert s("autoattack", summary={"components": ["apgd-ce", "apgd-t", "fab-t", "square"]}) == {"saturated"}
    assert s("apgd-ce") == set() and s("square") == set() and s("fgsm") == set()
    full = {"adaptations": {"randomized": True, "eot_samples": 10, "bpda": ["prep"], "bpda_ops": False}}
    assert s("adaptive-pgd", {"loss": "dlr"}, full) == {"randomized", "saturated", "non-differentiable",
                                                       "unexplained"}
    assert s("adaptive-pgd", {"loss": "ce"}, {"adaptations": {"randomized": False, "eot_samples": 1}}) == set()


def test_adapt_resumes_to_the_uninterrupted_result(tmp_path):
    net, x, y = small_problem(128)
    model = masked_models(net)["quantized"]
    full = evaluate_suite(model, (x, y), _job(True), tmp_path / "a" / "attacks" / "mini.json", device=CPU)
    flag = StopFlag()
    out = tmp_path / "b" / "attacks" / "mini.json"
    with pytest.raises(Interrupted):
        evaluate_suite(model, (x, y), _job(True), out, device=CPU, stop=flag,
                       batch_hook=lambda key, b: key.startswith("Adaptive") and flag.request("test"))
    resumed = evaluate_suite(model, (x, y), _job(True), out, device=CPU)
    strip = ("seconds", "created")
    for a, b in zip(full["results"] + full["adapted"], resumed["results"] + resumed["adapted"], strict=True):
        assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
    assert _job(True).fingerprint() != _job(False).fingerprint()


def test_report_shows_each_rows_verdict_in_plain_words(tmp_path):
    net, x, y = small_problem(96)
    kwargs = {"dataset": (x, y), "attack": "pgd", "attack_options": {"steps": 10}, "n_eval": 96, "batch_size": 96,
              "device": "cpu"}
    api.evaluate(net, out=tmp_path / "plain", name="plain", **kwargs)
    saturated = masked_models(net)["saturated"]
    api.evaluate(saturated, out=tmp_path / "sat", name="saturated", **kwargs)
    api.evaluate(saturated, out=tmp_path / "sat-adapted", name="saturated-adapted", adapt=True, **kwargs)
    frame = load_frame([tmp_path])
    assert set(frame["kind"]) == {"clean", "attack", "robust", "adapted"}
    grid = comparison_grid(frame)
    verdict = {str(row).rsplit("/", 1)[-1].strip(): v for row, v in zip(grid.index, grid["Verdict"], strict=True)}
    assert verdict["plain"] == "trustworthy"
    assert verdict["saturated"] == "likely inflated: gradients masked (saturated logits); run with --adapt"
    assert verdict["saturated-adapted"] == "adapted worst case trustworthy"
    assert "Worst case (adapted)" in grid.columns
    _, text = api.report([tmp_path])
    assert "likely inflated: gradients masked (saturated logits); run with --adapt" in text


_QUANTIZED_MODULE = '''
import torch
from torch import nn


class Quantize(nn.Module):
    def forward(self, x):
        return torch.round(x * 15) / 15


def make():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    return nn.Sequential(Quantize(), net)
'''


def test_cli_adapt_adds_the_bpda_attack_to_a_model_module_and_prints_verdicts(tmp_path, capsys):
    from advbench import runs
    from advbench.cli import main

    (tmp_path / "qmodel.py").write_text(_QUANTIZED_MODULE)
    code = main(["attack", "--model-module", f"{tmp_path / 'qmodel.py'}:make", "--dataset", "synthetic",
                 "--attack", "pgd", "--set", "steps=3", "--n-eval", "40", "--batch-size", "40", "--device", "cpu",
                 "--quiet", "--adapt", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    stored = runs.read_json(tmp_path / "out" / "attacks" / "adhoc-pgd.json")
    assert stored["adapt"]["entries"] == ["Adaptive PGD-100 (BPDA 0)"]  # the quantiser is submodule "0"
    assert "Worst case (adapted)" in out and "verdict" in out
    # an untrained 10-class model is at chance: every number says so, in the table too
    assert stored["robust"][0]["verdict"]["summary"].startswith("not meaningful: model at chance level")
    assert "not meaningful" in out


def test_chance_level_on_few_images_does_not_warn_a_perfect_model():
    """On 10 images even 100% lies within the warn band of a 50% majority class: that is "too few images", so a
    perfect model passes; a model at chance on 1000 images fails."""
    from advbench.engine.checklist import check_chance_level

    few = check_chance_level({"clean": {"n": 10, "accuracy": 1.0}}, {"num_classes": 10, "majority_fraction": 0.5})
    assert few.status == "pass"
    many = check_chance_level({"clean": {"n": 1000, "accuracy": 0.09}}, {"num_classes": 10, "majority_fraction": 0.1})
    assert many.status == "fail"
    middling = check_chance_level({"clean": {"n": 1000, "accuracy": 0.16}}, {"num_classes": 10,
                                                                             "majority_fraction": 0.1})
    assert middling.status == "warn"
