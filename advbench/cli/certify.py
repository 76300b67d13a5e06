"""``advbench certify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from advbench.cli.app import QuietOpt, app, console


@app.command()
def certify(
    run: Annotated[Path, typer.Argument(help="Run directory to certify.", show_default=False)],
    method: Annotated[str, typer.Option(help="smoothing (Cohen et al. randomized smoothing, l2), lbound or omega "
                                        "(Finlay and Oberman's L-bound / omega-bound with GEV estimates).")
                      ] = "smoothing",
    sigma: Annotated[float, typer.Option(help="Smoothing noise level sigma ([0, 1] pixel units).")] = 0.25,
    n: Annotated[int, typer.Option("--n", help="Smoothing: noisy samples that bound the top class's probability.")
                 ] = 100_000,
    n0: Annotated[int, typer.Option("--n0", help="Smoothing: noisy samples that pick the top class.")] = 100,
    alpha: Annotated[float, typer.Option(help="Smoothing: failure probability of each certificate.")] = 0.001,
    radii: Annotated[Optional[str], typer.Option(
        metavar="R,R,...", help="Radii of the certified accuracy, comma list [default: l2 0.25,0.5,...,2.0 (Table 5); "
        "linf 2/255,8/255 (Table 1)].")] = None,
    norm: Annotated[str, typer.Option(help="l2, or linf (bounds only; dual norm l1).")] = "l2",
    batches: Annotated[int, typer.Option(help="Bounds: batch maxima the GEV is fitted to.")] = 100,
    stat_batch: Annotated[int, typer.Option(help="Bounds: samples per batch maximum.")] = 100,
    p: Annotated[float, typer.Option("--p", help="Bounds: GEV threshold; the estimate is the 1 - p quantile.")
                 ] = 0.001,
    grid: Annotated[Optional[str], typer.Option(
        metavar="EPS,EPS,...", help="omega: eps grid of the distance, comma list [default: l2 0.05 steps to 2.0; "
        "linf 1/255 ... 16/255]; the radii are added.")] = None,
    n_eval: Annotated[int, typer.Option(help="Certify the first N test images, in order.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Noisy copies (smoothing) or images (bounds) per forward pass.")
                          ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the noise and the GEV sampling (fixed, recorded).")] = 0,
    checkpoint: Annotated[str, typer.Option(help="best, last or a checkpoint file.")] = "best",
    name: Annotated[Optional[str], typer.Option(help="Result name: RUN/certify/NAME.json [default: "
                                                "smoothing-sigmaS, lbound-NORM, omega-NORM].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    force: Annotated[bool, typer.Option(help="Recompute even if the same certification is stored.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Certify a trained run: randomized smoothing (certified accuracy at l2 radii, abstentions count as errors)
    or Finlay and Oberman's heuristic L-bound / omega-bound; writes RUN/certify/NAME.json (resumable)."""
    from advbench.api.certify import certify as run_certify

    result = run_certify(run, method=method, norm=norm, radii=radii, sigma=sigma, n0=n0, n=n, alpha=alpha,
                         batch_size=batch_size, batches=batches, stat_batch=stat_batch, p=p, grid=grid, n_eval=n_eval,
                         seed=seed, checkpoint=checkpoint, name=name, device=device, force=force, quiet=quiet)
    _print(result, run)


def _print(result: dict, run: Path) -> None:
    from rich.table import Table

    con = console()
    if result.get("reused"):
        con.print(f"reused the stored result of this very certification (computed {result.get('created', '?')}); "
                  "--force recomputes it", markup=False)
    table = Table(title=f"{result['label']} on {run} (first {result['n_eval']} test images, {result['norm']})")
    table.add_column("radius")
    table.add_column("certified accuracy", justify="right")
    for row in result["certified"]:
        table.add_row(str(row["eps"]), f"{100 * row['accuracy']:.2f}%")
    con.print(table)
    summary = result.get("summary") or {}
    facts = [f"clean accuracy of the base model {100 * result['clean']['accuracy']:.2f}%"]
    if "abstained" in summary:
        facts.append(f"abstained on {summary['abstained']} of {result['n_eval']}")
    if summary.get("lipschitz") is not None:
        facts.append(f"L (GEV) {summary['lipschitz']:.4g}")
    if "mean_distance" in summary:
        d = summary["mean_distance"]
        facts.append("mean distance " + ("inf" if d is None else f"{d:.4g}"))
    con.print("; ".join(facts), markup=False)
    con.print(f"results: {Path(run) / 'certify' / (result['name'] + '.json')}", markup=False)
