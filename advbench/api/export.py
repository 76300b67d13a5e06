"""``advbench export``: a run's results in another tool's format.

``robustbench``: the RobustBench leaderboard entry ``OUT/model_info/<dataset>/<threat>/<name>.json`` of the run's
AutoAttack result (:mod:`advbench.report.robustbench`); ``tensorboard``: the run's per-epoch metrics as TensorBoard
event files in ``RUN/tensorboard/`` (:mod:`advbench.engine.tensorboard`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs
from advbench.errors import UserError
from advbench.registry import closest

EXPORT_FORMATS = ("robustbench", "tensorboard")


def export(run: str | Path, *, fmt: str = "robustbench", out: str | Path = ".", name: str | None = None,
           **entry: Any) -> tuple[Path, Any]:
    """Export ``run``; returns (the file or folder written, what was written: the entry dict for robustbench).

    robustbench: ``name`` is the file's model name (default: the run folder's name, as RobustBench names models
    ``<Author><Year><Word>``); ``entry`` takes :func:`~advbench.report.robustbench.robustbench_entry`'s fields
    (``paper``, the title, goes to ``name``; ``link``, ``authors``, ``venue``, ``reported``, ``eps`` ...)."""
    run_dir = runs.resolve_run(run)
    if fmt == "tensorboard":
        if entry or name:
            raise UserError("--format tensorboard takes no leaderboard fields")
        from advbench.engine.tensorboard import write_run

        folder = write_run(run_dir)
        return folder, sorted(p.name for p in folder.iterdir())
    if fmt != "robustbench":
        hint = closest(fmt, list(EXPORT_FORMATS))
        raise UserError(f"unknown export format '{fmt}'" + (f"; did you mean {hint[0]!r}?" if hint else
                                                            f"; choose one of {', '.join(EXPORT_FORMATS)}"))
    from advbench.report.robustbench import robustbench_entry

    paper = entry.pop("paper", "") or ""
    folder, body = robustbench_entry(run_dir, name=paper, **entry)
    model = runs.slug(name or run_dir.name, sep="_", default="model")
    path = Path(out) / folder / f"{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, body)
    return path, body
