"""The command line: help, listing, one-line errors with exit code 2, and a full train/attack/report cycle."""

from __future__ import annotations

import pytest

from advbench.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,needle", [
    (["train", "--defense", "psatt"], "unknown defense 'psatt'"),
    (["train", "--defense", "pgd_att"], "did you mean 'pgd-at'"),
    (["train", "--eps", "8/0"], "invalid eps '8/0'"),
    (["train", "--eps", "abc"], "invalid eps 'abc'"),
    (["train", "--norm", "l3"], "invalid norm 'l3'"),
    (["train", "--set", "stepz=3", "--defense", "pgd-at"], "did you mean 'steps'"),
    (["train", "--set", "steps=many", "--defense", "pgd-at"], "expected an integer"),
    (["train", "--set", "noequals"], "write --set key=value"),
    (["train", "--epochs", "0"], "--epochs must be between 1 and"),
    (["train", "--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    (["train", "--model", "resnet-18"], "did you mean 'resnet18'"),
    (["train", "--config", "/nonexistent/recipe.toml"], "config file not found"),
    (["train", "--epochz", "3"], "No such option"),
    (["attack", "/nonexistent/run"], "run directory not found"),
    (["report", "/nonexistent/runs"], "no such run or directory"),
    (["list", "defences"], "did you mean 'defenses'"),
    (["train", "--resume", "/nonexistent/run"], "run directory not found"),
    (["train", "--device", "mps"], "device 'mps' is not supported"),
    (["train", "--device", "meta"], "is not supported"),
    (["train", "--device", "cpu:3"], "one CPU device"),
    (["train", "--device", "gpu"], "invalid device 'gpu'"),
    (["train", "--eps", "2"], "above 1"),
    (["train", "--eps", " 8/255"], "without spaces"),
    (["train", "--eps", "1e-400"], "rounds to 0"),
    (["train", "--lr", "nan"], "finite"),
    (["train", "--lr", "1e400"], "finite"),
    (["train", "--seed", "99999999999999999999"], "out of range"),
    (["train", "--set", "weight_decay=-1"], "weight_decay must be >= 0"),
    (["train", "--set", "momentum=nan"], "finite"),
    (["train", "--model", "SMALL-CNN"], "did you mean 'small-cnn'"),
    (["train", "--name", "../../x"], "one folder name"),
    (["attack", "--suite", "", "/nonexistent"], "run directory not found"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, args, needle):
    code, out, err = _run(capsys, *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0]


def test_missing_real_dataset_names_path_and_flag(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--quiet")
    assert code == 2 and str(tmp_path) in err and "--download" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["train", "attack", "certify", "report", "list", "show", "quickstart"])
def test_help_is_complete(capsys, cmd):
    code, out, _ = _run(capsys, cmd, "--help")
    assert code == 0 and "Usage" in out


def test_list(capsys):
    for what, name in (("defenses", "pgd-at"), ("attacks", "pgd"), ("suites", "pgd"), ("datasets", "synthetic"),
                       ("models", "preact-resnet18")):
        code, out, _ = _run(capsys, "list", what)
        assert code == 0 and name in out


def test_train_attack_report_show_cycle(capsys, tmp_path):
    common = ["--n-train", "192", "--batch-size", "64", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path),
              "--quiet", "--set", "val_n=32", "--set", "data.n_train=400", "--set", "data.n_test=100"]
    code, out, err = _run(capsys, "train", "--defense", "pgd-at", "--eps", "8/255", "--set", "steps=2",
                          "--name", "at", *common)
    assert code == 0, err
    assert "run:" in out
    run = tmp_path / "at"
    code, out, err = _run(capsys, "attack", str(run), "--suite", "pgd-lite", "--n-eval", "64", "--quiet")
    assert code == 0, err
    assert "PGD-20" in out and (run / "attacks" / "pgd-lite.json").is_file()
    code, out, err = _run(capsys, "attack", str(run), "--attack", "pgd", "--set", "steps=3", "--n-eval", "32",
                          "--eps", "4/255,8/255", "--quiet")
    assert code == 0, err
    code, out, err = _run(capsys, "report", str(tmp_path), "--format", "markdown")
    assert code == 0 and "pgd-at" in out and "Clean" in out
    code, out, err = _run(capsys, "show", str(run))
    assert code == 0 and "val robust" in out and "pgd-at" in out
    code, out, err = _run(capsys, "report", str(tmp_path), "--format", "xml")
    assert code == 2 and "unknown format 'xml'" in err
    code, out, err = _run(capsys, "attack", str(run), "--set", "steps=3")
    assert code == 2 and "needs --attack" in err


@pytest.mark.parametrize("name,key,needle", [
    ("trades", "beta", "6.0"), ("pgd", "steps", "20"), ("synthetic", "data.n_train", "number of generated"),
    ("resnet18", "model.bn", "True"),
])
def test_list_options_shows_every_set_key(capsys, name, key, needle):
    code, out, _ = _run(capsys, "list", "options", name)
    assert code == 0 and key in out and needle in out


def test_list_options_lists_every_field_of_every_defense_and_attack(capsys):
    import dataclasses

    from advbench.attacks import ATTACKS
    from advbench.defenses import DEFENSES

    for reg in (DEFENSES, ATTACKS):
        for name in reg.names():
            code, out, _ = _run(capsys, "list", "options", name)
            assert code == 0
            assert all(f.name in out for f in dataclasses.fields(reg.get(name).Options)), name
    code, _, err = _run(capsys, "list", "options")
    assert code == 2 and "needs a defense" in err


@pytest.mark.parametrize("cmd", ["train", "attack", "certify", "report", "reproduce", "list", "show", "quickstart"])
def test_help_shows_no_internal_metavars(capsys, cmd):
    code, out, _ = _run(capsys, cmd, "--help")
    assert code == 0
    for leak in ("<str>", "<path>", "<int>", "<float>", "<list[", "TEXT", "INTEGER"):
        assert leak not in out, (cmd, leak)
