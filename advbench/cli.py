"""The ``advbench`` command line (Typer): train, attack, report, list, show, quickstart."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.errors import UserError

app = typer.Typer(
    name="advbench",
    help="Train, attack and compare adversarially robust image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

STATE = {"debug": False}

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Extra option KEY=VALUE (repeatable), typed and validated: defense options (beta=6), "
    "train options (momentum=0.9), model.KEY, data.KEY.", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160  # pipes and logs: wide enough that tables are not truncated
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """advbench: one place to train defenses, attack them honestly and compare them as papers do."""
    STATE["debug"] = debug


@app.command()
def train(
    dataset: Annotated[Optional[str], typer.Option(help="Dataset (advbench list datasets). "
                                                  "[default: synthetic]")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model (advbench list models). [default: small-cnn]")] = None,
    defense: Annotated[Optional[str], typer.Option(help="Defense (advbench list defenses). "
                                                  "[default: standard]")] = None,
    eps: Annotated[Optional[str], typer.Option(help="Budget, paper style: 8/255, 0.031, 0.5. [default: 8/255]")] = None,
    norm: Annotated[Optional[str], typer.Option(help="Threat norm: linf or l2. [default: linf]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs. [default: 10]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size. [default: 128]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. [default: 0.1]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (torch, numpy, python; data order). [default: 0]")] = None,
    n_train: Annotated[Optional[int], typer.Option(help="Use only the first N (shuffled, after the validation "
                                                        "hold-out) training images.")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset root [default: ~/.cache/advbench/data].")] = None,
    download: Annotated[Optional[bool], typer.Option("--download/--no-download",
                                                     help="Download missing datasets.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N]. [default: auto]")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Start from a run's (or checkpoint file's) weights.")] = None,
    out: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Run name "
                                               "[default: dataset-model-defense-norm-eps-sSEED].")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML recipe (keys as the flags; "
                                                   "[defense]/[model]/[dataset] tables for options).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Resume this run exactly where it stopped.")] = None,
    nproc: Annotated[Optional[int], typer.Option(help="Train with N processes on this machine (data parallel; "
                                                 "relaunches through torchrun; one GPU each on CUDA). "
                                                 "--batch-size stays the global batch.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision of the training step: bf16, fp16 (with loss "
                                               "scaling) or off. [default: off]")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                          help="NHWC memory format (faster convolutions on "
                                                          "GPUs).")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the network "
                                                     "(not for double-backprop defenses).")] = None,
    grad_checkpointing: Annotated[Optional[bool], typer.Option(
        "--grad-checkpointing/--no-grad-checkpointing", help="Recompute residual blocks in the backward pass "
        "to save memory (wrn-*, resnet*, preact-*).")] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn", help="SyncBatchNorm across "
                                                    "processes (CUDA only).")] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a defense; writes a run directory (config, metrics, checkpoints, summary).

    Data parallel: --nproc N, or torchrun --nproc-per-node N -m advbench train ... (multi-node:
    see docs/scaling.md). Rank 0 writes the run directory; --resume works the same way.
    """
    import os

    from advbench import api

    options = {"dataset": dataset, "model": model, "defense": defense, "eps": eps, "norm": norm, "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "seed": seed, "n_train": n_train, "data_dir": data_dir,
               "download": download, "device": device, "init_from": init_from, "amp": amp,
               "channels_last": channels_last, "compile": compile_, "grad_checkpointing": grad_checkpointing,
               "sync_bn": sync_bn}
    if norm is not None:
        from advbench.threat import parse_norm

        options["norm"] = parse_norm(norm)
    if resume is not None:
        given = [k for k, v in options.items() if v is not None and k != "epochs"]
        if given or set_ or config:
            raise UserError(f"--resume continues a run with its saved config; drop --{given[0].replace('_', '-')}"
                            if given else "--resume continues a run with its saved config; drop --set/--config")
    if nproc is not None and nproc != 1:
        _check_before_launch(options, set_, config, resume)  # one clear line here rather than N tracebacks
        raise typer.Exit(_relaunch_train(nproc))
    run_dir, summary = api.train(out=out, name=name, resume=resume, settings=set_ or [], config_file=config,
                                 quiet=quiet, command=["advbench", *sys.argv[1:]], **options)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 reports
        return
    con = _console()
    best = summary.get("best_val_robust_acc")
    tail = f", best val robust {100 * best:.1f}% at epoch {summary['best_epoch'] + 1}" if best is not None else ""
    con.print(f"trained {summary['defense']} for {summary['epochs_completed']} epochs{tail}")
    con.print(f"run: {run_dir}")


def _check_before_launch(options: dict, settings: list[str] | None, config: Path | None,
                         resume: Path | None) -> None:
    """Validate a ``train --nproc`` command in this process (config, names, run directory) before launching."""
    from advbench import api, runs
    from advbench.data import DATASETS
    from advbench.models import MODELS

    if resume is not None:
        runs.resolve_run(resume)
        return
    cfg = api.make_train_config(options, settings or [], config)
    MODELS.canonical(cfg.model)
    DATASETS.canonical(cfg.dataset)
    cfg.validate()


def _relaunch_train(nproc: int) -> int:
    """Run this ``advbench train`` command line (without ``--nproc``) as ``nproc`` torchrun processes on this
    machine (:func:`_run_torchrun`); returns their exit code (130 after a Ctrl-C: the processes saved last.pt)."""
    args, skip = [], False
    for arg in STATE.get("argv") or sys.argv[1:]:  # the command line as typed, minus --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    return _run_torchrun(nproc, args)


@app.command()
def attack(
    ctx: typer.Context,
    run: Annotated[Optional[Path], typer.Argument(help="Run directory to attack (or use --model-module).",
                                                  show_default=False)] = None,
    suite: Annotated[str, typer.Option(help="Attack suite (advbench list suites).")] = "pgd",
    attack_: Annotated[Optional[str], typer.Option("--attack", help="Run a single attack instead of a suite; "
                                                   "its options via --set.")] = None,
    eps: Annotated[Optional[str], typer.Option(help="Eps or comma list (4/255,8/255) [default: the run's eps; "
                                               "8/255 with --model-module].")] = None,
    norm: Annotated[Optional[str], typer.Option(help="linf or l2 [default: the run's norm; linf].")] = None,
    n_eval: Annotated[int, typer.Option(help="Evaluate the first N test images, in order.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Attack batch size.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of random starts (fixed, recorded).")] = 0,
    checkpoint: Annotated[Optional[str], typer.Option(help="best, last or a checkpoint file [default: best]; with "
                                                      "--model-module a state-dict file.")] = None,
    model_module: Annotated[Optional[str], typer.Option(
        "--model-module", help="Attack any model: pkg.module:factory or path/to/file.py:factory returning an "
        "nn.Module that takes [0, 1] inputs and returns logits (use with --dataset, --checkpoint, --out). This "
        "IMPORTS AND RUNS that code: name only code you trust. The working directory is not searched; give a "
        "file path for a module there.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset for --model-module (its test split).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset root for --model-module.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results directory for --model-module "
                                                "[default: runs/<factory>].")] = None,
    source: Annotated[Optional[Path], typer.Option(help="Run whose model transfer attacks are crafted on "
                                                   "(suite blackbox, --attack transfer).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    force: Annotated[bool, typer.Option(help="Recompute even if the same evaluation is stored.")] = False,
    nproc: Annotated[int, typer.Option(help="Shard the evaluation over N processes on this machine (relaunches "
                                       "through torchrun; one GPU each with --device cuda). Same per-sample "
                                       "results as 1 process.")] = 1,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Attack a trained run (or any model); writes attacks/SUITE.json with per-sample results and checks.

    Under torchrun (torchrun --nproc-per-node N -m advbench attack ...) or with --nproc N, each process
    evaluates a shard of the batches and rank 0 writes the merged result.
    """
    import os

    from advbench import api

    if nproc != 1:
        raise typer.Exit(_relaunch_attack(ctx, nproc))
    if norm is not None:
        from advbench.threat import parse_norm

        norm = parse_norm(norm)
    common = {"suite": suite, "attack": attack_, "attack_options": set_ or [], "eps": eps, "n_eval": n_eval,
              "batch_size": batch_size, "seed": seed, "device": device, "force": force, "quiet": quiet,
              "source": source}
    if model_module is not None:
        if run is not None:
            raise UserError("give either a RUN directory or --model-module, not both")
        if not dataset:
            raise UserError("--model-module needs --dataset NAME (advbench list datasets)")
        where = out or Path("runs") / api._slug(model_module.split(":")[-1])
        result = api.evaluate(model_module, dataset=dataset, data_dir=data_dir, norm=norm or "linf", out=where,
                              checkpoint=checkpoint, **{**common, "eps": eps or "8/255"})
        target = where
    else:
        if run is None:
            raise UserError("missing RUN directory; give a run to attack, or --model-module pkg.module:factory")
        for flag, value in (("--dataset", dataset), ("--data-dir", data_dir), ("--out", out)):
            if value is not None:
                raise UserError(f"{flag} applies to --model-module; a run attacks its own test set and writes to "
                                "RUN/attacks/")
        result = api.attack(run, norm=norm, checkpoint=checkpoint or "best", **common)
        target = run
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank has the result; rank 0 prints it
        _print_attack_result(result, target)


def _relaunch_attack(ctx: typer.Context, nproc: int) -> int:
    """Run this ``attack`` command (without ``--nproc``) as ``nproc`` torchrun processes on this machine; their
    exit code. The command line is rebuilt from the parsed options (also when called as ``main([...])``)."""
    args: list[str] = ["--debug"] if STATE["debug"] else []
    args.append(ctx.info_name or "attack")
    positional: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in {"nproc", "ctx"} or value is None:
            continue
        if param.param_type_name == "argument":
            positional.append(str(value))
        elif param.param_type_name == "option":
            if param.is_flag:
                if value != param.default:
                    args.append(param.opts[0] if value else (param.secondary_opts or param.opts)[0])
            elif param.multiple:
                for item in value:
                    args += [param.opts[0], str(item)]
            elif value != param.default:
                args += [param.opts[0], str(value)]
    return _run_torchrun(nproc, [*args, *positional])


def _run_torchrun(nproc: int, args: list[str]) -> int:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m advbench ARGS``; its exit code.

    Ctrl-C reaches torchrun and its processes from the terminal; this process waits while they save their
    state, and passes a SIGTERM it receives on to torchrun.
    """
    import signal
    import subprocess

    from advbench.engine.distributed import env_world_size

    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if env_world_size() > 1:
        raise UserError("--nproc cannot be used inside torchrun; torchrun already chose the number of processes")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "advbench", *args]
    proc = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))  # pass it on
    interrupted = False
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # torchrun and its processes got the same Ctrl-C: wait while they save
                interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if interrupted and code != 0:
        return 130
    return 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + signal number


def _print_attack_result(result: dict, target: Path) -> None:
    con = _console()
    from rich.table import Table

    table = Table(title=f"{result['suite']} on {target} (first {result['n_eval']} test images)")
    table.add_column("attack")
    table.add_column("eps")
    table.add_column("accuracy", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row("Clean", "", f"{100 * result['clean']['accuracy']:.2f}%", "")
    for r in result["results"]:
        table.add_row(r["label"], f"{r['norm']} {r['eps']}", f"{100 * r['accuracy']:.2f}%", f"{r['seconds']:.1f}")
    for r in result["robust"]:
        table.add_row("Worst case", f"{r['norm']} {r['eps']}", f"{100 * r['accuracy']:.2f}%", "")
    con.print(table)
    for s in result.get("skipped", []):
        con.print(f"skipped {s['label']}: {s['reason']}", markup=False)
    checks = result.get("checks") or {}
    if checks:
        bad = [c for c in checks["checks"] if c["status"] != "pass"]
        con.print(f"checks: {checks['status']}" + ("" if bad else f" ({len(checks['checks'])} checks)"), markup=False)
        for c in bad:
            con.print(f"  {c['status']}: {c['name']}: {c['message']}", markup=False)
    con.print(f"results: {Path(target) / 'attacks' / (result['suite'] + '.json')}")


@app.command()
def report(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Run directories or a parent directory.")] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="markdown, csv, latex, json or html.")] = "markdown",
    suite: Annotated[Optional[str], typer.Option(help="Only this suite.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,
    grid: Annotated[Optional[str], typer.Option(help="Lay runs out as a paper table, PAPER:TABLE (soar:table1); "
                                                "see 'advbench reproduce --list'.")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="With --grid: published number (and difference) beside "
                                        "each measured one.")] = False,
    plots: Annotated[Optional[Path], typer.Option(help="Write PNG plots (robust acc vs eps, training curves, "
                                                  "cost vs robustness) into this directory.")] = None,
) -> None:
    """Compare runs: rows = defenses, columns = clean + attacks + worst case, mean ± std over seeds.

    Formats: markdown, csv, latex, json, html (standalone page with plots)."""
    from advbench import api

    _grid, text = api.report(paths or [Path("runs")], fmt=format_, suite=suite, output=output, grid=grid,
                             paper=paper, plots=plots)
    if output:
        _console().print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def reproduce(
    paper: Annotated[Optional[str], typer.Argument(help="Paper: soar, scorpio, randomized-at, gradient-reg, sat.",
                                                   show_default=False)] = None,
    table: Annotated[Optional[str], typer.Option("--table", "-t", help="Table as printed: 1, 2a, ...")] = None,
    scale: Annotated[str, typer.Option(help="smoke (minutes on a CPU; synthetic data when the paper's is not on "
                                       "disk) or paper (the paper's recipe).")] = "smoke",
    list_tables: Annotated[bool, typer.Option("--list", help="List every table of every paper with its "
                                              "status.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (train / resume / done) and "
                                          "exit.")] = False,
    jobs: Annotated[int, typer.Option(help="Independent runs trained concurrently (processes).")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads per process [default: torch's]; keep "
                                                   "jobs x threads <= free cores (1 on a busy machine).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Override the dataset (either scale).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Override the model (either scale).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma list of seeds [default: the recipe's].")] = None,
    out: Annotated[Path, typer.Option(help="Runs directory (runs go to OUT/PAPER-tableN-SCALE/).")] = Path("runs"),
    format_: Annotated[str, typer.Option("--format", "-f", help="markdown, latex, csv, json or html.")] = "markdown",
    paper_numbers: Annotated[bool, typer.Option("--paper/--no-paper", help="Published numbers beside.")] = True,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the grid to FILE.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Reproduce a paper table: plan its runs, skip finished ones, train + attack the rest, render the grid."""
    if list_tables or paper is None:
        from rich.table import Table

        from advbench.papers.recipes import all_tables

        t = Table(title="paper tables (advbench reproduce PAPER --table N)")
        for col in ("paper", "table", "status", "detail"):
            t.add_column(col)
        for p, tab, status, detail in all_tables():
            t.add_row(p, tab, status, detail)
        _console().print(t)
        return
    if table is None:
        raise UserError(f"missing --table; list the tables of {paper} with 'advbench reproduce --list'")
    from advbench import api

    seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    con = _console(stderr=True)
    _obj, text = api.reproduce(paper, table, scale=scale, out=out, dataset=dataset, model=model, seeds=seed_list,
                               dry_run=dry_run, jobs=jobs, fmt=format_, show_paper=paper_numbers, device=device,
                               quiet=quiet, output=output, log=lambda m: con.print(m, markup=False), threads=threads)
    if output and not dry_run:
        _console().print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="defenses, attacks, suites, datasets or models.")],
) -> None:
    """List registered defenses, attacks, suites, datasets or models."""
    from rich.table import Table

    kinds = ("defenses", "attacks", "suites", "datasets", "models")
    key = what.lower()
    if key not in kinds:
        from advbench.registry import unknown_name_message

        raise UserError(unknown_name_message("list", what, list(kinds)))
    table = Table(title=key)
    table.add_column("name")
    table.add_column("description")
    for name, desc in _registry_rows(key):
        table.add_row(name, desc)
    _console().print(table)


def _registry_rows(key: str) -> list[tuple[str, str]]:
    if key == "defenses":
        from advbench.defenses import DEFENSES as reg
    elif key == "attacks":
        from advbench.attacks import ATTACKS as reg
    elif key == "suites":
        from advbench.attacks import SUITES as reg

        return [(n, reg.get(n).description + " — " + ", ".join(e.label for e in reg.get(n).entries))
                for n in reg.names()]
    elif key == "datasets":
        from advbench.data import DATASETS as reg
    else:
        from advbench.models import MODELS as reg
    return [(n, reg.help(n)) for n in reg.names()]


@app.command()
def show(run: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """Show a run: config, per-epoch metrics, attack results."""
    from rich.table import Table

    from advbench import runs

    run_dir = runs.resolve_run(run)
    record = runs.read_json(run_dir / "config.json")
    cfg = record["config"]
    con = _console()
    summary = runs.read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    con.print(f"[bold]{run_dir}[/bold]  status: {summary.get('status', '?')}")
    con.print(f"{cfg['defense']} on {cfg['dataset']} / {cfg['model']}, {cfg['norm']} eps {cfg['eps']}, "
              f"seed {cfg['seed']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}")
    if cfg.get("defense_options"):
        con.print("defense options: " + ", ".join(f"{k}={v}" for k, v in cfg["defense_options"].items()))
    if record.get("command"):
        con.print(f"command: {record['command']}")
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
    for f in sorted((run_dir / "attacks").glob("*.json")) if (run_dir / "attacks").is_dir() else []:
        res = runs.read_json(f)
        line = ", ".join(f"{r['label']} {100 * r['accuracy']:.2f}%" for r in res["results"])
        con.print(f"attacks/{f.name}: clean {100 * res['clean']['accuracy']:.2f}%, {line} "
                  f"(n={res['n_eval']})")


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Runs directory.")] = Path("runs/quickstart"),
    epochs: Annotated[Optional[int], typer.Option(help="Override the epochs of every defense.")] = None,
    n_eval: Annotated[int, typer.Option(help="Test images attacked.")] = 500,
    quiet: QuietOpt = False,
) -> None:
    """Train the quickstart defenses on the embedded synthetic dataset, attack them, print the report."""
    from advbench.quickstart import run_quickstart

    text = run_quickstart(out=out, epochs=epochs, n_eval=n_eval, quiet=quiet, console=_console())
    sys.stdout.write(text)


def _click_exceptions():
    """Click's exception classes: typer >= 0.2x vendors click as ``typer._click``; older typer uses click."""
    try:
        from typer._click import exceptions as exc_mod  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as exc_mod
    exit_cls = getattr(exc_mod, "Exit", typer.Exit)
    abort_cls = getattr(exc_mod, "Abort", typer.Abort)
    return exc_mod.UsageError, exit_cls, abort_cls


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit 2 for user errors; 130 after a clean interrupt."""
    from advbench.engine.signals import Interrupted

    usage_error, exit_error, abort_error = _click_exceptions()

    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["argv"] = args  # `train --nproc` relaunches this command line under torchrun
    debug = "--debug" in args
    err = _console(stderr=True)
    try:
        # with standalone_mode=False click returns (not raises) the code of a typer.Exit raised by a command
        result = command.main(args=args, prog_name="advbench", standalone_mode=False)
    except exit_error as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except abort_error:
        err.print("aborted")
        return 130
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `advbench`: show the help
            sys.stdout.write(exc.format_message() + "\n")
            return 0
        if debug:
            raise
        where = f"advbench {exc.ctx.command_path.split(' ', 1)[1]} --help" if exc.ctx and " " in exc.ctx.command_path \
            else "advbench --help"
        err.print(f"error: {exc.format_message()} (see {where})", markup=False)
        return 2
    except UserError as exc:
        if debug:
            raise
        err.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except Interrupted as exc:
        where = f"; resume with: advbench train --resume {exc.run_dir}" if exc.run_dir else ""
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; rank 0 says so
            err.print(f"interrupted: {exc}; state saved{where}", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
