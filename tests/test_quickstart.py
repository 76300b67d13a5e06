"""``advbench quickstart`` end to end at a tiny size: every listed defense trains (fine-tuned from the
standard run), is attacked and reported; a second call reuses the finished runs."""

from __future__ import annotations

import re

import pytest

from advbench import runs
from advbench.api.quickstart import QUICKSTART, run_quickstart


def test_quickstart_trains_attacks_and_reports_every_defense(tmp_path):
    out = tmp_path / "qs"
    text = run_quickstart(out=out, epochs=1, n_train=256, n_eval=40, quiet=True)
    names = [d for d, _ in QUICKSTART]
    assert {"standard", "pgd-at", "trades", "p-sat", "soar", "grad-reg-fd"} <= set(names)
    for defense in names:
        run = out / defense
        assert runs.read_json(run / "summary.json")["status"] == "completed"
        result = runs.read_json(run / "attacks" / "pgd-lite.json")
        assert result["n_eval"] == result["clean"]["n"] == len(result["clean"]["correct"]) == 40
        config = runs.read_json(run / "config.json")
        if defense != "standard":  # fine-tuned from the standard run's best checkpoint
            assert config["config"]["init_from"] == str(out / "standard")
        assert f"| {defense}" in text
    soar = runs.read_json(out / "soar" / "config.json")["config"]
    assert (soar["optimizer"], soar["lr"]) == ("sgd", 0.001)
    before = {d: (out / d / "checkpoints" / "last.pt").stat().st_mtime_ns for d in names}
    again = run_quickstart(out=out, epochs=1, n_train=256, n_eval=40, quiet=True)
    assert {d: (out / d / "checkpoints" / "last.pt").stat().st_mtime_ns for d in names} == before
    assert again.split("\nruns:")[0] == text.split("\nruns:")[0]


class _Lines:
    """A console stand-in that keeps what the quickstart prints."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text, **_kw) -> None:
        self.lines.append(str(text))


def test_fast_preset_keeps_the_standard_run_and_shortens_the_fine_tuning(tmp_path):
    from advbench.api.quickstart import DEFAULT, FAST, RAMP_EPOCHS, quickstart_plan

    default = {p.name: p for p in quickstart_plan(tmp_path / "d")}
    fast = {p.name: p for p in quickstart_plan(tmp_path / "f", preset=FAST)}
    assert fast["standard"].hash == default["standard"].hash  # the same standard run (every other starts from it)
    for name, p in fast.items():
        if name != "standard":
            assert (p.options["epochs"], p.options["n_train"]) == (FAST.fine_tune_epochs, FAST.fine_tune_n_train)
            assert p.hash != default[name].hash and p.options["init_from"] == str(tmp_path / "f" / "standard")
    assert default["pgd-at"].options["epochs"] == DEFAULT.fine_tune_epochs
    psat = 0.07  # the λ ramp is written for RAMP_EPOCHS epochs of fine-tuning and follows a shorter schedule
    for plan, preset in ((fast, FAST), (default, DEFAULT)):
        want = psat * preset.fine_tune_epochs / RAMP_EPOCHS
        assert plan["p-sat"].settings["schedule_scale"] == pytest.approx(want, abs=1e-6)
    assert {p.options["n_train"] for p in quickstart_plan(tmp_path / "n", n_train=64, preset=FAST)} == {64}


def test_overall_progress_lines_and_the_work_they_count(tmp_path):
    from advbench.api.quickstart import Overall, quickstart_plan

    planned = quickstart_plan(tmp_path / "qs", epochs=1, n_train=100)
    overall = Overall(planned, 50, lambda m: None)
    train = {p.name: overall.work[(p.name, "start")] for p in planned}
    # same validation work; training: PGD-5 AT takes 12 passes per image (6 forward, 6 backward), standard 2
    assert train["pgd-at"] - train["standard"] == pytest.approx(100 * (12 - 2)) and train["standard"] > 200
    assert all(overall.work[(p.name, "attack")] == 50 * 100.0 for p in planned)
    first = overall.line(planned[0], "start")
    assert first.startswith("[1/6] standard: training 1 epochs on 100 synthetic images — 0:00 elapsed")
    assert first.endswith("time left: after the first run")
    overall.t0 -= 30  # 30 s later: the time left is 30 s times the work left over the work done
    done = train["standard"] + 50 * 100.0 + train["pgd-at"]
    left = sum(overall.work.values()) - done
    m = re.fullmatch(r"\[2/6\] pgd-at: attacking with pgd-lite — 0:30 elapsed, about (\d+):(\d\d) left",
                     overall.line(planned[1], "attack"))
    assert m and abs(60 * int(m.group(1)) + int(m.group(2)) - 30 * left / done) <= 1


def test_cli_quickstart_fast_with_n_train_prints_overall_progress_and_refuses_other_settings(tmp_path, capsys):
    from advbench.cli import main

    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--n-train", "96", "--epochs", "1", "--n-eval", "16", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] + "]" for ln in lines if ": training" in ln] == [f"[{k}/6]" for k in range(1, 7)]
    assert lines[-1].startswith("[6/6] done: 6 defenses trained and attacked in ")
    assert "| grad-reg-fd " in captured.out and f"runs: {out}/ (6 runs" in captured.out
    for defense in ("standard", "soar"):
        record = runs.read_json(out / defense / "config.json")
        assert record["config"]["n_train"] == 96 and record["command"].startswith("advbench quickstart --fast")
    assert main(["quickstart", "--fast", "--n-train", "96", "--epochs", "1", "--n-eval", "16", "--out", str(out),
                 "--quiet"]) == 0  # finished runs are reused
    assert "reusing" not in capsys.readouterr().err  # --quiet prints no progress
    assert main(["quickstart", "--fast", "--n-train", "128", "--epochs", "1", "--out", str(out)]) == 2  # other settings
    assert "made with other quickstart settings" in capsys.readouterr().err


def test_threads_follow_the_cores_other_processes_leave_free(tmp_path, monkeypatch):
    import torch

    from advbench.api import quickstart
    from advbench.api.quickstart import Overall, free_threads, quickstart_plan

    monkeypatch.setattr(quickstart.os, "cpu_count", lambda: 2)
    for busy, want in ((0.0, 2), (0.3, 2), (1.0, 1), (1.9, 1), (3.5, 1)):
        monkeypatch.setattr(quickstart, "_busy_cores", lambda busy=busy: busy)
        assert free_threads() == want
    monkeypatch.undo()
    measured = quickstart._busy_cores(0.05)  # the real /proc/stat reading, where there is one
    assert measured is None or measured >= 0
    monkeypatch.setattr(quickstart, "_busy_cores", lambda: 1.0)
    monkeypatch.setattr(quickstart.os, "cpu_count", lambda: 2)
    planned = quickstart_plan(tmp_path / "qs", epochs=1, n_train=100)
    lines: list[str] = []
    overall = Overall(planned, 50, lines.append)
    overall.threads = 0
    torch.set_num_threads(2)
    overall(planned[0], "start")
    assert torch.get_num_threads() == 1 and lines[-1].endswith("(1 thread)")
    overall.threads = 2  # --threads 2: fixed
    overall(planned[0], "attack")
    assert torch.get_num_threads() == 2 and lines[-1].endswith("(2 threads)")
