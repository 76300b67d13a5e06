"""Suites, the worst case, AutoAttack resume, hygiene checks, any-model evaluation (Python API and CLI), eval mode."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest
import torch
from test_attacks_models import QuantizedInput, SaturatedLogits, small_problem

from advbench import api, runs
from advbench.attacks import ATTACKS, SUITES, Suite, SuiteEntry, build_attack
from advbench.attacks.base import AttackContext
from advbench.cli import main
from advbench.core.signals import Interrupted, StopFlag
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.threat import ThreatModel

CPU = torch.device("cpu")


def _labels(name):
    return [(e.label, e.attack) for e in SUITES.get(name).entries]


def test_suites_record_exactly_the_papers_attacks():
    assert _labels("pgd") == [("FGSM", "fgsm"), ("PGD-20", "pgd"), ("PGD-100", "pgd"), ("PGD-200", "pgd"),
                              ("PGD-1000", "pgd"), ("PGD-20-50", "pgd")]
    pgd = {e.label: e.options for e in SUITES.get("pgd").entries}
    assert pgd["PGD-20-50"] == {"steps": 20, "step_size": "2/255", "restarts": 50}
    assert all(o.get("step_size") == "2/255" for k, o in pgd.items() if k != "FGSM")
    assert _labels("pgd-lite") == [("FGSM", "fgsm"), ("PGD-20", "pgd"), ("PGD-100", "pgd")]
    assert "step_size" not in {k for e in SUITES.get("pgd-lite").entries for k in e.options}  # eps/4
    assert _labels("autoattack") == [("AutoAttack", "autoattack")]
    assert _labels("autoattack-components") == [("APGD-CE", "apgd-ce"), ("APGD-T", "apgd-t"), ("FAB-T", "fab-t"),
                                                ("Square", "square")]
    assert [a for _, a in _labels("blackbox")] == ["simba", "square", "transfer", "transfer", "transfer"]
    assert _labels("scorpio") == [("UL", "scorpio-ul"), ("TL", "scorpio-tl"), ("UM", "scorpio-um"),
                                  ("TM", "scorpio-tm")]
    rat = SUITES.get("rat").entries
    assert [(e.label, e.attack, e.eps) for e in rat] == [("PGD-20", "pgd", "0.031"), ("CW-20", "cw-inf", "0.031"),
                                                         ("AA", "autoattack", None)]
    assert rat[0].options["step_size"] == rat[1].options["step_size"] == 0.003
    assert [(e.attack, e.norm) for e in SUITES.get("distance").entries] == [("best-of", "linf"), ("best-of", "l2")]
    assert [(e.attack, e.norm) for e in SUITES.get("distance-pgd").entries] == [("min-dist", "linf"),
                                                                                 ("min-dist", "l2")]
    quick = SUITES.get("quick").entries
    assert [e.label for e in quick] == ["FGSM", "PGD-20", "APGD-CE+T"] and quick[2].subset == 200
    assert quick[2].options["attacks"] == ["apgd-ce", "apgd-t"]
    for name in ("fgsm", "pgd", "cw-inf", "autoattack", "apgd-ce", "apgd-t", "fab-t", "square", "simba", "transfer",
                 "rays", "min-dist", "scorpio-ul", "scorpio-tl", "scorpio-um", "scorpio-tm"):
        assert name in ATTACKS


def test_worst_case_is_the_and_of_clean_and_every_attack_per_budget(tmp_path):
    model, x, y = small_problem(60)
    suite = Suite("mix", (SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-5", "pgd", {"steps": 5}),
                          SuiteEntry("CW-5@0.031", "cw-inf", {"steps": 5}, eps="0.031"),
                          SuiteEntry("PGD-5-sub", "pgd", {"steps": 5, "loss": "dlr"}, subset=40)))
    threats = [ThreatModel.parse("2/255"), ThreatModel.parse("6/255")]
    job = EvalJob(suite, threats, n_eval=60, batch_size=25, hygiene=False)
    res = evaluate_suite(model, (x, y), job, tmp_path / "attacks" / "mix.json", device=CPU)
    keys = [r["key"] for r in res["results"]]
    assert keys == ["FGSM@2/255", "PGD-5@2/255", "CW-5@0.031@0.031", "PGD-5-sub@2/255", "FGSM@6/255",
                    "PGD-5@6/255", "PGD-5-sub@6/255"]
    clean = res["clean"]["correct"]
    for rb in res["robust"]:
        members = [r for r in res["results"] if (r["norm"], r["eps"]) == (rb["norm"], rb["eps"])]
        m = min(r["n"] for r in members)
        expected = [int(all(v)) for v in zip(clean[:m], *[r["correct"][:m] for r in members], strict=True)]
        assert rb["correct"] == expected and rb["n"] == m
        assert rb["accuracy"] == pytest.approx(sum(expected) / m)
        assert rb["attacks"] == [r["key"] for r in members]
    assert {(rb["eps"], rb["n"]) for rb in res["robust"]} == {("2/255", 40), ("0.031", 60), ("6/255", 40)}
    assert json.loads((tmp_path / "attacks" / "mix.json").read_text())["robust"] == res["robust"]


def _aa_job(n=32, bs=16):
    suite = Suite("autoattack", (SuiteEntry("AutoAttack", "autoattack", {"n_queries": 100}),))
    return EvalJob(suite, [ThreatModel.parse("6/255")], n_eval=n, batch_size=bs, hygiene=False)


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after the raise runs except ``finally`` blocks."""


def test_autoattack_killed_mid_batch_resumes_to_the_uninterrupted_result(tmp_path):
    model, x, y = small_problem(32)
    full = evaluate_suite(model, (x, y), _aa_job(), tmp_path / "full" / "attacks" / "autoattack.json", device=CPU)
    out = tmp_path / "run" / "attacks" / "autoattack.json"
    state_dir = out.with_name(".autoattack.state")
    seen = []

    def kill_after_second_component(event, key, batch, component):
        seen.append((batch, component))
        if batch == 1 and component == "apgd-t":
            raise _Killed

    with pytest.raises(_Killed):
        evaluate_suite(model, (x, y), _aa_job(), out, device=CPU,
                       context=AttackContext(hook=kill_after_second_component))
    # the killed batch left AutoAttack's state inside the run directory: two components done
    state = runs.read_json(state_dir / "AutoAttack.b1.json")
    assert state["done"] == ["apgd-ce", "apgd-t"] and len(state["robust"]) == 16
    assert (out.parent / ".autoattack.partial.json").is_file()
    resumed_events = []
    res = evaluate_suite(model, (x, y), _aa_job(), out, device=CPU,
                         context=AttackContext(hook=lambda event, **kw: resumed_events.append(kw["component"])))
    assert resumed_events == ["fab-t", "square"]  # batch 0 came from the partial file, batch 1 from its state
    assert res["results"][0]["correct"] == full["results"][0]["correct"]
    assert res["results"][0]["per_sample"]["fooled_by"] == full["results"][0]["per_sample"]["fooled_by"]
    assert res["results"][0]["summary"]["resumed_batches"] == 1
    assert not state_dir.exists() and not (out.parent / ".autoattack.partial.json").exists()


def test_autoattack_torn_state_file_restarts_the_batch_with_the_same_result(tmp_path):
    model, x, y = small_problem(16)
    job = _aa_job(16, 16)
    full = evaluate_suite(model, (x, y), job, tmp_path / "a" / "attacks" / "autoattack.json", device=CPU)
    out = tmp_path / "b" / "attacks" / "autoattack.json"
    state_dir = out.with_name(".autoattack.state")
    state_dir.mkdir(parents=True)
    (state_dir / "AutoAttack.b0.json").write_text('{"format": "advbench-autoattack-state-v1", "done": ["apg')
    res = evaluate_suite(model, (x, y), job, out, device=CPU)
    assert res["results"][0]["correct"] == full["results"][0]["correct"]


def test_autoattack_stopped_between_batches_resumes_through_the_api(tmp_path):
    model, x, y = small_problem(32)
    kwargs = {"dataset": (x, y), "attack": "autoattack", "attack_options": {"n_queries": 100}, "n_eval": 32,
              "batch_size": 16, "eps": "6/255", "device": "cpu", "hygiene": False}
    first = api.evaluate(model, out=tmp_path / "a", **kwargs)
    flag = StopFlag()
    with pytest.raises(Interrupted):
        api.evaluate(model, out=tmp_path / "b", stop=flag, batch_hook=lambda key, b: key != "clean" and
                     flag.request("test"), **kwargs)
    second = api.evaluate(model, out=tmp_path / "b", **kwargs)
    assert second["results"][0]["correct"] == first["results"][0]["correct"]
    assert second["results"][0]["summary"]["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"]


def _checks(res):
    return {c["name"]: c for c in res["checks"]["checks"]}


def test_gradient_masked_models_are_flagged_and_the_normal_model_is_not(tmp_path):
    model, x, y = small_problem(128)
    suite = Suite("mini", (SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-10", "pgd", {"steps": 10}),
                           SuiteEntry("PGD-40", "pgd", {"steps": 40}),
                           SuiteEntry("Square", "square", {"n_queries": 300})))
    threat = ThreatModel.parse("4/255")
    normal = evaluate_suite(model, (x, y), EvalJob(suite, [threat], n_eval=128, batch_size=64),
                            tmp_path / "n" / "attacks" / "mini.json", device=CPU)
    assert normal["checks"]["status"] == "pass", normal["checks"]["flagged"]
    names = set(_checks(normal))
    assert {"robust_le_clean", "monotone_steps", "large_eps", "zero_gradients", "blackbox_vs_whitebox",
            "autoattack_flags", "eval_mode", "input_range"} <= names
    assert _checks(normal)["large_eps"]["values"]["accuracy"] <= 0.02
    for wrapper in (QuantizedInput(model), SaturatedLogits(model)):
        res = evaluate_suite(wrapper, (x, y), EvalJob(suite, [threat], n_eval=128, batch_size=64),
                             tmp_path / type(wrapper).__name__ / "attacks" / "mini.json", device=CPU)
        checks = _checks(res)
        assert res["checks"]["status"] == "fail"
        assert checks["zero_gradients"]["status"] == "fail" and checks["zero_gradients"]["values"][
            "zero_grad_fraction"] > 0.5
        assert checks["large_eps"]["status"] == "fail"
        assert checks["blackbox_vs_whitebox"]["status"] != "pass"  # Square beats PGD on a masked model
        assert checks["blackbox_vs_whitebox"]["values"]["worst"]["fooled_only_by_black_box"] > 0


class _DriftingBN(torch.nn.Module):
    """A model whose forward updates a buffer even in eval mode: attacks would change it."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class _RandomInEval(torch.nn.Module):
    """Randomised defence: noise on the input at test time."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


def test_eval_mode_and_input_range_checks(tmp_path):
    model, x, y = small_problem(32)
    suite = Suite("one", (SuiteEntry("PGD-3", "pgd", {"steps": 3}),))
    job = EvalJob(suite, [ThreatModel.parse("4/255")], n_eval=32, batch_size=32)
    drift = evaluate_suite(_DriftingBN(copy.deepcopy(model)), (x, y), job, tmp_path / "d" / "attacks" / "one.json",
                           device=CPU)
    assert _checks(drift)["eval_mode"]["status"] == "fail"
    rnd = evaluate_suite(_RandomInEval(model), (x, y), job, tmp_path / "r" / "attacks" / "one.json", device=CPU)
    assert _checks(rnd)["eval_mode"]["status"] == "warn" and _checks(rnd)["eval_mode"]["values"]["nondeterminism"] > 0
    scaled = evaluate_suite(model, (2 * x - 1, y), job, tmp_path / "s" / "attacks" / "one.json", device=CPU)
    assert _checks(scaled)["input_range"]["status"] == "fail"
    assert _checks(scaled)["input_range"]["values"]["input_min"] < 0
    ok = evaluate_suite(model, ((x * 255).round().to(torch.uint8), y), job, tmp_path / "u" / "attacks" / "one.json",
                        device=CPU)  # uint8 images are scaled to [0, 1] as the data loaders do
    assert _checks(ok)["input_range"]["status"] == "pass" and _checks(ok)["eval_mode"]["status"] == "pass"


_MODULE = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
"""


def test_cli_attacks_any_model_module_and_matches_the_python_api(tmp_path, capsys, monkeypatch):
    (tmp_path / "extmodels.py").write_text(textwrap.dedent(_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import extmodels

    net = extmodels.make()
    with torch.no_grad():
        net[3].bias.copy_(torch.arange(10.0) * 0.01)
    torch.save({"model": net.state_dict()}, tmp_path / "weights.pt")
    args = ["attack", "--model-module", "extmodels:make", "--checkpoint", str(tmp_path / "weights.pt"),
            "--dataset", "synthetic", "--suite", "pgd-lite", "--n-eval", "24", "--batch-size", "12",
            "--device", "cpu", "--quiet"]
    code = main([*args, "--out", str(tmp_path / "cli")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "PGD-100" in out and "checks:" in out
    stored = runs.read_json(tmp_path / "cli" / "attacks" / "pgd-lite.json")
    ref = api.evaluate(net, dataset="synthetic", suite="pgd-lite", n_eval=24, batch_size=12, device="cpu",
                       out=tmp_path / "py", name="make")
    assert [r["correct"] for r in ref["results"]] == [r["correct"] for r in stored["results"]]
    assert ref["clean"] == stored["clean"] and stored["checks"]["status"] in ("pass", "warn", "fail")
    assert set(stored) == set(ref)  # the same JSON layout
    # reports read the directory like a run, with the hygiene flag column
    grid, _ = api.report([tmp_path / "cli"])
    assert "Checks" in grid.columns and list(grid.index) == ["external:make"]
    # the results folder names its module, but attacking it by path does not run that code: the user types it
    code = main(["attack", str(tmp_path / "cli"), "--suite", "quick", "--n-eval", "8", "--quiet", "--device", "cpu"])
    assert code == 2 and "--model-module extmodels:make" in capsys.readouterr().err
    code = main(["attack", "--model-module", "extmodels:make", "--checkpoint", str(tmp_path / "weights.pt"),
                 "--dataset", "synthetic", "--out", str(tmp_path / "cli"), "--suite", "quick", "--n-eval", "8",
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["attack", "--model-module", "nosuchmodule_xyz:make", "--dataset", "synthetic"], "cannot import"),
    (["attack", "--model-module", "json:loads", "--dataset", "synthetic"], "factory raised"),
    (["attack", "--model-module", "json", "--dataset", "synthetic"], "must be pkg.module:factory"),
    (["attack", "--model-module", "json:dumps"], "needs --dataset"),
    (["attack"], "no RUN given"),
])
def test_cli_attack_errors_are_one_line(capsys, args, needle):
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_transfer_without_a_source_is_a_one_line_error(tmp_path, capsys):
    model, x, y = small_problem(8)
    with pytest.raises(Exception, match="needs source_model"):
        api.evaluate(model, dataset=(x, y), attack="transfer", n_eval=8, out=tmp_path, device="cpu")
    res = api.evaluate(model, dataset=(x, y), attack="transfer", attack_options={"steps": 2}, n_eval=8, out=tmp_path,
                       device="cpu", source=model, hygiene=False)
    assert res["transfer_source"] == {"model": "SmallNet"} and res["results"][0]["kind"] == "black-box"


_SMALL_BUDGETS = {"pgd": {"steps": 3}, "cw-inf": {"steps": 3}, "autoattack": {"n_queries": 20},
                  "square": {"n_queries": 20}, "simba": {"max_iters": 20}, "rays": {"max_queries": 60},
                  "min-dist": {"bisection": 3, "steps": 3}, "transfer": {"steps": 3},
                  "cw-l2": {"steps": 5, "search_steps": 2}, "deepfool": {"steps": 3},
                  "hopskipjump": {"iterations": 2, "init_evals": 10, "init_trials": 5},
                  "logbarrier": {"outer": 2, "inner": 3, "init_trials": 3},
                  "best-of": {"members": ["cw-l2", "deepfool"],
                              "member_options": {"cw-l2": {"steps": 5, "search_steps": 2}}},
                  "scorpio-ul": {"steps": 3}, "scorpio-tl": {"steps": 3}, "scorpio-um": {"steps": 3},
                  "scorpio-tm": {"steps": 3}}


class _BNDropNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 6 * 6, 4))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", sorted(ATTACKS.names()))
def test_every_attack_runs_in_eval_mode_stays_in_the_ball_and_leaves_the_model_unchanged(name):
    torch.manual_seed(0)
    model = _BNDropNet().train()
    x = torch.rand(6, 3, 6, 6)
    x[0] = 0.0
    y = torch.randint(0, 4, (6,))
    threat = ThreatModel.parse("8/255")
    before = copy.deepcopy(model.state_dict())
    ctx = AttackContext(source_model=copy.deepcopy(model).eval(), source={"model": "copy"})
    attack = build_attack(name, threat, _SMALL_BUDGETS.get(name, {}), ctx)
    res = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert float((res.x_adv - x).abs().max()) <= threat.eps + 1e-7
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    model.eval()
    with torch.no_grad():
        assert torch.equal(res.correct, model(res.x_adv).argmax(1) == y)
    assert res.forward > 0


_ROBUST_MODULE = """
import torch
from torch import nn


class AlwaysC(nn.Module):
    # small input-dependent logits plus a large bias on class C: every image is classified C and no
    # 8/255 perturbation changes that, so AutoAttack runs all its components on the class-C images
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.register_buffer("bias", 30.0 * nn.functional.one_hot(torch.tensor(C), 10).float())

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1)) + self.bias


def make():
    return AlwaysC()
"""


def test_autoattack_evaluation_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from advbench.data import load_splits

    labels = load_splits("synthetic", n_test=40).test.y
    common = int(torch.bincount(labels).argmax())  # the model predicts this class: its images are robust
    (tmp_path / "robustmod.py").write_text(f"C = {common}\n" + textwrap.dedent(_ROBUST_MODULE))
    base = [sys.executable, "-m", "advbench", "attack", "--model-module", "robustmod:make", "--dataset", "synthetic",
            "--attack", "autoattack", "--set", "n_queries=300", "--set", "n_target_classes=3", "--n-eval", "40",
            "--batch-size", "20", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out, **kw):
        return subprocess.run([*base, "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300, **kw)

    ref = run(tmp_path / "full")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*base, "--out", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    state_dir = out / "attacks" / ".adhoc-autoattack.state"
    deadline, killed_at = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        for f in state_dir.glob("*.json") if state_dir.is_dir() else []:
            try:
                done = json.loads(f.read_text())["done"]
            except (OSError, ValueError, KeyError):
                continue
            if 1 <= len(done) < 4:
                killed_at = (f.name, list(done))
                proc.send_signal(signal.SIGKILL)
                break
        if killed_at:
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the evaluation was not caught mid-way"
    assert not (out / "attacks" / "adhoc-autoattack.json").exists()
    resumed = run(out)
    assert resumed.returncode == 0, resumed.stderr
    full = runs.read_json(tmp_path / "full" / "attacks" / "adhoc-autoattack.json")["results"][0]
    again = runs.read_json(out / "attacks" / "adhoc-autoattack.json")["results"][0]
    assert again["correct"] == full["correct"] and again["per_sample"] == full["per_sample"]
    assert sum(again["correct"]) > 0 and again["summary"]["resumed_batches"] >= 1
