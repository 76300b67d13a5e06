"""Run files written and read safely: atomic writes (with the umask's mode), JSON and JSON-lines readers that
turn a missing or corrupt file into one line, checkpoints loaded with ``weights_only=True``, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
