"""``advbench report``: the comparison grid of stored results, or a paper grid with published numbers beside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs
from advbench.errors import UserError
from advbench.registry import closest
from advbench.report import FORMATS, comparison_grid, load_frame, render
from advbench.report.details import caption_facts, rows_of
from advbench.report.html import html_page
from advbench.report.paper_grids import (
    PAPER_FORMATS,
    add_cost,
    build_paper_grid,
    display_frame,
    parse_grid_spec,
    render_paper_grid,
)
from advbench.report.plots import write_plots


def report(paths: list[str | Path], *, fmt: str = "markdown", suite: str | None = None,
           output: str | Path | None = None, grid: str | None = None, paper: bool = False,
           plots: str | Path | None = None, cost: bool = False) -> tuple[Any, str]:
    """Build the comparison grid of the runs under ``paths``; returns (grid DataFrame, rendered text).

    ``grid="soar:table1"`` lays the runs out as that paper table (``paper``: published numbers beside);
    ``plots``: a directory for PNG plots (embedded in ``fmt="html"``); ``cost``: training cost columns beside
    (passes per step, seconds per epoch, peak memory; see :data:`advbench.report.grids.COST_COLUMNS`).
    """
    if grid or paper or plots or fmt == "html":
        return _paper_report(paths, fmt=fmt, suite=suite, output=output, grid=grid, paper=paper, plots=plots,
                             cost=cost)

    if fmt not in FORMATS:
        hint = closest(fmt, list(FORMATS))
        raise UserError(f"unknown format '{fmt}'" + (f"; did you mean {hint[0]!r}?" if hint else
                                                      f"; choose one of {', '.join(FORMATS)}"))
    frame = load_frame(list(paths))
    if frame.empty:
        raise UserError(_nothing_to_report(paths, frame))
    grid = comparison_grid(frame, suite, cost=cost)
    grid.attrs["skipped"] = frame.attrs.get("skipped", [])
    caption = _caption(frame) + (COST_CAPTION if cost else "")
    text = render(grid, fmt, caption, frame)
    if output:
        with runs.atomic_path(output) as tmp:
            tmp.write_text(text)
    return grid, text


def _nothing_to_report(paths: list[str | Path], frame: Any) -> str:
    """The one line when no result can be shown: none stored, or every one broken (the first is named)."""
    skipped = frame.attrs.get("skipped", [])
    if skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        return f"no readable attack results under {', '.join(map(str, paths))}: skipped {skipped[0]}{more}"
    return f"no attack results under {', '.join(map(str, paths))}; run 'advbench attack RUN' first"


#: what ``--cost`` adds to the caption
COST_CAPTION = ("; cost of training: Passes/step = forward + backward passes per image per step, s/epoch = "
                "measured training seconds per epoch on the machine that trained it, Peak MB = peak training "
                "memory as recorded (CUDA max allocated, or the CPU process's peak RSS)")


def _caption(frame: Any) -> str:
    parts = []
    for col, name in (("dataset", "dataset"), ("model", "model"), ("suite", "suite")):
        vals = sorted(map(str, frame[col].dropna().unique()))
        parts.append(f"{name}: {', '.join(vals)}")
    eps = sorted({f"{n} {e}" for n, e in zip(frame["norm"], frame["eps"], strict=True) if isinstance(e, str) and e})
    parts.append(f"threat: {', '.join(eps)}")
    parts.append(f"n-eval: {', '.join(map(str, sorted(frame['n'].unique())))} (first N test images)")
    return "Accuracy (%) — " + "; ".join(parts) + "; mean ± std over seeds"


def _paper_report(paths: list[str | Path], *, fmt: str, suite: str | None, output: str | Path | None,
                  grid: str | None, paper: bool, plots: str | Path | None, cost: bool = False) -> tuple[Any, str]:
    """Report with a paper grid (``--grid``), published numbers (``--paper``), plots or html."""

    if fmt not in PAPER_FORMATS:
        hint = closest(fmt, list(PAPER_FORMATS))
        raise UserError(f"unknown format '{fmt}'" + (f"; did you mean {hint[0]!r}?" if hint else
                                                      f"; choose one of {', '.join(PAPER_FORMATS)}"))
    if paper and not grid:
        raise UserError("--paper needs --grid PAPER:TABLE (e.g. --grid soar:table1); see 'advbench reproduce --list'")
    present = [p for p in paths if Path(p).exists()]
    if grid and not present:  # the published grid alone, measured cells empty: how a user first looks at a table
        frame = load_frame([])
    else:  # a paper grid may take a column's best over kept epoch checkpoints (the recipe's rule)
        frame = load_frame(list(paths), checkpoints=bool(grid))
    if suite is not None and not frame.empty:
        frame = frame[frame["suite"] == suite]
    if frame.empty and not grid:
        raise UserError(_nothing_to_report(paths, frame))
    pngs: list[Path] = []
    if plots or (fmt == "html" and output):  # html to stdout embeds plots only when --plots names a directory

        plot_dir = Path(plots) if plots else Path(output).parent / "plots"
        if not frame.empty:
            pngs = write_plots(frame[[not str(c).startswith("epoch-") for c in frame["checkpoint"]]], plot_dir)
    if grid:
        pg = build_paper_grid(frame, *parse_grid_spec(grid))
        if cost:
            add_cost(pg)
            pg.caption += COST_CAPTION
        text = render_paper_grid(pg, fmt, paper=paper, plots=pngs)
        table = display_frame(pg, paper=paper, bold="")
    else:

        table = comparison_grid(frame, suite, cost=cost)
        caption = _caption(frame) + (COST_CAPTION if cost else "")
        if fmt == "html":  # the page also lists the runs, commands and checks behind each row
            text = html_page(caption, table, [], pngs, details=rows_of(frame), facts=caption_facts(frame))
        else:
            text = render(table, fmt, caption, frame)
    table.attrs["skipped"] = frame.attrs.get("skipped", [])
    if output:
        with runs.atomic_path(output) as tmp:
            tmp.write_text(text)
    return table, text
