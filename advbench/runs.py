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
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

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


def _umask() -> int:
    """The process's umask (read without changing it where the OS tells it, else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        # mkstemp creates 0600; the file gets the mode a plain open() would give it (0666 less the umask), so
        # colleagues on a shared cluster and a web server can read runs and reports as with any other file
        os.chmod(tmp_path, 0o666 & ~_umask())
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
    """Read a JSON file; a missing, unreadable or corrupt file is a one-line UserError naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise MissingFile(f"{p} is missing; the run is incomplete (rerun the command that writes it)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableFile(f"cannot read {p}: {getattr(err, 'strerror', None) or err}") from None
    except (json.JSONDecodeError, RecursionError):
        raise CorruptFile(f"{p} is not valid JSON (corrupt or truncated); restore it or remove the run") from None


class MissingFile(UserError, FileNotFoundError):
    """A run file that should be there is not (a UserError that callers may also catch as OSError)."""


class UnreadableFile(UserError, OSError):
    """A run file that cannot be read (also an OSError)."""


class CorruptFile(UserError, ValueError):
    """A run file that holds no valid JSON, or JSON of the wrong shape (also a ValueError)."""


def read_object(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a JSON file that must hold an object with ``required`` keys (UserError otherwise)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise CorruptFile(f"{path} holds a JSON {type(obj).__name__}, not an object; restore it or remove the run")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CorruptFile(f"{path} lacks {', '.join(map(repr, missing))}; restore it or remove the run")
    return obj


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` checked for shape: an object whose ``config`` is an object (UserError otherwise)."""
    record = read_object(Path(run_dir) / "config.json", ("config",))
    if not isinstance(record["config"], dict):
        raise CorruptFile(f"{Path(run_dir) / 'config.json'}: 'config' is not an object; restore it or remove the run")
    return record


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line (flushed and fsynced)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read the JSON-object lines of a file (a torn last line, or a line that is no object, is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):  # a line that is not an object is not a record
            out.append(record)
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
    import pickle

    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise UserError(f"{p} is not a safe checkpoint: it contains code objects or classes beyond tensors; "
                            "refused") from None
        raise UserError(f"{p} is not a readable checkpoint (corrupt pickle); refused") from None
    except Exception as err:  # noqa: BLE001 - any other failure is a user-facing bad file, in one line of our own
        raise UserError(f"{p} is not a readable checkpoint ({type(err).__name__}); refused") from None


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
    """True if ``path`` holds a run: a ``config.json`` written by advbench (an object with a ``config`` object).

    A folder whose ``config.json`` is not valid JSON still counts (a broken run, reported as such by whoever
    reads it); a ``config.json`` of another program (valid JSON without advbench's ``config``) does not."""
    cfg = Path(path) / "config.json"
    try:
        if not cfg.is_file():
            return False
        obj = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError):
        return False
    except (json.JSONDecodeError, RecursionError):
        return True
    return not isinstance(obj, dict) or "config" in obj or "kind" in obj


#: how deep below a named folder runs are looked for (runs/<table>/<run> is 2), and how many folders at most
FIND_DEPTH = 4
FIND_MAX_DIRS = 50_000


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Expand run directories and parents of run directories into a sorted list of runs.

    Looks at most :data:`FIND_DEPTH` folders deep, never inside a run, never through symbolic links or into
    hidden folders, and skips folders it cannot read."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"no such run or directory: {p}")
        if is_run_dir(p):
            found.append(p)
            continue
        if not p.is_dir():
            raise UserError(f"{p} is a file, not a run folder or a folder of runs")
        found.extend(_walk_runs(p))
    return list(dict.fromkeys(found))


def _walk_runs(root: Path) -> list[Path]:
    out: list[Path] = []
    seen = 0
    base_depth = len(root.parts)
    for here, dirs, _files in os.walk(root, onerror=lambda err: None, followlinks=False):
        seen += 1
        if seen > FIND_MAX_DIRS:
            raise UserError(f"more than {FIND_MAX_DIRS} folders under {root}; name the runs folder itself")
        path = Path(here)
        if path != root and is_run_dir(path):
            out.append(path)
            dirs[:] = []  # a run holds no runs
            continue
        if len(path.parts) - base_depth >= FIND_DEPTH:
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(out)


#: longest run name accepted (bytes): leaves room for a ``-N`` suffix and the files inside under NAME_MAX
MAX_RUN_NAME = 200

#: what :func:`slug` keeps: ``file`` = ASCII letters, digits, ``.``, ``_`` and ``-``; ``label`` = letters and
#: digits of any script (``_`` and ``.`` included in what is replaced)
_SLUG_DROP = {"file": re.compile(r"[^A-Za-z0-9._-]+"), "label": re.compile(r"[\W_]+")}


def slug(text: str, *, sep: str = "-", default: str = "", kind: Literal["file", "label"] = "file") -> str:
    """``text`` as one safe name component: each run of characters that ``kind`` does not keep becomes one
    ``sep``, ``sep`` is stripped from both ends, and an empty result becomes ``default``.

    The two kinds name things that already exist on disk, so neither may change: ``file`` keeps case
    (``--model-module`` run folders, AutoAttack's per-batch state files with ``sep="_"``); ``label`` is lower
    case (the row part of reproduce's run names, ``adv-train-pgd-10-s0-HASH``, found again by name)."""
    out = _SLUG_DROP[kind].sub(sep, text).strip(sep)
    return (out.lower() if kind == "label" else out) or default


def check_run_name(name: str) -> str:
    """``name`` if it is one safe path component, else a UserError.

    A run name is a single folder inside the runs folder: no separators, not ``.`` or ``..``, no control
    characters, no leading or trailing space, at most :data:`MAX_RUN_NAME` bytes.
    """
    what = f"run name {name[:60]!r}{'...' if len(name) > 60 else ''}"
    if not name or name in {".", ".."} or "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        raise UserError(f"{what} must be one folder name (no '/', not '.' or '..'); pick a plain name such as "
                        "'pgd-at-s0'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or name != name.strip():
        raise UserError(f"{what} has control characters or leading/trailing spaces; pick a plain name")
    if len(name.encode()) > MAX_RUN_NAME:
        raise UserError(f"{what} is {len(name.encode())} bytes long; use at most {MAX_RUN_NAME}")
    return name


def check_out_dir(out: str | Path, flag: str = "--out") -> Path:
    """The runs folder ``out``, created if missing; a UserError if it is a file or cannot be created."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is not a directory; give a folder for the runs")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {p}: cannot create the folder ({err.strerror or err}); give a writable folder") \
            from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p} is not writable; give a writable folder")
    return p


def create_run_dir(out: str | Path, name: str) -> Path:
    """Create a new, empty run folder ``out/name`` (suffixed ``-2``, ``-3`` ... when taken) and return it.

    The name is checked (:func:`check_run_name`) and the folder is created with one atomic ``mkdir``, so
    two processes started at the same moment with the same name get two folders; the result always lies
    directly inside ``out``.
    """
    check_run_name(name)
    root = check_out_dir(out)
    for k in range(1, 10_000):
        candidate = root / (name if k == 1 else f"{name}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"cannot create run folder {candidate}: {err.strerror or err}") from None
        if candidate.resolve().parent != root.resolve():  # defence in depth: never outside --out
            candidate.rmdir()
            raise UserError(f"run folder {candidate} would lie outside {root}; pick a plain name")
        return candidate
    raise UserError(f"too many runs named {name!r} in {root}; pick another --name")


def unique_run_dir(out: str | Path, name: str) -> Path:
    """``out/name``, suffixed ``-2``, ``-3`` ... if it already exists (not created; see :func:`create_run_dir`)."""
    base = Path(out) / check_run_name(name)
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
