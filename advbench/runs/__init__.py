"""The run directory: atomic JSON writes, checkpoints, listing and a writer lock.

Layout of one run (see docs/run-format.md)::

    runs/<name>/config.json        resolved config, command line, seed, versions, git hash
    runs/<name>/metrics.jsonl      one JSON line per epoch
    runs/<name>/summary.json       status, best epoch, final numbers
    runs/<name>/checkpoints/last.pt, best.pt
    runs/<name>/attacks/<suite>.json

The package: :mod:`.files` (writing and reading run files), :mod:`.lock` (the writer lock),
:mod:`.layout` (names, folders, discovery).
"""

from __future__ import annotations

from advbench.runs.files import (
    CHECKPOINT_FORMAT,
    CorruptFile,
    MissingFile,
    UnreadableFile,
    append_jsonl,
    atomic_path,
    git_hash,
    load_checkpoint,
    package_versions,
    read_json,
    read_jsonl,
    read_object,
    read_run_config,
    save_checkpoint,
    write_json,
)
from advbench.runs.layout import (
    FIND_DEPTH,
    FIND_MAX_DIRS,
    MAX_RUN_NAME,
    check_out_dir,
    check_run_name,
    create_run_dir,
    find_runs,
    is_run_dir,
    resolve_run,
    slug,
    unique_run_dir,
)
from advbench.runs.lock import (
    RunLock,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CorruptFile",
    "FIND_DEPTH",
    "FIND_MAX_DIRS",
    "MAX_RUN_NAME",
    "MissingFile",
    "RunLock",
    "UnreadableFile",
    "append_jsonl",
    "atomic_path",
    "check_out_dir",
    "check_run_name",
    "create_run_dir",
    "find_runs",
    "git_hash",
    "is_run_dir",
    "load_checkpoint",
    "package_versions",
    "read_json",
    "read_jsonl",
    "read_object",
    "read_run_config",
    "resolve_run",
    "save_checkpoint",
    "slug",
    "unique_run_dir",
    "write_json",
]
