"""RobustBench both ways: a run's AutoAttack result exported as a leaderboard entry that robustbench's own code reads,
and a zoo model (``robustbench:NAME``) loaded through the ``robustbench`` package from a checkpoint the test
writes into robustbench's local model folder, with one line when the weights cannot be fetched."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from fake_runs import write_run

from advbench import api
from advbench.cli import main
from advbench.errors import UserError

#: the fields of RobustBench's model_info JSON files and their types (its Linf/L2 leaderboards)
RB_FIELDS = {"link": str, "name": str, "authors": str, "additional_data": bool, "number_forward_passes": int,
             "dataset": str, "venue": str, "architecture": str, "eps": str, "clean_acc": str, "reported": str,
             "autoattack_acc": str, "footnote": str, "unreliable": bool}
_FLAGGED = {"status": "warn", "flagged": ["autoattack_flags"], "checks": [
    {"name": "autoattack_flags", "status": "warn", "message": "Square lowered the robust accuracy"}]}


def _aa_run(root, name="aa-run", checks=None, dataset="cifar10"):
    return write_run(root, name, "trades", autoattack=True, suite="autoattack", attacks={"AutoAttack": 0.53125},
                     clean=0.896875, n_eval=320, checks=checks, dataset=dataset, model="preact-resnet18")


def test_export_writes_robustbench_model_info_json(tmp_path):
    run = _aa_run(tmp_path / "runs")
    path, entry = api.export(run, out=tmp_path / "out", name="Me2026Robust", paper="A Robust Paper",
                             link="https://arxiv.org/abs/0000.00000", authors="A. Author, B. Author", venue="ICML 2026")
    assert path == tmp_path / "out" / "model_info" / "cifar10" / "Linf" / "Me2026Robust.json"
    stored = json.loads(path.read_text())
    assert stored == entry and list(stored) == list(RB_FIELDS)
    assert {k: type(v) for k, v in stored.items()} == RB_FIELDS
    assert (stored["clean_acc"], stored["autoattack_acc"], stored["eps"]) == ("89.69", "53.12", "8/255")
    assert (stored["name"], stored["architecture"], stored["number_forward_passes"]) == (
        "A Robust Paper", "preact-resnet18", 1)
    assert stored["unreliable"] is False and "first 320 test images" in stored["footnote"]
    flagged = _aa_run(tmp_path / "runs", "flagged", checks=_FLAGGED)
    _, entry = api.export(flagged, out=tmp_path / "out")
    assert entry["unreliable"] is True and "autoattack_flags" in entry["footnote"]


def test_robustbench_reads_the_exported_entry(tmp_path, monkeypatch, capsys):
    """robustbench's own ModelInfo takes the fields, and its leaderboard lister parses the file."""
    pytest.importorskip("pyautoattack")
    from advbench.api.zoo import _robustbench

    _robustbench()
    from robustbench.utils import ModelInfo, list_available_models

    run = _aa_run(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)  # robustbench reads ./model_info/<dataset>/<threat>/<zoo name>.json
    path, entry = api.export(run, out=tmp_path, name="Standard", paper="advbench run")
    ModelInfo(**{k: v for k, v in entry.items() if k != "unreliable"})  # every field is one of RobustBench's
    capsys.readouterr()
    list_available_models("cifar10", "Linf")
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "**Standard**" in ln)
    assert "89.69%" in row and "53.12%" in row and "advbench run" in row and "preact-resnet18" in row


def test_export_refuses_a_run_without_autoattack_and_the_cli_writes_the_file(tmp_path, capsys):
    plain = write_run(tmp_path / "runs", "plain", "standard")
    with pytest.raises(UserError, match="no AutoAttack .standard. result; RobustBench ranks by it"):
        api.export(plain, out=tmp_path)
    run = _aa_run(tmp_path / "runs", dataset="cifar100")
    assert main(["export", str(run), "--output", str(tmp_path / "o"), "--name", "X2026", "--venue", "V"]) == 0
    written = json.loads((tmp_path / "o" / "model_info" / "cifar100" / "Linf" / "X2026.json").read_text())
    assert written["venue"] == "V" and written["dataset"] == "cifar100"
    assert main(["export", str(run), "--format", "leaderboard"]) == 2
    assert "unknown export format 'leaderboard'" in capsys.readouterr().err


@pytest.fixture
def zoo(tmp_path):
    """A RobustBench zoo model (Wong2020Fast, a PreAct ResNet-18) with weights the test wrote into robustbench's
    model folder, and the model those weights came from."""
    from advbench.api.zoo import _robustbench

    _robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    reference = model_dicts[BenchmarkDataset("cifar10")][ThreatModel("Linf")]["Wong2020Fast"]["model"]().eval()
    folder = tmp_path / "rb-models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "Wong2020Fast.pt")
    return tmp_path / "rb-models", reference


def test_zoo_model_loads_from_robustbench_model_folder_and_is_evaluated(zoo, tmp_path):
    directory, reference = zoo
    model = api.load_zoo_model("robustbench:Wong2020Fast", dataset="cifar10", norm="linf", directory=directory)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))  # the very weights the test wrote
        y = reference(x).argmax(1)
    result = api.evaluate_zoo_model("robustbench:Wong2020Fast", dataset=(x, y), directory=directory, attack="fgsm",
                                    n_eval=4, out=tmp_path / "eval", device="cpu", hygiene=False)
    assert result["clean"]["accuracy"] == 1.0 and result["n_eval"] == 4
    config = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert config["config"]["model"] == "robustbench:Wong2020Fast"


def test_zoo_errors_are_one_line(zoo, tmp_path, monkeypatch):
    import robustbench.utils

    def offline(*_args, **_kw):
        raise ConnectionError("Failed to establish a new connection: [Errno -3] name resolution failed")

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", offline)
    empty = tmp_path / "empty"
    with pytest.raises(UserError) as err:
        api.load_zoo_model("robustbench:Wong2020Fast", directory=empty)
    text = str(err.value)
    assert "\n" not in text and text.startswith("robustbench:Wong2020Fast: the weights ")
    assert str(empty / "cifar10" / "Linf" / "Wong2020Fast.pt") in text and "could not be fetched" in text
    assert "ConnectionError" in text
    with pytest.raises(UserError, match="no cifar10 Linf model 'Wong2020Fst'; did you mean 'Wong2020Fast'"):
        api.load_zoo_model("robustbench:Wong2020Fst", directory=zoo[0])
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'advbench\[robustbench\]'"):
        api.load_zoo_model("robustbench:Wong2020Fast", directory=zoo[0])
