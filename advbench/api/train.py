"""``advbench train``: resolve the typed config (defaults < TOML recipe < options < ``--set``) and train or resume
a run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.config import TrainConfig, config_to_dict
from advbench.core.progress import make_progress
from advbench.core.signals import StopFlag, stop_on_signals
from advbench.engine.train import resume_run, start_run
from advbench.papers.plan import config_hash, existing_runs
from advbench.resolve import make_train_config


def train(*, out: str | Path = "runs", name: str | None = None, resume: str | Path | None = None,
          settings: dict[str, Any] | list[str] | None = None, config_file: str | Path | None = None,
          quiet: bool = True, command: list[str] | None = None, stop: Any = None, batch_hook: Any = None,
          fresh: bool = False, recipe: str | None = None, **options: Any) -> tuple[Path, dict[str, Any]]:
    """Train a defense (or resume a run); returns (run directory, summary dict).

    ``options`` are TrainConfig fields (dataset, model, defense, eps, norm, epochs, batch_size, lr, seed,
    n_train, ...); ``settings`` are ``--set`` style overrides routed to the defense, model or dataset.

    A run of the very same configuration (content hash) already under ``out`` is reused when it finished and
    resumed when it was interrupted (``summary["reused"]`` says which); ``fresh`` trains a new run anyway.
    """
    flag = stop or StopFlag()
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under torchrun rank 0 shows progress
    with make_progress(quiet) as progress, stop_on_signals(flag):
        if resume is not None:
            return resume_run(resume, progress=progress, stop=flag, batch_hook=batch_hook,
                              epochs=options.get("epochs"))
        cfg = make_train_config(options, settings, config_file)
        same = None if fresh else same_run(cfg, out, name)
        if same is not None:  # this very configuration was trained here before: reuse it, or resume it
            run_dir, status = same
            if status == "completed":
                return run_dir, {**runs.read_object(run_dir / "summary.json"), "reused": "completed"}
            run_dir, summary = resume_run(run_dir, progress=progress, stop=flag, batch_hook=batch_hook)
            return run_dir, {**summary, "reused": "resumed"}
        return start_run(cfg, out=out, name=name, command=command, progress=progress, stop=flag,
                         batch_hook=batch_hook, recipe=recipe or _recipe_source(config_file, options, settings))


def _recipe_source(config_file: str | Path | None, options: dict[str, Any], settings: Any) -> str:
    """Where a run's settings came from, in words (the header line and config.json's ``recipe``)."""
    given = sorted(k for k, v in options.items() if v is not None) + sorted(settings or [])
    base = f"TOML recipe {config_file}" if config_file else "advbench defaults (docs/defenses.md)"
    return base + (f", with {len(given)} setting(s) given" if given else "")


def same_run(cfg: TrainConfig, out: str | Path, name: str | None) -> tuple[Path, str] | None:
    """The run under ``out`` with this configuration (content hash, as reproduce uses), and its status; with a
    ``name``, only the folder of that name counts. None when there is none, or when it is in use."""
    found = existing_runs(Path(out)).get(config_hash(config_to_dict(cfg)))
    if found is None or (name is not None and found[0].name != name):
        return None
    run_dir, status = found
    if status not in ("completed", "interrupted", "running") or (run_dir / ".lock").exists() and status == "running":
        return None  # a run that another process is training now is not taken over
    return found
