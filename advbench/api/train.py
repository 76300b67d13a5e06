"""``advbench train``: resolve the typed config (defaults < TOML recipe < options < ``--set``) and train or resume
a run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advbench.core.progress import make_progress
from advbench.core.signals import StopFlag, stop_on_signals
from advbench.engine.train import resume_run, start_run
from advbench.resolve import make_train_config


def train(*, out: str | Path = "runs", name: str | None = None, resume: str | Path | None = None,
          settings: dict[str, Any] | list[str] | None = None, config_file: str | Path | None = None,
          quiet: bool = True, command: list[str] | None = None, stop: Any = None, batch_hook: Any = None,
          **options: Any) -> tuple[Path, dict[str, Any]]:
    """Train a defense (or resume a run); returns (run directory, summary dict).

    ``options`` are TrainConfig fields (dataset, model, defense, eps, norm, epochs, batch_size, lr, seed,
    n_train, ...); ``settings`` are ``--set`` style overrides routed to the defense, model or dataset.
    """
    flag = stop or StopFlag()
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under torchrun rank 0 shows progress
    with make_progress(quiet) as progress, stop_on_signals(flag):
        if resume is not None:
            return resume_run(resume, progress=progress, stop=flag, batch_hook=batch_hook,
                              epochs=options.get("epochs"))
        cfg = make_train_config(options, settings, config_file)
        return start_run(cfg, out=out, name=name, command=command, progress=progress, stop=flag,
                         batch_hook=batch_hook)
