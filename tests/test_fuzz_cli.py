"""Property-based fuzzing of the command line (hypothesis): odd argument vectors and corrupted run folders.

Every invocation must either succeed (exit 0) or fail with exactly one line ``error: ...`` on stderr and exit
code 2: never a traceback, never an internal error, never a hang; and nothing may be written outside the
working folder's ``runs/`` (or the report file the command names). Bounded to about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advbench import api
from advbench.cli import main

#: values that have broken, or could break, a boundary: numbers out of range, non-finite, malformed paths
HOSTILE = ["", " ", "0", "-1", "1", "2", "nan", "inf", "-inf", "1e400", "1e-400", "99999999999999999999", "1e12",
           "100001", "8/255", "8/0", " 8/255", "8 /255", "255/8", "0.5", "abc", "../../x", "/", ".", "..", "x" * 300,
           "SMALL-CNN", "PGD", "mps", "cuda:7", "cpu", "/dev/null", "/proc/advbench-x", "true", "ε", "4/255,abc",
           ",", "a=b", "=", "steps=", "torch.nn:Linear", ":", "..:x", "-", "--", "%s", "{}", "[]", "linf", "l3"]
NAMES = {"--defense": ["standard", "pgd-at", "trades", "p-sat", "psat", "PGD-AT", ""],
         "--dataset": ["synthetic", "cifar10", "cifar11", ""], "--model": ["small-cnn", "SMALL-CNN", "resnet-18"],
         "--norm": ["linf", "l2", "L2", "l1"], "--format": ["markdown", "csv", "latex", "json", "html", "xml"],
         "--suite": ["pgd", "pgd-lite", "", "PGD", "autoattack", "nosuch"],
         "--attack": ["fgsm", "pgd", "", "PGD", "nosuch"], "--scale": ["smoke", "paper", "huge", ""]}
SET_KEYS = ["steps", "step_size", "beta", "weight_decay", "momentum", "lr", "data.n_train", "model.width", "select",
            "nosuch", "epochs", "data.data_seed", "restarts", "model.bn"]
FAST_TRAIN = ["--epochs", "1", "--n-train", "24", "--batch-size", "24", "--device", "cpu", "--quiet", "--set",
              "val_n=8", "--set", "val_attack_steps=1", "--set", "data.n_train=60", "--set", "data.n_test=16"]


#: --out names the folder runs go to: odd folders, never one outside the sandbox (the user may name any folder)
OUTS = ["runs", "", ".", "/dev/null", "/proc/advbench-x", "a-file", "sub/runs", "runs/../runs"]


def values(flag: str) -> st.SearchStrategy[str]:
    if flag == "--out":
        return st.sampled_from(OUTS)
    return st.sampled_from(NAMES.get(flag, []) + HOSTILE)


def named_outs(argv: list[str]) -> tuple[str, ...]:
    """The folders an argument vector names with --out (relative to the sandbox): writes there are allowed."""
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    return tuple("work" if o in ("", ".") else f"work/{Path(o)}" for o in outs if not o.startswith("/"))


def options(flags: list[str]) -> st.SearchStrategy[list[str]]:
    pair = st.sampled_from(flags).flatmap(lambda f: values(f).map(lambda v: [f, v]))
    set_pair = st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(HOSTILE)).map(lambda kv: ["--set", f"{kv[0]}="
                                                                                                       f"{kv[1]}"])
    return st.lists(st.one_of(pair, set_pair), max_size=3).map(lambda xs: [a for x in xs for a in x])


TRAIN_FLAGS = ["--defense", "--dataset", "--model", "--eps", "--norm", "--epochs", "--batch-size", "--lr", "--seed",
               "--n-train", "--name", "--out", "--device", "--amp"]
ATTACK_FLAGS = ["--suite", "--attack", "--eps", "--norm", "--n-eval", "--batch-size", "--seed", "--checkpoint",
                "--device", "--model-module", "--dataset"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One tiny finished run with a stored attack result, copied by the tests that corrupt it."""
    root = tmp_path_factory.mktemp("good")
    run, _ = api.train(out=root, name="run", defense="standard", dataset="synthetic", epochs=1, n_train=24,
                       batch_size=24, device="cpu", settings={"val_n": 8, "data.n_train": 60, "data.n_test": 16})
    api.attack(run, attack="fgsm", n_eval=16, batch_size=16, device="cpu")
    return run


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check(capsys, argv: list[str], sandbox: Path, allowed: tuple[str, ...] = ("work/runs",)) -> int:
    """Run ``advbench argv`` in ``sandbox/work``; assert the one-line-or-success contract and no stray writes."""
    before = _tree(sandbox)
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    if os.environ.get("ADVBENCH_FUZZ_LOG"):  # a campaign's record: one line per invocation
        with open(os.environ["ADVBENCH_FUZZ_LOG"], "a") as fh:
            fh.write(json.dumps({"argv": [a[:80] for a in argv], "code": code, "seconds": round(seconds, 3),
                                 "err": err.strip()[:300], "traceback": "Traceback" in err + out}) + "\n")
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "Traceback" not in out, (argv, err[-2000:])
    assert code in (0, 2), (argv, code, err[-2000:])
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err[-2000:])
    new = _tree(sandbox) - before
    stray = [p for p in new if not any(p == a or p.startswith(a + "/") for a in allowed)]
    assert not stray, (argv, sorted(stray)[:5])
    return code


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "a-file").write_text("keep")
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


#: examples per property; a campaign raises it (ADVBENCH_FUZZ_EXAMPLES=300 ADVBENCH_FUZZ_LOG=cases.jsonl)
SETTINGS = settings(max_examples=int(os.environ.get("ADVBENCH_FUZZ_EXAMPLES", 60)), deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(extra=options(TRAIN_FLAGS))
def test_fuzz_train(capsys, sandbox, extra):
    argv = ["train", *FAST_TRAIN, "--out", "runs", *extra]
    check(capsys, argv, sandbox, allowed=("work/runs", *named_outs(argv)))


@SETTINGS
@given(extra=options(ATTACK_FLAGS), which=st.sampled_from(["run", "none", "missing"]))
def test_fuzz_attack(capsys, sandbox, good_run, extra, which):
    run = sandbox / "work" / "runs" / "run"
    if not run.exists():
        shutil.copytree(good_run, run)
    target = {"run": [str(run)], "none": [], "missing": [str(sandbox / "work" / "runs" / "nope")]}[which]
    argv = ["attack", *target, "--attack", "fgsm", "--n-eval", "8", "--batch-size", "8", "--quiet", "--device", "cpu",
            *extra]
    if "--model-module" in extra:
        argv += ["--out", "runs/ext"]
    check(capsys, argv, sandbox, allowed=("work/runs", *named_outs(argv)))


@SETTINGS
@given(cmd=st.sampled_from([["report"], ["report", "runs"], ["show"], ["list"], ["reproduce"],
                            ["reproduce", "soar", "--dry-run"], ["reproduce", "sat", "--table", "2", "--dry-run"]]),
       extra=st.lists(st.sampled_from(HOSTILE + ["--format", "--grid", "--paper", "--table", "--seeds", "--rows",
                                                 "--scale", "--device", "--list", "soar:table1", "sat:2"]),
                      max_size=4))
def test_fuzz_report_show_list_reproduce(capsys, sandbox, good_run, cmd, extra):
    if not (sandbox / "work" / "runs" / "run").exists():
        shutil.copytree(good_run, sandbox / "work" / "runs" / "run")
    argv = [*cmd, *extra]
    if cmd[0] == "reproduce" and "--dry-run" not in argv:
        argv.append("--dry-run")  # planning only: a fuzzed reproduce must not start training
    check(capsys, argv, sandbox, allowed=("work/runs", "work/report.md"))


CORRUPTIONS = {
    "config.json": ["", "[]", "{}", '{"config": []}', '{"config": {"eps": 5}}', "garbage{", "null",
                    '{"config": {"dataset": "nope"}}',
                    '{"kind": "external", "model_module": "os:getcwd", "config": {}}'],
    "summary.json": ["", "[]", "{", "3"],
    "metrics.jsonl": ["[1]\n3\ngarbage\n\"s\"\n"],
    "attacks/adhoc-fgsm.json": ["", "[]", "{}", '{"results": 5}', '{"results": [{"x": 1}], "clean": 3}'],
    "attacks/.adhoc-fgsm.partial.json": ["", "[]", '{"done": 5}'],
    "checkpoints/best.pt": ["garbage", None],
    "checkpoints": [None],
}
COMMANDS = [["show", "{run}"], ["report", "{root}"], ["report", "{run}", "--format", "csv"],
            ["attack", "{run}", "--attack", "fgsm", "--n-eval", "8", "--batch-size", "8", "--quiet", "--device", "cpu"],
            ["attack", "{run}", "--attack", "pgd", "--set", "steps=1", "--n-eval", "8", "--quiet", "--device", "cpu"],
            ["train", "--resume", "{run}", "--quiet"]]


@pytest.mark.parametrize("rel,content", [(k, v) for k, vs in CORRUPTIONS.items() for v in vs])
def test_corrupted_run_folder(capsys, sandbox, good_run, rel, content):
    root = sandbox / "work" / "runs"
    run = root / "broken"
    shutil.copytree(good_run, run)
    shutil.copytree(good_run, root / "fine")
    target = run / rel
    if content is None:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for cmd in COMMANDS:
        argv = [a.format(run=run, root=root) for a in cmd]
        code = check(capsys, argv, sandbox)
        if cmd[:2] == ["report", "{root}"]:
            assert code == 0, (rel, content)  # a folder with one broken run still reports the others
