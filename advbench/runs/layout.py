"""Where runs live: safe run names (one folder inside ``--out``), atomic creation of a run folder, finding the
runs under a folder, and slugs for folder and file names."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from advbench.errors import UserError


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
