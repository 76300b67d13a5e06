"""``advbench reproduce``: plan a paper table's runs, train and attack what is missing, render the grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench.api.report import report
from advbench.errors import UserError
from advbench.papers.reproduce import make_plan, run_plan


def reproduce(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, dry_run: bool = False, jobs: int = 1, fmt: str = "markdown",
              show_paper: bool = True, device: str = "auto", quiet: bool = True, output: str | Path | None = None,
              smoke: dict[str, Any] | None = None, log: Any = None, threads: int | None = None) -> tuple[Any, str]:
    """Reproduce a paper table: plan its runs, skip finished ones (content hash), train/resume and attack the
    rest, then render the grid with published numbers beside. ``dry_run``: return (plan, plan text) only.
    ``threads``: torch CPU threads per process (on a shared or small CPU box 1 avoids oversubscription)."""

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    plan = make_plan(paper, table, scale=scale, out=out, dataset=dataset, model=model, seeds=seeds, rows=rows,
                     device=device, smoke=smoke)
    if dry_run:
        return plan, plan.describe() + "\n"
    dirs = run_plan(plan, jobs=jobs, quiet=quiet, device=device, log=log, threads=threads)
    spec = f"{plan.recipe.paper}:{plan.recipe.table}"
    if not dirs:
        raise UserError(f"{spec}: no runs planned (check --rows)")
    return report(dirs, fmt=fmt, grid=spec, paper=show_paper, output=output,
                  plots=(Path(output).parent / "plots") if output and fmt == "html" else None)
