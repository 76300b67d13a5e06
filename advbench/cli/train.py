"""``advbench train``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.cli.app import STATE, QuietOpt, SetOpt, ThreadsOpt, app, check_names, console, set_threads
from advbench.cli.launch import run_torchrun
from advbench.errors import UserError


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
    recipe: Annotated[str, typer.Option(help="auto: with no schedule given (no --epochs, --lr, --batch-size, "
                                         "--n-train, --init-from, --config, --set, --name), train the defense's own "
                                         "paper recipe (the paper's on its dataset; a standard base run plus a short "
                                         "fine-tune elsewhere, as reproduce's smoke scale); defaults: advbench's "
                                         "generic defaults.")] = "auto",
    fresh: Annotated[bool, typer.Option("--fresh", help="Train a new run even if this very configuration was "
                                        "trained under --out before (by default it is reused, or resumed).")] = False,
    threads: ThreadsOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a defense; writes a run directory (config, metrics, checkpoints, summary).

    Data parallel: --nproc N, or torchrun --nproc-per-node N -m advbench train ... (multi-node:
    see docs/scaling.md). Rank 0 writes the run directory; --resume works the same way.
    """

    check_names(defense=defense, dataset=dataset, model=model)  # one line in a fraction of a second, before torch
    if threads is not None and threads < 1:
        set_threads(threads)  # the one-line error, before a relaunch
    if eps is not None:
        from advbench.threat import ThreatModel

        ThreatModel.parse(eps, norm or "linf")
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
    if recipe not in ("auto", "defaults"):
        raise UserError(f"--recipe {recipe!r}: choose auto or defaults")
    set_threads(threads)  # every torchrun worker applies it too (the option travels with the command line)
    schedule_given = any(v is not None for v in (epochs, lr, batch_size, n_train, init_from, config, name, resume)) \
        or bool(set_)
    command = ["advbench", *sys.argv[1:]]
    trained = _train_with_own_recipe(options, model, out, quiet, command) \
        if recipe == "auto" and not schedule_given and not fresh else None
    run_dir, summary = trained or api.train(out=out, name=name, resume=resume, settings=set_ or [],
                                            config_file=config, quiet=quiet, command=command, fresh=fresh, **options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 reports
        _print_trained(run_dir, summary)


def _train_with_own_recipe(options: dict, model: str | None, out: Path, quiet: bool,
                           command: list[str]) -> tuple[Path, dict] | None:
    """``--recipe auto`` with no schedule given: the defense's paper recipe (None when no paper row trains it)."""
    from advbench.api.recipe import train_with_recipe
    from advbench.resolve import make_train_config

    cfg = make_train_config(options, [], None)  # the defense, data, model and threat as given, checked
    return train_with_recipe(defense=cfg.defense, dataset=cfg.dataset, model=model, eps=cfg.eps, norm=cfg.norm,
                             seed=cfg.seed, out=out, device=cfg.device, quiet=quiet, command=command,
                             data_dir=options.get("data_dir"), download=options.get("download"))


def _print_trained(run_dir: Path, summary: dict) -> None:
    """What was trained (or reused, or resumed), its best validation number, a chance-level warning, where."""
    con = console()
    if summary.get("reused") == "completed":
        when = summary.get("updated", "earlier")
        con.print(f"reused the finished run {run_dir} (the same configuration, written {when}); --fresh trains a "
                  "new one", markup=False)
    elif summary.get("reused") == "resumed":
        con.print(f"resumed the interrupted run {run_dir} (the same configuration); --fresh starts a new one",
                  markup=False)
    best = summary.get("best_val_robust_acc")
    tail = f", best val robust {100 * best:.1f}% at epoch {summary['best_epoch'] + 1}" if best is not None else ""
    con.print(f"trained {summary['defense']} for {summary['epochs_completed']} epochs{tail}")
    if summary.get("near_chance"):
        con.print(f"warning: {summary['notes'][-1]}", markup=False)
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
    return run_torchrun(nproc, args)
