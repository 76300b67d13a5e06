"""``advbench quickstart``: train the quickstart defenses on the embedded synthetic dataset, attack, report.

Offline and CPU-friendly (a few minutes on 2 cores). Each defense that lands adds itself to
``QUICKSTART`` with settings that fit the time budget.

The quickstart is a small plan run by the same executor as ``advbench reproduce``
(:func:`advbench.api.reproduce.execute`): a standard base run trained from scratch, then every other defense
fine-tuned from it (``init_from``), each attacked with ``pgd-lite``. Runs keep fixed names,
``OUT/<defense>``, and are found again by name: a completed one is reused and an interrupted one resumed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from advbench.api.report import report
from advbench.api.reproduce import execute
from advbench.papers.plan import PlannedRun, run_action, run_hash

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
SUITE = "pgd-lite"


def quickstart_plan(out: Path, epochs: int | None = None, n_train: int | None = None) -> list[PlannedRun]:
    """The quickstart's runs: the ``standard`` base run, then every other defense fine-tuned from it.

    ``epochs`` and ``n_train`` shrink every run (tests); the defaults are the recipe in :data:`COMMON`."""
    planned: list[PlannedRun] = []
    base: PlannedRun | None = None
    for defense, options in QUICKSTART:
        settings = {**TRAIN_SETTINGS, **options}
        cfg = {**COMMON, "defense": defense}
        if base is not None:  # fine-tune from the standard run: a few CPU epochs then suffice
            cfg["init_from"] = str(out / base.name)
            cfg["epochs"] = FINE_TUNE_EPOCHS
        if epochs is not None:
            cfg["epochs"] = epochs
        if n_train is not None:
            cfg["n_train"] = n_train
        init = base.hash if base is not None else None
        action, existing = run_action(out / defense)
        p = PlannedRun(defense, cfg["seed"], cfg, settings, run_hash(cfg, settings, init), defense, action, existing,
                       suites=((SUITE, None),), base=base is None, init=init, out=str(out))
        base = base or p
        planned.append(p)
    return planned


def run_quickstart(out: str | Path = "runs/quickstart", epochs: int | None = None, n_eval: int = 500,
                   quiet: bool = False, console: Any = None, n_train: int | None = None) -> str:
    """Train, attack (suite ``pgd-lite``) and report; returns the markdown report. Reuses finished runs.

    ``epochs`` and ``n_train`` shrink every run (tests); the defaults are the recipe in :data:`COMMON`."""
    out = Path(out)
    t0 = time.perf_counter()

    def on_step(p: PlannedRun, step: str) -> None:
        if console is None:
            return
        if step == "start":
            console.print(f"[bold]{p.row}[/bold]: training on synthetic / small-cnn ({p.options['epochs']} epochs)")
        elif step == "attack":
            console.print(f"[bold]{p.row}[/bold]: attacking with the {SUITE} suite (first {n_eval} test images)")

    run_dirs = execute(quickstart_plan(out, epochs, n_train), out=out, n_eval=n_eval, quiet=quiet, device="cpu",
                       on_step=on_step, command=["advbench", "quickstart"])
    _grid, text = report(run_dirs, fmt="markdown")
    minutes = (time.perf_counter() - t0) / 60
    return text + f"\nruns: {out}/ ({minutes:.1f} min). Inspect one with: advbench show {run_dirs[-1]}\n"
