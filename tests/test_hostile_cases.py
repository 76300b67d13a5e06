"""Every hostile invocation the fault-and-fuzz audit listed, as a regression list: each is refused with exactly one
line ``error: ...`` and exit code 2 (no traceback, no success), and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from advbench import api, runs
from advbench.cli import main

FAST = ["--epochs", "1", "--n-train", "24", "--batch-size", "24", "--device", "cpu", "--quiet", "--set", "val_n=8",
        "--set", "data.n_train=60", "--set", "data.n_test=16"]

TRAIN_CASES = [
    (["--seed", "99999999999999999999"], "out of range"),
    (["--set", "weight_decay=-1"], "weight_decay"),
    (["--device", "mps"], "not supported"),
    (["--model", "m" * 5000], "unknown model"),
    (["--dataset", "d" * 5000], "unknown dataset"),
    (["--name", "n" * 5000], "bytes long"),
    (["--out", "/dev/null"], "not a directory"),
    (["--out", "/proc/advbench-x"], "--out"),
    (["--lr", "nan"], "finite"), (["--lr", "inf"], "finite"), (["--lr", "1e400"], "finite"),
    (["--set", "momentum=nan"], "finite"), (["--set", "momentum=1e400"], "finite"),
    (["--eps", "2"], "above 1"), (["--eps", "255/8"], "above 1"), (["--eps", "1e-400"], "rounds to 0"),
    (["--eps", " 8/255"], "without spaces"), (["--eps", "8 /255"], "without spaces"),
    (["--epochs", "1e12"], "epochs"), (["--set", "epochs=1000000000000"], "epochs"),
    (["--model", "SMALL-CNN"], "did you mean 'small-cnn'"),
    (["--defense", "pgd-at", "--set", "steps=99999999999999999999"], "out of range"),
    (["--defense", "grad-reg", "--compile"], "double backward"),
    (["--amp", "fp16"], "needs CUDA"),
    (["--name", "../../x"], "one folder name"), (["--name", "."], "one folder name"),
]


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("keep")
    return tmp_path


def _refused(capsys, argv: list[str], needle: str, work: Path) -> None:
    before = sorted(str(p) for p in work.rglob("*"))
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, code, err)
    assert needle in lines[0], (needle, lines[0])
    assert sorted(str(p) for p in work.rglob("*")) == before, "a refused command wrote something"


@pytest.mark.parametrize("extra,needle", TRAIN_CASES, ids=[" ".join(c[0])[:40] for c in TRAIN_CASES])
def test_train_refuses(capsys, work, extra, needle):
    _refused(capsys, ["train", *FAST, "--out", "runs", *extra], needle, work)


def test_out_that_is_a_file_is_refused_and_kept(capsys, work):
    _refused(capsys, ["train", *FAST, "--out", "a-file"], "not a directory", work)
    assert (work / "a-file").read_text() == "keep"


@pytest.mark.parametrize("toml,needle", [
    ("eps = 8\n", "above 1"),
    ("epochs = 'many'\n", "expected an integer"),  # also given as a flag below: still refused
    ("a = 1\n" + "[x]\n" * 0 + "b = " + "[" * 200 + "]" * 200 + "\n", "config key"),
    ("[defense.nested]\nx = 1\n", "nested table"),
    ("[weird]\nx = 1\n", "not a recipe table"),
])
def test_recipe_files_are_checked(capsys, work, toml, needle):
    (work / "r.toml").write_text(toml)
    _refused(capsys, ["train", *FAST, "--out", "runs", "--config", "r.toml", "--epochs", "1"], needle, work)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("r")
    run_dir, _ = api.train(out=root, name="run", defense="standard", dataset="synthetic", epochs=1, n_train=24,
                           batch_size=24, device="cpu", settings={"val_n": 8, "data.n_train": 60, "data.n_test": 16})
    return run_dir


ATTACK_CASES = [
    (["--suite", ""], "unknown suite ''"), (["--attack", ""], "unknown attack ''"),
    (["--suite", "PGD"], "did you mean 'pgd'"),
    (["--attack", "pgd", "--set", "step_size=nan"], "finite"),
    (["--attack", "pgd", "--set", "steps=99999999999999999999"], "out of range"),
    (["--device", "mps"], "not supported"), (["--eps", "2"], "above 1"),
]


@pytest.mark.parametrize("extra,needle", ATTACK_CASES, ids=[" ".join(c[0])[:40] for c in ATTACK_CASES])
def test_attack_refuses(capsys, work, run, extra, needle):
    _refused(capsys, ["attack", str(run), "--n-eval", "8", "--quiet", *extra], needle, work)


@pytest.mark.parametrize("spec,needle", [(":", "must be"), ("", "must be"), ("..:x", "not a module name"),
                                         ("torch.nn:Identity", "must return logits"),
                                         ("torch.nn:Linear", "factory raised")])
def test_model_module_refuses(capsys, work, spec, needle):
    _refused(capsys, ["attack", "--model-module", spec, "--dataset", "synthetic", "--n-eval", "8", "--out", "o"],
             needle, work)


def test_reproduce_dry_run_checks_device_and_seeds(capsys, work):
    _refused(capsys, ["reproduce", "soar", "--table", "1", "--dry-run", "--device", "mps"], "not supported", work)
    _refused(capsys, ["reproduce", "soar", "--table", "1", "--dry-run", "--seeds", "abc"], "expected an integer",
             work)
    _refused(capsys, ["reproduce", "soar", "--table", "1", "--dry-run", "--seeds", "1,1"], "twice", work)


def test_paper_grid_beside_a_run_of_another_table(capsys, work, run):
    """A run that belongs to no cell of the grid: the published grid shows, measured cells empty."""
    code = main(["report", str(run.parent), "--grid", "soar:table1", "--paper"])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_resume_with_non_object_metric_lines(capsys, work, run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with open(copy / "metrics.jsonl", "a") as fh:
        fh.write("[1]\n3\n\"s\"\nnull\n")
    code = main(["train", "--resume", str(copy), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert runs.read_json(copy / "summary.json")["status"] == "completed"


def test_published_grid_without_any_runs(capsys, work):
    """`report --grid T --paper` in a folder with no runs shows the published grid, measured cells empty."""
    code = main(["report", "--grid", "soar:table1", "--paper"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "WideResNet / ADV" in out and "— / 45.64" in out  # the published PGD20 of ADV, nothing measured


def test_attack_with_no_run_attacks_every_finished_run(capsys, work, run):
    """The design card's `advbench attack --suite autoattack`: no RUN means every finished run under ./runs
    (listed first); a second call reuses the stored results and says so."""
    import shutil

    shutil.copytree(run, work / "runs" / "one")
    shutil.copytree(run, work / "runs" / "two")
    code = main(["attack", "--attack", "fgsm", "--n-eval", "8", "--batch-size", "8", "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "attacking 2 finished run(s)" in out
    assert all((work / "runs" / r / "attacks" / "adhoc-fgsm.json").is_file() for r in ("one", "two"))
    code = main(["attack", "--attack", "fgsm", "--n-eval", "8", "--batch-size", "8", "--quiet", "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("reused the stored result") == 2


@pytest.mark.parametrize("extra,needle", [(["--suite", "pgd", "--attack", "fgsm"], "not both"),
                                          (["--checkpoint", ""], "--checkpoint is empty")])
def test_attack_options_that_were_silently_ignored(capsys, work, run, extra, needle):
    _refused(capsys, ["attack", str(run), "--n-eval", "8", *extra], needle, work)


def test_attack_with_no_run_and_no_runs_folder(capsys, work):
    _refused(capsys, ["attack", "--suite", "pgd"], "no runs folder", work)


@pytest.mark.parametrize("argv,needle", [(["--model", "foo"], "write robustbench:NAME"),
                                         (["--model", "robustbench:NoSuchModel2020"], "RobustBench has no")])
def test_attack_model_by_zoo_name_refuses_in_one_line(capsys, work, argv, needle):
    _refused(capsys, ["attack", *argv, "--n-eval", "4"], needle, work)
