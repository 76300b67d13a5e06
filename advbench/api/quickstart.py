"""``advbench quickstart``: train the quickstart defenses on the embedded synthetic dataset, attack, report.

Offline and CPU-friendly: about 4 minutes on 2 quiet cores (``--fast``: about a minute and a half; times in the
README). Each defense that lands adds itself to ``QUICKSTART`` with settings that fit the time budget.

The quickstart is a small plan run by the same executor as ``advbench reproduce``
(:func:`advbench.api.reproduce.execute`): a standard base run trained from scratch, then every other defense
fine-tuned from it (``init_from``), each attacked with ``pgd-lite``. Runs keep fixed names,
``OUT/<defense>``, and are found again by name: a completed one is reused and an interrupted one resumed; a run
there made with other settings is refused (choose another ``--out``). An overall progress line before each
step says which defense of how many runs, the time so far and an estimate of the time left.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from advbench import runs
from advbench.api.report import report
from advbench.api.reproduce import execute
from advbench.defenses import DEFENSES, build_defense
from advbench.errors import UserError
from advbench.papers.plan import PlannedRun, config_hash, run_action, run_hash
from advbench.threat import ThreatModel

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
    # (scaled to the fine-tuning epochs: see RAMP_EPOCHS)
    # SOAR (paper: SGD from the standard model): Adam's normalised steps let the regularizer, huge on the
    # confident standard model, flatten the network to chance; SGD with its gradient clip does not
    ("soar", {"optimizer": "sgd", "lr": 0.001}),
    ("grad-reg-fd", {}),
]
#: epochs of every fine-tuned defense (the standard run trains for COMMON["epochs"] from scratch)
FINE_TUNE_EPOCHS = 5
#: the fine-tuning length P-SAT's ``schedule_scale`` above is written for; other lengths scale it
RAMP_EPOCHS = 6
TRAIN_SETTINGS = {"val_n": 200, "val_attack_steps": 5, "schedule": "cosine", "optimizer": "adam", "weight_decay": 0.0}
SUITE = "pgd-lite"
#: passes per attacked image the ETA assumes for ``pgd-lite`` (FGSM, PGD-20, PGD-100 stopping at the first
#: misclassifying iterate); the estimate only sets the ratio of attack to training time
_ATTACK_PASSES = 100.0


@dataclasses.dataclass(frozen=True)
class Preset:
    """The size of a quickstart: training images and epochs of the standard run and of the fine-tuned defenses,
    test images attacked, and the default folder."""

    n_train: int
    fine_tune_n_train: int
    epochs: int
    fine_tune_epochs: int
    n_eval: int
    out: str


#: the recipe behind the README's table; 4 min 18 s on 2 quiet CPU cores
DEFAULT = Preset(n_train=COMMON["n_train"], fine_tune_n_train=COMMON["n_train"], epochs=COMMON["epochs"],
                 fine_tune_epochs=FINE_TUNE_EPOCHS, n_eval=500, out="runs/quickstart")
#: ``--fast``: the same standard run (every other run starts from it, and it is cheap), then 2 fine-tuning epochs
#: on 1500 images and 200 attacked images (1 min 22 s on 2 quiet cores): every defense still trains, is attacked
#: and lands in the table, with noisier numbers
FAST = Preset(n_train=COMMON["n_train"], fine_tune_n_train=1500, epochs=COMMON["epochs"], fine_tune_epochs=2,
              n_eval=200, out="runs/quickstart-fast")


def _settings(options: dict[str, Any], fine_tune_epochs: int) -> dict[str, Any]:
    """The run's ``--set`` options; options measured in epochs (P-SAT's λ ramp) follow a shortened schedule."""
    settings = {**TRAIN_SETTINGS, **options}
    if fine_tune_epochs != RAMP_EPOCHS and "schedule_scale" in settings:
        settings["schedule_scale"] = round(settings["schedule_scale"] * fine_tune_epochs / RAMP_EPOCHS, 6)
    return settings


def quickstart_plan(out: Path, epochs: int | None = None, n_train: int | None = None,
                    preset: Preset = DEFAULT) -> list[PlannedRun]:
    """The quickstart's runs: the ``standard`` base run, then every other defense fine-tuned from it.

    ``preset`` sizes them (:data:`DEFAULT` or :data:`FAST`); ``epochs`` (every run) and ``n_train`` override it.
    A run folder that already holds a run made with other settings is refused."""
    planned: list[PlannedRun] = []
    base: PlannedRun | None = None
    for defense, options in QUICKSTART:
        settings = _settings(options, epochs or preset.fine_tune_epochs)
        cfg = {**COMMON, "defense": defense, "epochs": preset.epochs, "n_train": n_train or preset.n_train}
        if base is not None:  # fine-tune from the standard run: a few CPU epochs then suffice
            cfg["init_from"] = str(out / base.name)
            cfg["epochs"] = preset.fine_tune_epochs
            cfg["n_train"] = n_train or preset.fine_tune_n_train
        if epochs is not None:
            cfg["epochs"] = epochs
        init = base.hash if base is not None else None
        action, existing = run_action(out / defense)
        p = PlannedRun(defense, cfg["seed"], cfg, settings, run_hash(cfg, settings, init), defense, action, existing,
                       suites=((SUITE, None),), base=base is None, init=init, out=str(out))
        if existing is not None:
            _check_same_run(p, Path(existing))
        base = base or p
        planned.append(p)
    return planned


def _check_same_run(p: PlannedRun, existing: Path) -> None:
    """Refuse to reuse or resume a run folder whose run was made with other settings (another preset)."""
    try:
        have = config_hash(runs.read_json(existing / "config.json")["config"])
    except (OSError, KeyError, ValueError):
        have = None
    if have != p.hash:
        raise UserError(f"{existing} holds a {p.name} run made with other quickstart settings; give another --out "
                        "(or remove that folder) to train these")


def _passes_per_image(p: PlannedRun) -> float:
    """Forward + backward passes per training image of the run's defense (its declared ``inherent_passes``)."""
    cls = DEFENSES.get(p.name)
    fields = {f.name for f in dataclasses.fields(cls.Options)} if dataclasses.is_dataclass(cls.Options) else set()
    opts = {k: v for k, v in p.settings.items() if k in fields}
    try:
        passes = build_defense(p.name, ThreatModel.parse(p.options["eps"], p.options["norm"]), opts).inherent_passes
    except (UserError, TypeError, ValueError):
        passes = None
    return float(sum(passes)) if passes else 2.0


class Overall:
    """The quickstart's overall progress: before each step, ``[k/n] defense: step — elapsed, time left``.

    The time left is the elapsed time scaled by the work left over the work done, where work counts the passes
    through the network (training: epochs × images × the defense's passes per image, plus validation; attack:
    an estimate per attacked image); finished runs and stored attack results count as no work."""

    def __init__(self, planned: list[PlannedRun], n_eval: int, print_line: Any) -> None:
        self.planned, self.print_line = planned, print_line
        self.t0 = time.perf_counter()
        self.work: dict[tuple[str, str], float] = {}
        for p in planned:
            o, s = p.options, p.settings
            val = s.get("val_n", 0) * 2.0 * (1 + s.get("val_attack_steps", 0))
            train = 0.0 if p.action == "done" else o["epochs"] * (o["n_train"] * _passes_per_image(p) + val)
            stored = p.existing is not None and (Path(p.existing) / "attacks" / f"{SUITE}.json").is_file()
            self.work[(p.name, "start")] = train
            self.work[(p.name, "attack")] = 0.0 if stored and p.action == "done" else n_eval * _ATTACK_PASSES
        self.order = [(p.name, step) for p in planned for step in ("start", "attack")]
        self.at = -1
        self.threads: int | None = None  # torch threads per step: N, 0 = the cores left free, None = unchanged

    def line(self, p: PlannedRun, step: str) -> str:
        """The progress line for ``step`` (``start`` or ``attack``) of run ``p``; marks the steps before it done."""
        self.at = self.order.index((p.name, step))
        done = sum(self.work[k] for k in self.order[: self.at])
        left = sum(self.work[k] for k in self.order[self.at:])
        elapsed = time.perf_counter() - self.t0
        eta = f"about {_clock(elapsed * left / done)} left" if done > 0 and elapsed > 1 else "time left: after the " \
            "first run"
        k = [q.name for q in self.planned].index(p.name) + 1
        if step == "start":
            what = ("reusing the finished run" if p.action == "done" else
                    f"{'resuming' if p.action == 'resume' else 'training'} {p.options['epochs']} epochs on "
                    f"{p.options['n_train']} synthetic images" + ("" if p.base else " (fine-tuned from standard)"))
        else:
            what = f"attacking with {SUITE}"
        return f"[{k}/{len(self.planned)}] {p.row}: {what} — {_clock(elapsed)} elapsed, {eta}"

    def __call__(self, p: PlannedRun, step: str) -> None:
        if step in ("start", "attack"):
            if self.threads is not None and (step == "start" or self.threads > 0):  # measured once per run
                torch.set_num_threads(self.threads if self.threads > 0 else free_threads())
            n = torch.get_num_threads()
            self.print_line(self.line(p, step) + f" ({n} thread{'' if n == 1 else 's'})")


def _busy_cores(window: float = 0.25) -> float | None:
    """Cores kept busy by other processes, measured over ``window`` seconds while this one waits (Linux
    ``/proc/stat``); None where it cannot be read."""
    def busy() -> float:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:8]]
        return fields[0] + fields[1] + fields[2] + fields[5] + fields[6]  # user, nice, system, irq, softirq

    try:
        b0, t0 = busy(), time.monotonic()
        time.sleep(window)
        b1, t1 = busy(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


def free_threads() -> int:
    """Torch threads for the next step: the cores other processes leave free (at least 1). Two OpenMP threads on
    a 2-core machine whose other core is busy spin against each other and run several times slower than one."""
    cores = os.cpu_count() or 1
    others = _busy_cores()
    if others is None:
        others = max(0.0, os.getloadavg()[0] - torch.get_num_threads()) if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - others)))


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def run_quickstart(out: str | Path | None = None, epochs: int | None = None, n_eval: int | None = None,
                   quiet: bool = False, console: Any = None, n_train: int | None = None, fast: bool = False,
                   threads: int | None = 0) -> str:
    """Train, attack (suite ``pgd-lite``) and report; returns the markdown report. Reuses finished runs.

    ``fast``: the :data:`FAST` preset (default folder ``runs/quickstart-fast``); ``epochs``, ``n_train`` and
    ``n_eval`` override the preset. ``console``: where the overall progress lines go (None: nowhere).
    ``threads``: torch CPU threads; 0 (default) picks, before each step, the cores other processes leave free;
    None leaves torch's setting alone."""
    preset = FAST if fast else DEFAULT
    out = Path(out or preset.out)
    n_eval = n_eval or preset.n_eval
    if (n_train is not None and n_train < 1) or n_eval < 1 or (epochs is not None and epochs < 1):
        raise UserError("--n-train, --n-eval and --epochs must be >= 1")
    if threads is not None and threads < 0:
        raise UserError(f"--threads must be >= 1 (or 0: the free cores), got {threads}")
    planned = quickstart_plan(out, epochs, n_train, preset)
    overall = Overall(planned, n_eval, (lambda m: console.print(m, markup=False, highlight=False)) if console else
                      (lambda m: None))
    overall.threads = threads
    previous = torch.get_num_threads()
    try:
        return _run(planned, overall, out, n_eval, quiet, fast, epochs, n_train)
    finally:
        torch.set_num_threads(previous)


def _run(planned: list[PlannedRun], overall: Overall, out: Path, n_eval: int, quiet: bool, fast: bool,
         epochs: int | None, n_train: int | None) -> str:
    """Execute the plan, report, and say where the runs are."""
    command = ["advbench", "quickstart", *(["--fast"] if fast else []), "--out", str(out)]
    for flag, value in (("--epochs", epochs), ("--n-train", n_train)):
        command += [flag, str(value)] if value is not None else []
    run_dirs = execute(planned, out=out, n_eval=n_eval, quiet=quiet, device="cpu", on_step=overall, command=command,
                       recipe="the quickstart (a standard run, then the defenses fine-tuned from it)")
    _grid, text = report(run_dirs, fmt="markdown")
    took = _clock(time.perf_counter() - overall.t0)
    overall.print_line(f"[{len(planned)}/{len(planned)}] done: {len(planned)} defenses trained and attacked in {took}")
    return text + (f"\nruns: {out}/ ({len(run_dirs)} runs, {took} min:s). Inspect one with: advbench show "
                   f"{run_dirs[-1]}\nhtml page with plots: advbench report {out} --format html -o {out}/report.html\n")
