"""``advbench list``, ``advbench show`` and ``advbench quickstart``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.cli.app import QuietOpt, app, console
from advbench.errors import UserError


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="defenses, attacks, suites, datasets, models, or options (with NAME).")],
    name: Annotated[Optional[str], typer.Argument(help="With 'options': a defense, attack, model or dataset; its "
                                                       "--set keys are listed.", show_default=False)] = None,
) -> None:
    """List registered defenses, attacks, suites, datasets or models; 'list options NAME' lists NAME's --set keys."""
    from rich.table import Table

    kinds = ("defenses", "attacks", "suites", "datasets", "models", "options")
    key = what.lower()
    if key not in kinds:
        from advbench.registry import unknown_name_message

        raise UserError(unknown_name_message("list", what, list(kinds)))
    if key == "options":
        if not name:
            raise UserError("'advbench list options NAME' needs a defense, attack, model or dataset name")
        title, rows = _option_rows(name)
        table = Table(title=title)
        for col in ("--set key", "type", "default", "help"):
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console().print(table)
        return
    if name is not None:
        raise UserError(f"'advbench list {key}' takes no name (did you mean 'advbench list options {name}'?)")
    table = Table(title=key)
    table.add_column("name")
    table.add_column("description")
    for item, desc in _registry_rows(key):
        table.add_row(item, desc)
    console().print(table)


def _option_rows(name: str) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The --set keys of the defense, attack, model or dataset called ``name`` (the first registry that has it)."""
    from advbench.attacks import ATTACKS
    from advbench.core.options import describe_fields
    from advbench.data import DATASETS
    from advbench.defenses import DEFENSES
    from advbench.models import MODELS, model_options

    if name in DEFENSES:
        return f"options of defense {name} (--set KEY=VALUE)", describe_fields(DEFENSES.get(name).Options)
    if name in ATTACKS:
        return f"options of attack {name} (--attack {name} --set KEY=VALUE)", describe_fields(ATTACKS.get(name).Options)
    if name in MODELS:
        rows = [(f"model.{k}", type(v).__name__, repr(v), "") for k, v in model_options(name).items()]
        return f"options of model {name} (--set model.KEY=VALUE)", rows
    if name in DATASETS:
        loader = DATASETS.get(name)
        rows = [(f"data.{k}", spec.type.__name__, repr(spec.default), spec.help) for k, spec in loader.options.items()]
        return f"options of dataset {name} (--set data.KEY=VALUE)", rows
    from advbench.registry import unknown_name_message

    raise UserError(unknown_name_message("defense, attack, model or dataset", name,
                                         [*DEFENSES.names(), *ATTACKS.names(), *MODELS.names(), *DATASETS.names()]))


def _registry_rows(key: str) -> list[tuple[str, str]]:
    """(name, help) of a registry; defenses, attacks, models and datasets come from the source catalogue (no
    torch); suites, some of which paper recipes define, from the imported registry."""
    if key == "suites":
        from advbench import api  # noqa: F401  (installs the paper-defined suites)
        from advbench.attacks import SUITES as reg

        return [(n, reg.get(n).description + " — " + ", ".join(e.label for e in reg.get(n).entries))
                for n in reg.names()]
    from advbench.core import catalog

    return [(e.name, e.help) for e in catalog.entries(key.rstrip("s"))]


@app.command()
def show(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Show a run: config, per-epoch metrics, attack results."""
    from rich.table import Table

    from advbench import runs
    from advbench.config import run_config

    run_dir = runs.resolve_run(run)
    record, config = run_config(run_dir)
    cfg = config.__dict__
    con = console()
    summary = runs.read_object(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    con.print(f"[bold]{run_dir}[/bold]  status: {summary.get('status', '?')}", markup=False)
    con.print(f"{cfg['defense']} on {cfg['dataset']} / {cfg['model']}, {cfg['norm']} eps {cfg['eps']}, "
              f"seed {cfg['seed']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}", markup=False)
    if cfg.get("defense_options"):
        con.print("defense options: " + ", ".join(f"{k}={v}" for k, v in cfg["defense_options"].items()), markup=False)
    if record.get("command"):
        con.print(f"command: {record['command']}", markup=False)
    metrics = runs.read_jsonl(run_dir / "metrics.jsonl")
    if metrics:
        t = Table(title="epochs")
        names = {"loss": "loss", "acc": "train acc", "adv_acc": "train adv", "val_clean_acc": "val clean",
                 "val_robust_acc": "val robust", "train_seconds": "s/epoch", "forward_passes": "fwd/step",
                 "backward_passes": "bwd/step"}
        cols = [c for c in names if c in metrics[-1]]
        t.add_column("epoch")
        for c in cols:
            t.add_column(names[c], justify="right")
        for m in metrics:
            t.add_row(str(m["epoch"] + 1), *[
                (f"{100 * m[c]:.2f}%" if c.endswith("acc") else f"{m[c]:.3g}") if c in m else "" for c in cols])
        con.print(t)
    for f in sorted((run_dir / "attacks").glob("[!.]*.json")) if (run_dir / "attacks").is_dir() else []:
        try:
            res = runs.read_object(f, ("results", "clean", "n_eval"))
            line = ", ".join(f"{r['label']} {100 * float(r['accuracy']):.2f}%" for r in res["results"])
            con.print(f"attacks/{f.name}: clean {100 * float(res['clean']['accuracy']):.2f}%, {line} "
                      f"(n={res['n_eval']})", markup=False)
        except (UserError, KeyError, TypeError, ValueError) as err:  # one broken result does not hide the rest
            reason = str(err) if isinstance(err, UserError) else f"malformed ({type(err).__name__}: {err})"
            console(stderr=True).print(f"warning: skipped {f}: {reason}", markup=False)
    for f in sorted((run_dir / "certify").glob("[!.]*.json")) if (run_dir / "certify").is_dir() else []:
        try:
            res = runs.read_object(f, ("certified", "label", "n_eval", "norm"))
            line = ", ".join(f"{r['eps']} {100 * float(r['accuracy']):.2f}%" for r in res["certified"])
            con.print(f"certify/{f.name}: {res['label']} ({res['norm']}) certified accuracy at {line} "
                      f"(n={res['n_eval']})", markup=False)
        except (UserError, KeyError, TypeError, ValueError) as err:
            reason = str(err) if isinstance(err, UserError) else f"malformed ({type(err).__name__}: {err})"
            console(stderr=True).print(f"warning: skipped {f}: {reason}", markup=False)


@app.command()
def quickstart(
    out: Annotated[Optional[Path], typer.Option(help="Runs directory [default: runs/quickstart; with --fast "
                                                "runs/quickstart-fast].", show_default=False)] = None,
    fast: Annotated[bool, typer.Option("--fast", help="About 1.5 minutes on 2 cores: the same standard run, then 2 "
                                       "fine-tuning epochs on 1500 images, 200 attacked images (noisier "
                                       "numbers).")] = False,
    n_train: Annotated[Optional[int], typer.Option(help="Training images of every run [default: 3000; --fast: "
                                                   "1500 for the fine-tuned runs].", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override the epochs of every defense.")] = None,
    n_eval: Annotated[Optional[int], typer.Option(help="Test images attacked [default: 500; --fast 200].",
                                                  show_default=False)] = None,
    threads: Annotated[int, typer.Option(help="Torch CPU threads; 0: before each step, the cores other processes "
                                         "leave free (2 threads on a 2-core machine with one busy core run "
                                         "several times slower than 1).")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train the quickstart defenses on the embedded synthetic dataset, attack them, print the report.

    An overall line before each step shows the defense (k of n), the time so far and the time left."""
    from advbench.api.quickstart import run_quickstart

    text = run_quickstart(out=out, epochs=epochs, n_eval=n_eval, quiet=quiet, n_train=n_train, fast=fast,
                          threads=threads, console=None if quiet else console(stderr=True))
    sys.stdout.write(text)
