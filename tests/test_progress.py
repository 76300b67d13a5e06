"""Progress bars: running loss and ETA on every bar, and AutoAttack's components shown on the bar of its entry as
they finish (through the evaluation's attack hook, with the caller's own hook still called)."""

from __future__ import annotations

import io

import torch
from rich.console import Console
from torch import nn

from advbench import api
from advbench.api import jobs
from advbench.core.progress import NullProgress, RichProgress


def _progress() -> RichProgress:
    return RichProgress(Console(file=io.StringIO(), width=200, force_terminal=False))


def _rendered(progress: RichProgress) -> str:
    """The bars as the console would draw them now."""
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(progress._progress.make_tasks_table(progress._progress.tasks))
    return out.export_text()


def test_training_bars_show_running_loss_throughput_and_eta():
    progress = _progress()
    handle = progress.task("epoch 1/3", 10)
    progress.advance(handle, 1, images=128, loss=1.234567)
    line = _rendered(progress)
    assert "epoch 1/3" in line and "1/10" in line and "loss 1.2346" in line and "ETA" in line
    progress.advance(handle, 1, images=128, loss=0.5)  # the loss shown is the latest running value
    assert "loss 0.5000" in _rendered(progress) and "loss 1.2346" not in _rendered(progress)


def test_autoattack_components_appear_on_their_entry_bar_and_the_callers_hook_still_runs():
    progress = _progress()
    other = progress.task("PGD-20", 4)
    bar = progress.task("AutoAttack [rank 0/2]", 2)
    seen = []
    hook = progress.attack_hook(lambda event, **info: seen.append((event, info["component"])))
    hook("autoattack-component", key="AutoAttack", batch=0, component="apgd-ce")
    hook("autoattack-component", key="AutoAttack", batch=0, component="apgd-t")
    assert progress.stage_text(bar).startswith("batch 1: APGD-CE ✓") and "APGD-T ✓" in progress.stage_text(bar)
    assert progress.stage_text(other) == ""
    progress.advance(bar, 1)
    hook("autoattack-component", key="AutoAttack", batch=1, component="square")
    assert progress.stage_text(bar).startswith("batch 2: Square ✓") and "APGD" not in progress.stage_text(bar)
    assert "batch 2: Square ✓" in _rendered(progress)
    hook("autoattack-component", key="not-an-entry", batch=0, component="fab-t")  # no bar: ignored, still passed on
    assert seen == [("autoattack-component", c) for c in ("apgd-ce", "apgd-t", "square", "fab-t")]
    assert NullProgress().attack_hook(None) is None  # --quiet: attacks get no hook at all


class _Recording(RichProgress):
    events: list[tuple[str, str]] = []

    def attack_event(self, event, **info):
        super().attack_event(event, **info)
        handle = self._keys.get(info["key"])  # the bar of the entry: its description is the entry's key
        _Recording.events.append((info["component"], self.stage_text(handle) if handle is not None else None))


def test_evaluate_wires_autoattack_events_into_the_progress_display(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "make_progress", lambda quiet: _Recording(Console(file=io.StringIO())))
    _Recording.events = []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    x = torch.rand(6, 3, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image correct: AutoAttack runs its components on all of them
    mine = []
    api.evaluate(model, dataset=(x, y), attack="autoattack", n_eval=6, out=tmp_path / "aa", quiet=False,
                 attack_options={"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_restarts": 1},
                 attack_hook=lambda event, **info: mine.append(info["component"]), hygiene=False)
    assert mine[0] == "apgd-ce" and set(mine) <= {"apgd-ce", "apgd-t"}
    assert [c for c, _ in _Recording.events] == mine
    assert _Recording.events[0][1].startswith("batch 1: APGD-CE ✓")  # shown on the entry's own bar
