"""Progress display: rich bars with throughput, running loss, elapsed time and ETA, or nothing with ``--quiet``.

Attacks with internal stages (AutoAttack's components) report them through the evaluation's attack hook;
:meth:`NullProgress.attack_hook` wraps a caller's hook so that the bar of the running entry also shows the
components done on the current batch (``batch 1: APGD-CE ✓ 41s  APGD-T ✓ 80s``) instead of sitting at 0/1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: display names of AutoAttack's components
_COMPONENT_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
                    "square": "Square"}


class NullProgress:
    """Shows nothing (``--quiet`` and the Python API default)."""

    def task(self, description: str, total: int) -> Any:
        """Start a bar; returns a handle for :meth:`advance`."""
        return None

    def advance(self, handle: Any, n: int = 1, **fields: Any) -> None:
        """Advance a bar by ``n`` units; ``images=`` adds to the throughput, ``loss=`` is shown as the running loss."""

    def done(self, handle: Any) -> None:
        """Finish a bar."""

    def log(self, message: str) -> None:
        """Print one line."""

    def attack_event(self, event: str, **info: Any) -> None:
        """An attack's internal progress event (``autoattack-component`` with ``key``, ``batch``, ``component``)."""

    def attack_hook(self, chained: Callable[..., None] | None = None) -> Callable[..., None] | None:
        """The hook to give attacks (``AttackContext.hook``): shows their events, then calls ``chained``."""
        return chained

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Stages:
    """Components done on the current batch of one bar, with the seconds each took."""

    def __init__(self) -> None:
        self.batch = -1
        self.last = time.perf_counter()
        self.done: list[tuple[str, float]] = []

    def add(self, batch: int, component: str) -> str:
        """Record ``component`` done on ``batch``; returns the text the bar shows."""
        now = time.perf_counter()
        if batch != self.batch:
            self.batch, self.done = batch, []
        self.done.append((_COMPONENT_NAMES.get(component, component), now - self.last))
        self.last = now
        return f"batch {batch + 1}: " + "  ".join(f"{name} ✓ {secs:.0f}s" for name, secs in self.done)


class RichProgress(NullProgress):
    """Rich progress bars on stderr: done/total, images/s, running loss, elapsed, ETA, and attack stages."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stage]}"),
            console=self.console,
            transient=True,
        )
        self._images: dict[Any, int] = {}
        self._keys: dict[str, Any] = {}  # task description -> handle (attack entries are described by their key)
        self._stages: dict[Any, _Stages] = {}

    def task(self, description: str, total: int) -> Any:
        handle = self._progress.add_task(description, total=total, rate="", loss="", stage="")
        self._images[handle] = 0
        self._keys[description] = handle
        self._stages[handle] = _Stages()
        return handle

    def _task(self, handle: Any) -> Any:
        return next(t for t in self._progress.tasks if t.id == handle)

    def advance(self, handle: Any, n: int = 1, **fields: Any) -> None:
        images = fields.pop("images", 0)
        loss = fields.pop("loss", None)
        self._images[handle] = self._images.get(handle, 0) + images
        elapsed = self._task(handle).elapsed or 0.0
        rate = f"{self._images[handle] / elapsed:,.0f} img/s" if elapsed > 0 and self._images[handle] else ""
        if loss is not None:
            fields["loss"] = f"loss {loss:.4f}"
        if handle in self._stages:
            self._stages[handle].last = time.perf_counter()  # the next batch (and its first stage) starts now
        self._progress.update(handle, advance=n, rate=rate, **fields)

    def done(self, handle: Any) -> None:
        self._progress.remove_task(handle)
        self._keys = {k: v for k, v in self._keys.items() if v != handle}
        self._stages.pop(handle, None)

    def log(self, message: str) -> None:
        self._progress.console.print(message, highlight=False, markup=False)

    def attack_event(self, event: str, **info: Any) -> None:
        if event != "autoattack-component":
            return
        key = str(info.get("key", ""))
        handle = next((h for d, h in reversed(self._keys.items()) if d == key or d.startswith(key + " ")), None)
        if handle is None:
            return
        stage = self._stages.setdefault(handle, _Stages()).add(int(info.get("batch", 0)), str(info.get("component")))
        self._progress.update(handle, stage=stage)

    def attack_hook(self, chained: Callable[..., None] | None = None) -> Callable[..., None]:
        def hook(event: str, **info: Any) -> None:
            self.attack_event(event, **info)
            if chained is not None:
                chained(event, **info)

        return hook

    def stage_text(self, handle: Any) -> str:
        """What the bar ``handle`` shows of its attack's stages (tests, and anyone drawing their own display)."""
        return str(self._task(handle).fields.get("stage", ""))

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def make_progress(quiet: bool) -> NullProgress:
    """RichProgress unless ``quiet``."""
    return NullProgress() if quiet else RichProgress()
