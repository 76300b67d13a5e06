"""Paper grids: measured results laid out exactly as a paper printed a table, published numbers beside.

``build_paper_grid(frame, "soar", "1")`` matches each run (any run directory, not only reproduce's) to
a printed row by its defense and options, fills each printed column from the stored suite results
(mean ± sample std over seeds), and keeps the published cell of every (row, column) for ``--paper``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from advbench import runs
from advbench.errors import UserError
from advbench.papers.published import TableLayout, table_id, table_layout
from advbench.papers.recipes import (
    ColumnRecipe,
    RowRecipe,
    TableRecipe,
    get_recipe,
    smoke_suite_parent,
    smoke_text,
)
from advbench.report.html import html_page
from advbench.report.latex import latex_table

DASH = "—"


def parse_grid_spec(spec: str) -> tuple[str, str]:
    """``soar:table1`` / ``soar:1`` / ``scorpio:2b`` -> (paper, table id)."""
    if ":" not in spec:
        raise UserError(f"--grid '{spec}' must be PAPER:TABLE, e.g. soar:table1")
    paper, table = spec.split(":", 1)
    return paper.strip().lower(), table_id(table)


@dataclass
class PaperGrid:
    """Measured values (percent, one per run) and published cells on a paper's printed layout."""

    layout: TableLayout
    recipe: TableRecipe | None
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    runs_per_row: dict[str, list[str]] = field(default_factory=dict)
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def mean_std(self, row: str, col: str) -> tuple[float | None, float | None]:
        """Mean and sample std (None with one value) of the measured cell."""
        vals = self.values.get((row, col), [])
        if not vals:
            return None, None
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
        return mean, std

    def best(self) -> dict[str, set[str]]:
        """Rows with the best measured mean per column (max accuracy; min for error columns; ties all bold)."""
        out: dict[str, set[str]] = {}
        for col in self.layout.columns:
            spec = self.recipe.columns.get(col) if self.recipe else None
            lower = isinstance(spec, ColumnRecipe) and spec.transform == "error"
            scored = {r: round(m, 2) for r in self.layout.rows if (m := self.mean_std(r, col)[0]) is not None}
            if scored:
                top = (min if lower else max)(scored.values())
                out[col] = {r for r, m in scored.items() if m == top}
        return out

    def records(self) -> list[dict[str, Any]]:
        """One dict per printed cell: measured mean/std/n, published value/std and the difference."""
        recs = []
        for r in self.layout.rows:
            for c in self.layout.columns:
                mean, std = self.mean_std(r, c)
                pub = self.layout.cells.get((r, c))
                pv = pub.value if pub else None
                recs.append({"row": r, "column": c, "measured": mean, "measured_std": std,
                             "n_runs": len(self.values.get((r, c), [])), "published": pv,
                             "published_std": pub.std if pub else None,
                             "delta": None if mean is None or pv is None else mean - pv})
        return recs


def _stored_options(record: dict[str, Any]) -> dict[str, Any]:
    """Every option of a run's defense as resolved when it trained (config.json ``defense.options``; runs
    written before that record existed: the options given)."""
    described = record.get("defense")
    if isinstance(described, dict) and isinstance(described.get("options"), dict):
        return described["options"]
    return record["config"].get("defense_options") or {}


def _same_option(have: Any, want: Any) -> bool:
    """True when a stored (typed) option value is the recipe's value as written: equal text, the same number
    (``2/255`` is stored as 0.00784...), the same choice in any case, or sequences of such values."""
    if isinstance(have, list | tuple) and isinstance(want, list | tuple):
        return len(have) == len(want) and all(_same_option(h, w) for h, w in zip(have, want, strict=True))
    if str(have) == str(want):
        return True
    if isinstance(have, bool) or isinstance(want, bool) or have is None or want is None:
        return False
    try:
        return math.isclose(_number(have), _number(want), rel_tol=1e-9, abs_tol=1e-12)
    except (UserError, TypeError, ValueError):
        return str(have).strip().lower() == str(want).strip().lower()


def _number(value: Any) -> float:
    from advbench.threat import parse_eps

    return parse_eps(value)[0]


def _row_matches(row: RowRecipe, record: dict[str, Any], ignore: set[str] = frozenset()) -> bool:
    """True when the run's defense and options are the row's (``ignore``: options smoke scale changed)."""
    if record["config"].get("defense") != row.defense:
        return False
    have = _stored_options(record)
    return all(_same_option(have.get(k), v) for k, v in row.options.items() if k not in ignore)


def _eps_equal(a: Any, b: Any) -> bool:
    from advbench.threat import parse_eps

    try:
        return abs(parse_eps(str(a))[0] - parse_eps(str(b))[0]) < 1e-6
    except Exception:  # noqa: BLE001 - unparsable eps never matches
        return str(a) == str(b)


def _column_value(sub: pd.DataFrame, spec: ColumnRecipe, train_eps: str) -> float | None:
    df = sub if spec.suite is None else sub[[smoke_suite_parent(str(x)) == spec.suite for x in sub["suite"]]]
    if spec.attack == "Clean":
        hit = df[df["kind"] == "clean"]
        if hit.empty:
            hit = sub[sub["kind"] == "clean"]
    else:
        hit = df[(df["attack"] == spec.attack) & (df["kind"] != "clean")]
        want = spec.eps
        if want is not None:
            hit = hit[[_eps_equal(e, want) for e in hit["eps"]]]
        elif hit["eps"].nunique() > 1:
            same = hit[[_eps_equal(e, train_eps) for e in hit["eps"]]]
            hit = same if not same.empty else hit
    if hit.empty:
        return None
    acc = 100.0 * float(hit["accuracy"].iloc[0])
    return 100.0 - acc if spec.transform == "error" else acc


def build_paper_grid(frame: pd.DataFrame, paper: str, table: str) -> PaperGrid:
    """Lay the runs of ``frame`` (from :func:`advbench.report.frame.load_frame`) out as ``paper`` table ``table``."""
    tid = table_id(table)
    layout = table_layout(paper, tid)
    recipe = get_recipe(paper, tid)
    grid = PaperGrid(layout, recipe)
    if recipe is None or frame.empty:
        grid.caption = _caption(grid, frame, [])
        grid.notes = _missing_notes(grid)
        return grid
    chosen, superseded = _choose_runs(frame, recipe)
    # the frame already keeps one run per configuration and seed (report.frame); those it passed over count too
    superseded += sum(1 for line in frame.attrs.get("skipped", []) if line.endswith("(counted once)"))
    matched_runs: list[str] = []
    for (label, _seed), (_when, run, sub, cfg) in chosen.items():
        matched_runs.append(run)
        grid.runs_per_row.setdefault(label, []).append(run)
        for col, v in _run_values(recipe, sub, cfg["eps"]).items():
            grid.values.setdefault((label, col), []).append(v)
    grid.caption = _caption(grid, frame, matched_runs)
    grid.notes = _missing_notes(grid)
    if superseded:
        grid.notes.append(f"{superseded} older run(s) of the same row and seed ignored (the newest run counts)")
    return grid


_Chosen = dict[tuple[str, Any], tuple[float, str, pd.DataFrame, dict[str, Any]]]


def _choose_runs(frame: pd.DataFrame, recipe: TableRecipe) -> tuple[_Chosen, int]:
    """(row, seed) -> (mtime, run, its results, its config) of the newest run filling that row with that seed,
    and how many older runs of a row and seed were passed over."""
    chosen: _Chosen = {}
    superseded = 0
    for run, sub in frame.groupby("run", sort=False):
        record = runs.read_json(Path(run) / "config.json")
        cfg = record["config"]
        if cfg.get("norm") != recipe.norm or not _eps_equal(cfg.get("eps"), recipe.eps):
            continue
        label = _row_of(recipe, record, _paper_meta(Path(run)))
        if label is None:
            continue
        # several runs of one row and seed (e.g. an older smoke setting): the newest one counts
        when = (Path(run) / "config.json").stat().st_mtime
        slot = (label, cfg.get("seed"))
        if slot in chosen:
            superseded += 1
            if chosen[slot][0] >= when:
                continue
        chosen[slot] = (when, str(run), sub, cfg)
    return chosen, superseded


def _row_of(recipe: TableRecipe, record: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """The printed row a run fills: the one its paper.json names for this table (reproduce records it), else
    the first whose defense and options it has."""
    declared = (meta.get("rows") or {}).get(recipe.key)
    ignore = set(meta.get("smoke_overrides") or {})
    for label, row in recipe.rows.items():
        if not isinstance(row, RowRecipe):
            continue
        if declared in recipe.rows and declared != label:
            continue
        if declared == label or _row_matches(row, record, ignore):
            return label
    return None


def _run_values(recipe: TableRecipe, sub: pd.DataFrame, train_eps: str) -> dict[str, float]:
    """Column -> value (percent) of one run's results; ``sum`` columns once their parts are measured."""
    per_col: dict[str, float] = {}
    for col, spec in recipe.columns.items():
        if isinstance(spec, ColumnRecipe) and spec.transform != "sum":
            v = _column_value(sub, spec, train_eps)
            if v is not None:
                per_col[col] = v
    for col, spec in recipe.columns.items():
        if isinstance(spec, ColumnRecipe) and spec.transform == "sum" and all(p in per_col for p in spec.parts):
            per_col[col] = sum(per_col[p] for p in spec.parts)
    return per_col


def _n_eval_text(sub: pd.DataFrame) -> str:
    """``500 first test images (PGD-1000, PGD-20-50: first 100)``."""
    if sub.empty:
        return DASH
    clean = sub[sub["kind"] == "clean"]["n"]
    main = int(clean.max()) if not clean.empty else int(sub["n"].max())
    fewer: dict[int, list[str]] = {}
    for (attack, kind), g in sub.groupby(["attack", "kind"], sort=False):
        m = int(g["n"].min())
        if kind == "attack" and m < main and str(attack) not in fewer.setdefault(m, []):
            fewer[m].append(str(attack))
    text = f"{main} (first N test images"
    for m, attacks in sorted(fewer.items(), reverse=True):
        if attacks:
            text += f"; {', '.join(attacks)}: first {m}"
    return text + ")"


def _paper_meta(run: Path) -> dict[str, Any]:
    meta_file = run / "paper.json"
    try:
        return runs.read_json(meta_file) if meta_file.is_file() else {}
    except (OSError, ValueError):
        return {}


def _stored_description(sub: pd.DataFrame, suite: str) -> str:
    """The description stored with the results of ``suite`` (a smoke variant says what it changed), from the
    first run that has it: the report reads what ran instead of rebuilding the suite."""
    for run in dict.fromkeys(sub.loc[sub["suite"] == suite, "run"]):
        try:
            description = runs.read_json(Path(run) / "attacks" / f"{suite}.json").get("description")
        except (OSError, ValueError):
            continue
        if description:
            return str(description)
    return f"smoke variant of {smoke_suite_parent(suite)}"


def _caption(grid: PaperGrid, frame: pd.DataFrame, matched: list[str]) -> str:
    L, r = grid.layout, grid.recipe
    head = f"{L.paper} Table {L.table}"
    if r is None:
        return f"{head} — published numbers only (no recipe: nothing measured)"
    sub = frame[frame["run"].isin(matched)] if matched and not frame.empty else frame.iloc[0:0]
    ds = ", ".join(sorted(map(str, sub["dataset"].unique()))) or DASH
    md = ", ".join(sorted(map(str, sub["model"].unique()))) or DASH
    wanted = {s for s, _ in r.suites}
    n = _n_eval_text(sub[[smoke_suite_parent(str(x)) in wanted for x in sub["suite"]]] if not sub.empty else sub)
    scales: list[str] = []
    subst: list[str] = []
    metas = [m for m in (_paper_meta(Path(run)) for run in dict.fromkeys(matched)) if m]
    if any(m.get("role") != "base" for m in metas):  # a shared base run records the first table's settings
        metas = [m for m in metas if m.get("role") != "base"]
    for meta in metas:
        if meta:
            scale = meta.get("scale", "?")
            if scale == "smoke" and meta.get("smoke"):
                scale = f"smoke ({smoke_text(meta['smoke'])})"
            scales.append(scale)
            if meta.get("substituted"):
                subst.append(meta["substituted"])
    attacks = r.attack_versions
    for suite in sorted({str(x) for x in sub["suite"].unique()} if not sub.empty else set()):
        if smoke_suite_parent(suite) != suite and smoke_suite_parent(suite) in wanted:
            attacks += f" [{suite}: {_stored_description(sub, suite)}]"
    parts = [f"dataset: {ds} (paper: {r.dataset})", f"model: {md} (paper: {r.model})",
             f"threat: {r.threat_text or f'{r.norm} {r.eps}'}", f"n-eval: {n}", f"attacks: {attacks}",
             f"scale: {', '.join(dict.fromkeys(scales)) or 'unknown (runs not made by reproduce)'}"]
    text = f"{head} — accuracy (%); " + "; ".join(parts) + "; mean ± std over seeds; bold = best measured per column"
    for s in dict.fromkeys(subst):
        text += f"; NOTE: {s}"
    return text


def _missing_notes(grid: PaperGrid) -> list[str]:
    L, r = grid.layout, grid.recipe
    notes = []
    cmd = f"advbench reproduce {L.paper} --table {L.table.replace('(', '').replace(')', '')} --scale smoke"
    for row in L.rows:
        spec = r.rows.get(row) if r else None
        if isinstance(spec, RowRecipe):
            if row not in grid.runs_per_row:
                fill = cmd if spec.smoke else cmd.replace("--scale smoke", "--scale paper")
                notes.append(f"{row}: {DASH} fill with: {fill}")
        elif isinstance(spec, str):
            notes.append(f"{row}: not measured ({spec})")
        else:
            notes.append(f"{row}: not measured (no recipe for this row)")
    if r:
        for col in L.columns:
            spec = r.columns.get(col)
            if isinstance(spec, str):
                notes.append(f"column {col}: not measured ({spec})")
    return notes


def _num(v: float | None, std: float | None = None) -> str:
    if v is None:
        return DASH
    return f"{v:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def display_frame(grid: PaperGrid, *, paper: bool = True, bold: str = "**") -> pd.DataFrame:
    """Text grid: ``measured`` (bold best) or, with ``paper``, ``measured / published (Δ ±d)``."""
    best = grid.best()
    table = pd.DataFrame(index=grid.layout.rows, columns=grid.layout.columns, dtype=object)
    table.index.name = "Defense"
    for r in grid.layout.rows:
        for c in grid.layout.columns:
            mean, std = grid.mean_std(r, c)
            text = _num(mean, std)
            if mean is not None and r in best.get(c, ()) and bold:
                text = f"<b>{text}</b>" if bold == "<b>" else f"{bold}{text}{bold}"
            if paper:
                pub = grid.layout.cells.get((r, c))
                pv = pub.value if pub else None
                ptext = _num(pv, pub.std if pub else None)
                delta = f" (Δ {mean - pv:+.2f})" if mean is not None and pv is not None else ""
                text = f"{text} / {ptext}{delta}"
            table.loc[r, c] = text
    return table


def to_latex(grid: PaperGrid, *, paper: bool = True) -> str:
    """booktabs table ready to paste (best measured per column in \\textbf, the notes as comments)."""
    return latex_table(display_frame(grid, paper=paper, bold=""), grid.caption, bold=grid.best(), comments=grid.notes)


def render_paper_grid(grid: PaperGrid, fmt: str, *, paper: bool = True, plots: list[Path] | None = None) -> str:
    """Render in markdown, latex, csv, json or html."""
    if fmt == "markdown":
        body = display_frame(grid, paper=paper).to_markdown(disable_numparse=True)  # keep "85.60", not "85.6"
        legend = "\n\ncells: measured / published (Δ measured − published)" if paper else ""
        notes = "".join(f"\n- {n}" for n in grid.notes)
        return f"{grid.caption}\n\n{body}{legend}\n" + (f"\nMissing or not measured:{notes}\n" if notes else "")
    if fmt == "latex":
        return to_latex(grid, paper=paper)
    if fmt == "csv":
        return pd.DataFrame(grid.records()).to_csv(index=False)
    if fmt == "json":
        return json.dumps({"paper": grid.layout.paper, "table": grid.layout.table, "caption": grid.caption,
                           "rows": grid.layout.rows, "columns": grid.layout.columns, "cells": grid.records(),
                           "notes": grid.notes}, indent=2, default=str) + "\n"
    if fmt == "html":
        return html_page(grid.caption, display_frame(grid, paper=paper, bold="<b>"), grid.notes, plots or [])
    raise ValueError(fmt)

PAPER_FORMATS = ("markdown", "latex", "csv", "json", "html")
