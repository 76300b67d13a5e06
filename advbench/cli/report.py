"""``advbench report`` and ``advbench reproduce``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.cli.app import QuietOpt, app, console
from advbench.errors import UserError
from advbench.papers import paper_names  # file discovery only: no recipe module, no torch


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
    cost: Annotated[bool, typer.Option("--cost", help="Add the training cost of each row: passes per step, "
                                       "measured seconds per epoch, peak memory (mean ± std over seeds).")] = False,
) -> None:
    """Compare runs: rows = defenses, columns = clean + attacks + worst case, mean ± std over seeds.

    Formats: markdown, csv, latex, json, html (standalone page with plots)."""
    from advbench import api

    table, text = api.report(paths or [Path("runs")], fmt=format_, suite=suite, output=output, grid=grid,
                             paper=paper, plots=plots, cost=cost)
    for line in getattr(table, "attrs", {}).get("skipped", []):  # broken runs: reported, not fatal
        console(stderr=True).print(f"warning: skipped {line}", markup=False)
    if output:
        console().print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory (or results folder of advbench.evaluate).")],
    format_: Annotated[str, typer.Option("--format", "-f", help="robustbench (leaderboard JSON of the run's "
                                         "AutoAttack result) or tensorboard (per-epoch metrics as event files in "
                                         "RUN/tensorboard/).")] = "robustbench",
    output: Annotated[Path, typer.Option("--output", "-o", help="robustbench: folder that receives "
                                         "model_info/<dataset>/<threat>/<name>.json.")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="robustbench: the model's name, <Author><Year><Word> "
                                                "[default: the run folder's name].", show_default=False)] = None,
    paper: Annotated[str, typer.Option(help="robustbench: the paper's title (the entry's 'name').")] = "",
    link: Annotated[str, typer.Option(help="robustbench: link to the paper.")] = "",
    authors: Annotated[str, typer.Option(help="robustbench: the authors.")] = "",
    venue: Annotated[str, typer.Option(help="robustbench: venue, e.g. 'ICML 2020'.")] = "",
    reported: Annotated[str, typer.Option(help="robustbench: the robust accuracy the paper reported.")] = "",
    architecture: Annotated[Optional[str], typer.Option(help="robustbench: architecture [default: the run's "
                                                        "model].", show_default=False)] = None,
    additional_data: Annotated[bool, typer.Option("--additional-data", help="robustbench: trained with data "
                                                  "beyond the dataset's training set.")] = False,
    eps: Annotated[Optional[str], typer.Option(help="robustbench: the AutoAttack budget to export [default: the "
                                               "run's eps].", show_default=False)] = None,
) -> None:
    """Export a run: its RobustBench leaderboard entry, or its per-epoch metrics for TensorBoard."""
    from advbench import api

    fields = {"paper": paper, "link": link, "authors": authors, "venue": venue, "reported": reported,
              "architecture": architecture, "additional_data": additional_data, "eps": eps}
    if format_ == "tensorboard":
        given = [k for k, v in fields.items() if v not in ("", None, False)] + (["name"] if name else [])
        if given:
            raise UserError(f"--format tensorboard takes no leaderboard fields (got --{given[0].replace('_', '-')})")
        fields = {}
    path, _ = api.export(run, fmt=format_, out=output, name=name, **fields)
    console().print(f"wrote {path}" + ("" if format_ != "tensorboard" else f"  (view: tensorboard --logdir {path})"),
                    markup=False)


@app.command()
def reproduce(
    paper: Annotated[Optional[str], typer.Argument(help=f"Paper: {', '.join(paper_names())}.",
                                                   show_default=False)] = None,
    table: Annotated[Optional[str], typer.Option("--table", "-t", help="Table as printed: 1, 2a, ...")] = None,
    scale: Annotated[str, typer.Option(help="smoke (minutes on a CPU; synthetic data when the paper's is not on "
                                       "disk), cpu (the paper's recipe shortened to about an hour on 2 cores; "
                                       "tables that define it) or paper (the paper's recipe).")] = "smoke",
    list_tables: Annotated[bool, typer.Option("--list", help="List every table of every paper with its "
                                              "status.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (train / resume / done) and "
                                          "exit.")] = False,
    jobs: Annotated[int, typer.Option(help="Independent runs trained concurrently (processes).")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads per process [default: torch's]; keep "
                                                   "jobs x threads <= free cores (1 on a busy machine).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Override the dataset (either scale).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset root (MNIST idx files in DIR/MNIST/raw, ...) "
                                                    "[default: $ADVBENCH_DATA_DIR or ~/.cache/advbench/data].")
                        ] = None,
    model: Annotated[Optional[str], typer.Option(help="Override the model (either scale).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma list of seeds [default: the recipe's].")] = None,
    block: Annotated[Optional[list[str]], typer.Option("--block", help="Plan only this block of the table "
                                                       "(repeatable; --list names them) [default: every block].")
                     ] = None,
    row: Annotated[Optional[list[str]], typer.Option("--row", help="Plan only this printed row (repeatable) "
                                                     "[default: every row].")] = None,
    paper_checkpoints: Annotated[bool, typer.Option("--paper-checkpoints", help="Keep and attack the checkpoints "
                                                    "the paper evaluates; each column shows its best over them (the "
                                                    "paper's rule; default: the validation-selected checkpoint).")
                                 ] = False,
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

        from advbench.papers.status import all_tables

        t = Table(title="paper tables (advbench reproduce PAPER --table N)")
        for col in ("paper", "table", "status", "detail"):
            t.add_column(col)
        tables = all_tables()
        for p, tab, status, detail in tables:
            t.add_row(p, tab, status, detail)
        console().print(t)
        counts = {s: sum(1 for *_, st, _d in tables if st == s) for s in dict.fromkeys(st for *_, st, _d in tables)}
        console().print(f"{len(tables)} tables: " + ", ".join(f"{n} {s}" for s, n in counts.items()), markup=False)
        return
    if table is None:
        raise UserError(f"missing --table; list the tables of {paper} with 'advbench reproduce --list'")
    from advbench import api

    seed_list = _parse_seeds(seeds)
    con = console(stderr=True)
    _obj, text = api.reproduce(paper, table, scale=scale, out=out, dataset=dataset, model=model, seeds=seed_list,
                               dry_run=dry_run, jobs=jobs, fmt=format_, show_paper=paper_numbers, device=device,
                               quiet=quiet, output=output, log=lambda m: con.print(m, markup=False), threads=threads,
                               blocks=block or None, paper_checkpoints=paper_checkpoints, data_dir=data_dir,
                               rows=row or None)
    if output and not dry_run:
        console().print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2``: distinct integers in 0..2**63-1 (one line for anything else)."""
    if text is None:
        return None
    from advbench.core.options import convert

    seeds = [convert(s, int, "--seeds") for s in text.split(",") if s.strip()]
    if not seeds:
        raise UserError("--seeds is empty; write e.g. --seeds 0,1,2")
    bad = [s for s in seeds if not 0 <= s < 2**63]
    if bad:
        raise UserError(f"--seeds: {bad[0]} is out of range; seeds are 0..2**63-1")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice ({text}); each seed is one run")
    return seeds
