"""Graceful interruption: Ctrl-C / SIGTERM set a flag that the loops check between batches."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(Exception):
    """Raised by a loop after it saved a consistent state because it was asked to stop."""

    def __init__(self, message: str, run_dir: str | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class StopFlag:
    """Set by a signal (or by code, e.g. tests) to ask the running loop to stop after this batch."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def request(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop at the next safe point."""
        self.requested = True
        self.reason = reason


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to ``flag`` while the block runs (main thread only).

    A second Ctrl-C falls back to the default KeyboardInterrupt; files stay consistent because every
    write is atomic.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    # under torchrun a Ctrl-C reaches each worker twice within milliseconds (from the terminal, then
    # forwarded by the torchrun agent): that echo must not count as the second, aborting Ctrl-C
    echo_window = 2.0 if os.environ.get("TORCHELASTIC_RUN_ID") else 0.0
    first = [0.0]

    def handler(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            if time.monotonic() - first[0] < echo_window:
                return
            raise KeyboardInterrupt
        if not flag.requested:
            first[0] = time.monotonic()
        flag.request(signal.Signals(signum).name)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
