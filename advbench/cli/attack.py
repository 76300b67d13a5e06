"""``advbench attack``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.cli.app import STATE, QuietOpt, SetOpt, ThreadsOpt, app, console, set_threads
from advbench.cli.launch import run_torchrun
from advbench.errors import UserError


@app.command()
def attack(
    ctx: typer.Context,
    run: Annotated[Optional[Path], typer.Argument(help="Run directory to attack (or use --model-module).",
                                                  show_default=False)] = None,
    suite: Annotated[Optional[str], typer.Option(help="Attack suite (advbench list suites). [default: pgd]")] = None,
    attack_: Annotated[Optional[str], typer.Option("--attack", help="Run a single attack instead of a suite; "
                                                   "its options via --set.")] = None,
    eps: Annotated[Optional[str], typer.Option(help="Eps or comma list (4/255,8/255) [default: the run's eps; "
                                               "8/255 with --model-module].")] = None,
    norm: Annotated[Optional[str], typer.Option(help="linf or l2 [default: the run's norm; linf].")] = None,
    n_eval: Annotated[int, typer.Option(help="Evaluate the first N test images, in order.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Attack batch size.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of random starts (fixed, recorded).")] = 0,
    sample_seed: Annotated[Optional[int], typer.Option(
        "--sample-seed", help="Attack N test images drawn at random with this seed instead of the first N "
        "(recorded in the result; gradient-reg Table 4: 'We attack 1000 randomly selected images').",
        show_default=False)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="best, last or a checkpoint file [default: best]; with "
                                                      "--model-module a state-dict file.")] = None,
    model_module: Annotated[Optional[str], typer.Option(
        "--model-module", help="Attack any model: pkg.module:factory or path/to/file.py:factory returning an "
        "nn.Module that takes [0, 1] inputs and returns logits (use with --dataset, --checkpoint, --out). This "
        "IMPORTS AND RUNS that code: name only code you trust. The working directory is not searched; give a "
        "file path for a module there.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="A RobustBench zoo model, robustbench:NAME (extra "
                                                 "advbench[robustbench]; its weights must be in robustbench's model "
                                                 "folder or downloadable).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset for --model-module (its test split).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset root for --model-module.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results directory for --model-module [default: "
                                                "runs/<factory>]; with no RUN, the runs folder whose finished runs "
                                                "are attacked [default: runs].")] = None,
    source: Annotated[Optional[Path], typer.Option(help="Run whose model transfer attacks are crafted on "
                                                   "(suite blackbox, --attack transfer).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    force: Annotated[bool, typer.Option(help="Recompute even if the same evaluation is stored.")] = False,
    adapt: Annotated[bool, typer.Option(help="Probe the model first; where it finds gradient masking (randomized, "
                                        "non-differentiable, saturated logits) add the attack suited to it (EOT, "
                                        "BPDA, DLR loss) and report the adapted worst case beside the unadapted "
                                        "one.")] = False,
    nproc: Annotated[int, typer.Option(help="Shard the evaluation over N processes on this machine (relaunches "
                                       "through torchrun; one GPU each with --device cuda). Same per-sample "
                                       "results as 1 process.")] = 1,
    threads: ThreadsOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Attack a trained run (or any model); writes attacks/SUITE.json with per-sample results and checks.

    Under torchrun (torchrun --nproc-per-node N -m advbench attack ...) or with --nproc N, each process
    evaluates a shard of the batches and rank 0 writes the merged result.
    """

    from advbench import api

    if threads is not None and threads < 1:
        set_threads(threads)  # the one-line error, before a relaunch
    if nproc != 1:
        raise typer.Exit(_relaunch_attack(ctx, nproc))
    set_threads(threads)
    if norm is not None:
        from advbench.threat import parse_norm

        norm = parse_norm(norm)
    if suite is not None and attack_ is not None:
        raise UserError("give --suite or --attack, not both (--attack runs one attack instead of a suite)")
    if checkpoint is not None and not checkpoint.strip():
        raise UserError("--checkpoint is empty; give best, last or a checkpoint file")
    common = {"suite": suite, "attack": attack_, "attack_options": set_ or [], "eps": eps, "n_eval": n_eval,
              "batch_size": batch_size, "seed": seed, "device": device, "force": force, "quiet": quiet,
              "source": source, "adapt": adapt}
    if sample_seed is not None:
        if model is not None or model_module is not None:
            raise UserError("--sample-seed applies to runs (their own test sets); drop it with --model or "
                            "--model-module")
        common["sample_seed"] = sample_seed
    if model is not None:
        if run is not None or model_module is not None:
            raise UserError("give one of RUN, --model-module or --model robustbench:NAME")
        if not model.startswith("robustbench:"):
            raise UserError(f"--model {model!r}: write robustbench:NAME (a RobustBench zoo model)")
        where = out or Path("runs") / f"robustbench-{model.split(':', 1)[1]}"
        result = api.evaluate_zoo_model(model, dataset=dataset or "cifar10", data_dir=data_dir, norm=norm or "linf",
                                        out=where, **{**common, "eps": eps or "8/255"})
        target = where
    elif model_module is not None:
        if run is not None:
            raise UserError("give either a RUN directory or --model-module, not both")
        if not dataset:
            raise UserError("--model-module needs --dataset NAME (advbench list datasets)")
        from advbench.runs import slug

        where = out or Path("runs") / slug(model_module.split(":")[-1], default="model")
        result = api.evaluate(model_module, dataset=dataset, data_dir=data_dir, norm=norm or "linf", out=where,
                              checkpoint=checkpoint, **{**common, "eps": eps or "8/255"})
        target = where
    elif run is None:  # the card's `advbench attack --suite autoattack`: every finished run under the runs folder
        if dataset is not None or data_dir is not None:
            raise UserError("--dataset and --data-dir apply to --model-module; runs attack their own test sets")
        _attack_all(out or Path("runs"), checkpoint, norm, common)
        return
    else:
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
    return run_torchrun(nproc, [*args, *positional])


def _verdict(r: dict) -> str:
    """The verdict's summary in plain words ("trustworthy", "likely inflated: ...; run with --adapt")."""
    return str((r.get("verdict") or {}).get("summary", ""))


def _attack_all(folder: Path, checkpoint: str | None, norm: str | None, common: dict) -> None:
    """Attack every finished run under ``folder`` (those with this suite's result already stored are reused, and
    say so); the list comes first."""
    from advbench import api, runs

    if not folder.is_dir():
        raise UserError(f"no RUN given and no runs folder {folder}; train a run first or give RUN")
    found = [r for r in runs.find_runs([folder]) if _finished(r)]
    if not found:
        raise UserError(f"no RUN given and no finished run under {folder}; train one first (advbench train ...)")
    con = console()
    what = common["attack"] or common["suite"] or "pgd"
    con.print(f"attacking {len(found)} finished run(s) under {folder} with {what}:", markup=False)
    for r in found:
        con.print(f"  {r}", markup=False)
    for r in found:
        _print_attack_result(api.attack(r, norm=norm, checkpoint=checkpoint or "best", **common), r)


def _finished(run: Path) -> bool:
    from advbench import runs

    try:
        return runs.read_object(run / "summary.json").get("status") == "completed"
    except UserError:
        return False


def _print_attack_result(result: dict, target: Path) -> None:
    con = console()
    if result.get("reused"):
        con.print(f"reused the stored result of this very evaluation (computed {result.get('created', '?')}); "
                  "--force recomputes it", markup=False)
    from rich.table import Table

    subset = (result.get("source") or {}).get("test_subset") or f"first {result['n_eval']} test images"
    table = Table(title=f"{result['suite']} on {target} ({subset})")
    table.add_column("attack")
    table.add_column("eps")
    table.add_column("accuracy", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("verdict")
    table.add_row("Clean", "", f"{100 * result['clean']['accuracy']:.2f}%", "", "")
    for r in result["results"]:
        table.add_row(r["label"], f"{r['norm']} {r['eps']}", f"{100 * r['accuracy']:.2f}%", f"{r['seconds']:.1f}",
                      _verdict(r))
    for label, block in (("Worst case", "robust"), ("Worst case (adapted)", "adapted")):
        for r in result.get(block) or []:
            table.add_row(label, f"{r['norm']} {r['eps']}", f"{100 * r['accuracy']:.2f}%", "", _verdict(r))
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
