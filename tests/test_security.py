"""Nothing is written outside the folder the user named, no code runs that the user did not name on the command
line, and unsafe checkpoints are refused with one line of our own."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advbench import runs
from advbench.cli import main
from advbench.errors import UserError

TINY = ["--epochs", "1", "--n-train", "32", "--batch-size", "32", "--device", "cpu", "--quiet", "--set", "val_n=16",
        "--set", "data.n_train=100", "--set", "data.n_test=20"]


def _one_line_error(capsys, args: list[str], needle: str) -> None:
    code = main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name,needle", [
    ("../../x", "one folder name"),
    ("../escape", "one folder name"),
    ("a/b", "one folder name"),
    (".", "one folder name"),
    ("..", "one folder name"),
    ("", "one folder name"),
    ("x" * 5000, "bytes long"),
    ("tab\tname", "control characters"),
    (" padded", "leading/trailing"),
])
def test_run_name_is_one_safe_component(capsys, tmp_path, name, needle):
    out = tmp_path / "sandbox" / "runs"
    out.mkdir(parents=True)
    before = _files_under(tmp_path)
    _one_line_error(capsys, ["train", "--name", name, "--out", str(out), *TINY], needle)
    assert _files_under(tmp_path) == before  # nothing written anywhere


def test_absolute_name_does_not_escape_out(capsys, tmp_path):
    out = tmp_path / "runs"
    target = tmp_path / "elsewhere"
    _one_line_error(capsys, ["train", "--name", str(target), "--out", str(out), *TINY], "one folder name")
    assert not target.exists()


@pytest.mark.parametrize("out", ["/dev/null", "FILE", "/proc/advbench-x"])
def test_out_must_be_a_writable_folder(capsys, tmp_path, out):
    if out == "FILE":
        out = str(tmp_path / "a-file")
        Path(out).write_text("keep me")
    _one_line_error(capsys, ["train", "--out", out, *TINY], "--out")
    if out.endswith("a-file"):
        assert Path(out).read_text() == "keep me"


def test_create_run_dir_is_atomic_and_stays_inside(tmp_path):
    a = runs.create_run_dir(tmp_path, "same")
    b = runs.create_run_dir(tmp_path, "same")  # the name check and the mkdir are one step: the second gets -2
    assert a == tmp_path / "same" and b == tmp_path / "same-2" and a.is_dir() and b.is_dir()
    for bad in ("..", "a/../..", "/etc"):
        with pytest.raises(UserError):
            runs.create_run_dir(tmp_path, bad)


def test_two_trainings_with_one_name_at_the_same_moment_both_succeed(tmp_path):
    """Two processes racing for one --name: each gets its own folder (no FileExistsError).

    ``--fresh``, because without it the second process may legitimately reuse the first one's run when the first
    has already finished (the same configuration), which would leave one folder and test nothing."""
    import subprocess

    args = [sys.executable, "-m", "advbench", "train", "--fresh", "--name", "race", "--out", str(tmp_path), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race", "race-2"]


_EVIL = """
from pathlib import Path
Path({marker!r}).write_text("code ran")

def make():
    Path({marker!r}).write_text("factory ran")
    import torch
    return torch.nn.Flatten()
"""


def _external_folder(tmp_path: Path, spec: str) -> Path:
    folder = tmp_path / "handed-over"
    runs.write_json(folder / "config.json", {"kind": "external", "model_module": spec, "checkpoint": None,
                                             "config": {"dataset": "synthetic", "model": "m", "defense": "external:m"}})
    return folder


def test_attack_never_imports_code_named_by_a_results_folder(capsys, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(textwrap.dedent(_EVIL.format(marker=str(marker))))
    monkeypatch.chdir(tmp_path)  # the module sits in the working directory
    folder = _external_folder(tmp_path, "evilmod:make")
    _one_line_error(capsys, ["attack", str(folder), "--n-eval", "4", "--device", "cpu"],
                    "does not run code named in a results folder")
    assert not marker.exists() and "evilmod" not in sys.modules
    # nor as a transfer source
    _one_line_error(capsys, ["attack", str(folder), "--n-eval", "4"], "results folder")
    assert not marker.exists()


def test_a_stdlib_callable_named_in_a_results_folder_is_not_called(capsys, tmp_path, monkeypatch):
    import tempfile

    calls = []
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: calls.append(a) or "/tmp/x")
    folder = _external_folder(tmp_path, "tempfile:mkdtemp")
    _one_line_error(capsys, ["attack", str(folder), "--n-eval", "4", "--device", "cpu"], "results folder")
    assert calls == []


def test_the_working_directory_is_not_searched_for_model_modules(capsys, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    (tmp_path / "cwdmod.py").write_text(textwrap.dedent(_EVIL.format(marker=str(marker))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    _one_line_error(capsys, ["attack", "--model-module", "cwdmod:make", "--dataset", "synthetic", "--out",
                             str(tmp_path / "o")], "cannot import 'cwdmod'")
    assert not marker.exists() and str(tmp_path) not in sys.path


def test_a_model_file_named_on_the_command_line_is_loaded(capsys, tmp_path):
    (tmp_path / "mynet.py").write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                                       "    return torch.nn.Sequential(torch.nn.Flatten(), "
                                       "torch.nn.Linear(3 * 32 * 32, 10))\n")
    code = main(["attack", "--model-module", f"{tmp_path / 'mynet.py'}:make", "--dataset", "synthetic",
                 "--attack", "fgsm", "--n-eval", "8", "--batch-size", "8", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "res")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "res" / "attacks" / "adhoc-fgsm.json").is_file()


@pytest.mark.parametrize("spec,needle", [
    (":", "must be pkg.module:factory"),
    ("", "must be pkg.module:factory"),
    ("..:x", "is not a module name"),
    ("torch.nn:Linear", "factory raised"),  # a factory that needs arguments
    ("json:", "must be pkg.module:factory"),
    ("/nonexistent/file.py:make", "no such file"),
])
def test_model_module_specs_are_checked(capsys, tmp_path, spec, needle):
    _one_line_error(capsys, ["attack", "--model-module", spec, "--dataset", "synthetic", "--out",
                             str(tmp_path / "o"), "--device", "cpu"], needle)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_pickle_payload_checkpoint_is_refused_in_one_line_of_our_own(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(UserError) as err:
        runs.load_checkpoint(path)
    msg = str(err.value)
    assert "not a safe checkpoint" in msg and "refused" in msg and "weights_only" not in msg and "\n" not in msg
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError) as err:
        runs.load_checkpoint(path)
    assert "\n" not in str(err.value) and "refused" in str(err.value)
    assert pickle  # the payload class above is a pickle __reduce__ gadget


def test_written_files_respect_the_umask(tmp_path):
    """Atomic writes used to create every file 0600 whatever the umask; now they get 0666 less the umask."""
    old = os.umask(0o022)
    try:
        runs.write_json(tmp_path / "a.json", {"x": 1})
        runs.save_checkpoint(tmp_path / "c.pt", {"w": torch.zeros(2)})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        runs.write_json(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_version(capsys):
    from advbench import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"advbench {__version__}"
