"""Progress display: rich bars with throughput, or nothing with ``--quiet``."""

from __future__ import annotations

from typing import Any


class NullProgress:
    """Shows nothing (``--quiet`` and the Python API default)."""

    def task(self, description: str, total: int) -> Any:
        """Start a bar; returns a handle for :meth:`advance`."""
        return None

    def advance(self, handle: Any, n: int = 1, **fields: Any) -> None:
        """Advance a bar by ``n`` units."""

    def done(self, handle: Any) -> None:
        """Finish a bar."""

    def log(self, message: str) -> None:
        """Print one line."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RichProgress(NullProgress):
    """Rich progress bars (images/s throughput) on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._images: dict[Any, int] = {}

    def task(self, description: str, total: int) -> Any:
        handle = self._progress.add_task(description, total=total, rate="")
        self._images[handle] = 0
        return handle

    def advance(self, handle: Any, n: int = 1, **fields: Any) -> None:
        images = fields.pop("images", 0)
        self._images[handle] = self._images.get(handle, 0) + images
        task = self._progress.tasks[[t.id for t in self._progress.tasks].index(handle)]
        elapsed = task.elapsed or 0.0
        rate = f"{self._images[handle] / elapsed:,.0f} img/s" if elapsed > 0 and self._images[handle] else ""
        self._progress.update(handle, advance=n, rate=rate, **fields)

    def done(self, handle: Any) -> None:
        self._progress.remove_task(handle)

    def log(self, message: str) -> None:
        self._progress.console.print(message, highlight=False)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def make_progress(quiet: bool) -> NullProgress:
    """RichProgress unless ``quiet``."""
    return NullProgress() if quiet else RichProgress()
