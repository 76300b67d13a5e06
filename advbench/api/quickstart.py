"""``advbench quickstart``: train the quickstart defenses on the embedded synthetic dataset, attack, report.

Offline and CPU-friendly (a few minutes on 2 cores). Each defense that lands adds itself to
``QUICKSTART`` with settings that fit the time budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.api.attack import attack
from advbench.api.report import report
from advbench.api.train import train

#: shared settings of every quickstart run
COMMON: dict[str, Any] = {"dataset": "synthetic", "model": "small-cnn", "eps": "8/255", "norm": "linf",
                          "epochs": 8, "batch_size": 128, "lr": 0.002, "seed": 0, "n_train": 3000,
                          "device": "cpu"}
#: (defense, extra --set options) in the order shown in the table
QUICKSTART: list[tuple[str, dict[str, Any]]] = [
    ("standard", {}),
    ("pgd-at", {"steps": 5, "step_size": 2.5 / 255}),
    ("trades", {"steps": 5, "step_size": 2.5 / 255}),
    ("p-sat", {"steps": 5, "step_size": 2.5 / 255, "schedule_scale": 0.07}),  # λ ramps over epochs 2.1-4.9 of 6
    # SOAR (paper: SGD from the standard model): Adam's normalised steps let the regularizer, huge on the
    # confident standard model, flatten the network to chance; SGD with its gradient clip does not
    ("soar", {"optimizer": "sgd", "lr": 0.001}),
    ("grad-reg-fd", {}),
]
#: epochs of every fine-tuned defense (the standard run trains for COMMON["epochs"] from scratch)
FINE_TUNE_EPOCHS = 6
TRAIN_SETTINGS = {"val_n": 200, "val_attack_steps": 5, "schedule": "cosine", "optimizer": "adam", "weight_decay": 0.0}


def run_quickstart(out: str | Path = "runs/quickstart", epochs: int | None = None, n_eval: int = 500,
                   quiet: bool = False, console: Any = None, n_train: int | None = None) -> str:
    """Train, attack (suite ``pgd-lite``) and report; returns the markdown report. Reuses finished runs.

    ``epochs`` and ``n_train`` shrink every run (tests); the defaults are the recipe in :data:`COMMON`."""
    out = Path(out)
    t0 = time.perf_counter()
    run_dirs = []
    for defense, options in QUICKSTART:
        settings = {**TRAIN_SETTINGS, **options}
        cfg = {**COMMON, "defense": defense}
        if defense != "standard":  # fine-tune from the standard run: a few CPU epochs then suffice
            cfg["init_from"] = str(out / "standard")
            cfg["epochs"] = FINE_TUNE_EPOCHS
        if epochs is not None:
            cfg["epochs"] = epochs
        if n_train is not None:
            cfg["n_train"] = n_train
        name = f"{defense}"
        run_dir = out / name
        summary = runs.read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
        if console is not None:
            console.print(f"[bold]{defense}[/bold]: training on synthetic / small-cnn ({cfg['epochs']} epochs)")
        if summary.get("status") == "completed":
            pass
        elif runs.is_run_dir(run_dir):
            train(resume=run_dir, quiet=quiet)
        else:
            train(out=out, name=name, settings=settings, quiet=quiet, command=["advbench", "quickstart"], **cfg)
        if console is not None:
            console.print(f"[bold]{defense}[/bold]: attacking with the pgd-lite suite (first {n_eval} test images)")
        attack(run_dir, suite="pgd-lite", n_eval=n_eval, batch_size=250, device="cpu", quiet=quiet)
        run_dirs.append(run_dir)
    _grid, text = report(run_dirs, fmt="markdown")
    minutes = (time.perf_counter() - t0) / 60
    return text + f"\nruns: {out}/ ({minutes:.1f} min). Inspect one with: advbench show {run_dirs[-1]}\n"
