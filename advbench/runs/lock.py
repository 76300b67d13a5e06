"""The writer lock of a run folder: one process writes a run at a time; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from advbench.errors import UserError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

class RunLock:
    """An exclusive lock file (``<run>/.lock``) so two processes never write one run.

    A lock left behind by a dead process on this host is taken over.
    """

    def __init__(self, run_dir: str | Path, purpose: str = "write") -> None:
        self.path = Path(run_dir) / ".lock"
        self.purpose = purpose
        self.held = False

    def acquire(self) -> RunLock:
        """Take the lock or raise UserError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose, "time": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, json.JSONDecodeError):
                    holder = {}
                same_host = holder.get("host") == socket.gethostname()
                pid = int(holder.get("pid", -1))
                if same_host and (pid <= 0 or not _pid_alive(pid)):
                    self.path.unlink(missing_ok=True)  # stale lock of a dead process
                    continue
                raise UserError(
                    f"run {self.path.parent} is in use by process {pid} on {holder.get('host', '?')} "
                    f"({holder.get('purpose', '?')}); wait for it or delete {self.path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(info))
            self.held = True
            return self
        raise UserError(f"could not lock {self.path}; delete it if no advbench process uses this run")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
