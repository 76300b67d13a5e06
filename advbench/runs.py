"""The run directory: atomic JSON writes, checkpoints, listing and a writer lock.

Layout of one run (see docs/run-format.md)::

    runs/<name>/config.json        resolved config, command line, seed, versions, git hash
    runs/<name>/metrics.jsonl      one JSON line per epoch
    runs/<name>/summary.json       status, best epoch, final numbers
    runs/<name>/checkpoints/last.pt, best.pt
    runs/<name>/attacks/<suite>.json
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from advbench.errors import UserError

CHECKPOINT_FORMAT = "advbench-checkpoint-v1"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    A crash (or Ctrl-C) before the end leaves the previous file intact and removes the temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (flushed and fsynced)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read all complete JSON lines of a file (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def save_checkpoint(path: str | Path, obj: dict) -> None:
    """``torch.save`` atomically; the result loads with ``torch.load(weights_only=True)``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code on load)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a user-facing bad file
        raise UserError(f"cannot load checkpoint {p}: {type(err).__name__}: {err}") from None


def git_hash() -> str | None:
    """The git commit of the advbench source tree, if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide numeric results."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("advbench", "torch", "torchvision", "numpy", "pyautoattack"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


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


def is_run_dir(path: str | Path) -> bool:
    """True if ``path`` holds a run (a ``config.json`` written by advbench)."""
    return (Path(path) / "config.json").is_file()


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Expand run directories and parents of run directories into a sorted list of runs."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"no such run or directory: {p}")
        if is_run_dir(p):
            found.append(p)
            continue
        subs = sorted(c.parent for c in p.glob("**/config.json") if is_run_dir(c.parent))
        found.extend(subs)
    unique = list(dict.fromkeys(found))
    return unique


def unique_run_dir(out: str | Path, name: str) -> Path:
    """``out/name``, suffixed ``-2``, ``-3`` ... if it already exists."""
    base = Path(out) / name
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def resolve_run(path: str | Path) -> Path:
    """Check that ``path`` is a run directory; UserError otherwise."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"run directory not found: {p}; list runs with 'advbench report runs/'")
    if not is_run_dir(p):
        raise UserError(f"{p} is not an advbench run (no config.json); pass a directory made by 'advbench train'")
    return p
