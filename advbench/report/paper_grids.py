"""Paper grids: measured results laid out exactly as a paper printed a table, published numbers beside.

``build_paper_grid(frame, "soar", "1")`` matches each run (any run directory, not only reproduce's) to
a printed row by its defense and options, fills each printed column from the stored suite results
(mean ± sample std over seeds), and keeps the published cell of every (row, column) for ``--paper``.
"""

from __future__ import annotations

import dataclasses
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
    cpu_text,
    get_recipe,
    smoke_suite_parent,
    smoke_text,
)
from advbench.report.claims import claims_text, evaluate_claims
from advbench.report.grid_runs import choose_runs, paper_meta, pick_sweeps, run_counts, run_values
from advbench.report.grids import COST_COLUMNS, _fmt, cost_values
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
    #: (row, column) -> the number of test images behind each value (accuracy and error columns)
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    runs_per_row: dict[str, list[str]] = field(default_factory=dict)
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    #: ``report --cost``: row -> cost column -> values over the row's runs (see :func:`add_cost`)
    cost: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def mean_std(self, row: str, col: str) -> tuple[float | None, float | None]:
        """Mean and sample std (None with one value) of the measured cell."""
        vals = self.values.get((row, col), [])
        if not vals:
            return None, None
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
        return mean, std

    def best(self) -> dict[str, set[str]]:
        """Rows with the best measured mean per column (max accuracy; min for error and cost columns; ties all
        bold)."""
        out: dict[str, set[str]] = {}
        for col in self.layout.columns:
            spec = self.recipe.columns.get(col) if self.recipe else None
            lower = isinstance(spec, ColumnRecipe) and (spec.transform == "error" or spec.measure is not None)
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


def build_paper_grid(frame: pd.DataFrame, paper: str, table: str) -> PaperGrid:
    """Lay the runs of ``frame`` (from :func:`advbench.report.frame.load_frame`) out as ``paper`` table ``table``."""
    tid = table_id(table)
    layout = table_layout(paper, tid)
    recipe = get_recipe(paper, tid)
    grid = PaperGrid(layout, recipe)
    if recipe is None or (frame.empty and not frame.attrs.get("runs")):
        grid.caption = _caption(grid, frame, [])
        grid.notes = _missing_notes(grid)
        return grid
    chosen, superseded = choose_runs(frame, recipe)
    # the frame already keeps one run per configuration and seed (report.frame); those it passed over count too
    superseded += sum(1 for line in frame.attrs.get("skipped", []) if line.endswith("(counted once)"))
    matched_runs: list[str] = []
    sweep_notes = pick_sweeps(chosen, recipe)
    for (_block, label, _seed, _value), (_when, run, sub, cfg, block) in chosen.items():
        matched_runs.append(run)
        grid.runs_per_row.setdefault(label, []).append(run)
        for col, v in run_values(run, recipe, block, sub, cfg["eps"]).items():
            grid.values.setdefault((label, col), []).append(v)
        for col, n in run_counts(recipe, block, sub, cfg["eps"]).items():
            grid.counts.setdefault((label, col), []).append(n)
    grid.caption = _caption(grid, frame, matched_runs)
    grid.notes = _missing_notes(grid) + sweep_notes
    _relative(grid, recipe, matched_runs)
    if superseded:
        grid.notes.append(f"{superseded} older run(s) of the same row and seed ignored (the newest run counts)")
    return grid


def _relative(grid: PaperGrid, recipe: TableRecipe, matched: list[str]) -> None:
    """Columns with ``relative_to``: at smoke scale each value divided by the reference row's mean (a CPU's
    seconds are not a GPU's; their ratios are comparable), noted in the grid's notes."""
    if not any(paper_meta(Path(r)).get("scale") == "smoke" for r in matched):
        return
    for col, spec in recipe.columns.items():
        if not isinstance(spec, ColumnRecipe) or spec.relative_to is None:
            continue
        ref = grid.mean_std(spec.relative_to, col)[0]
        if not ref:
            continue
        for row in grid.layout.rows:
            if (row, col) in grid.values:
                grid.values[(row, col)] = [v / ref for v in grid.values[(row, col)]]
        # the published cells as the same ratios, so that measured and published compare (a copy: layouts are cached)
        pub_ref = grid.layout.cells.get((spec.relative_to, col))
        cells = dict(grid.layout.cells)
        for row in grid.layout.rows:
            cell = cells.get((row, col))
            if cell is not None:
                ok = cell.value is not None and pub_ref is not None and pub_ref.value
                cells[(row, col)] = dataclasses.replace(
                    cell, value=cell.value / pub_ref.value if ok else None, std=None,
                    unit=f"ratio to {spec.relative_to}")
        grid.layout = dataclasses.replace(grid.layout, cells=cells)
        grid.notes.append(f"column {col}: smoke scale shows ratios to row {spec.relative_to!r}, the published values "
                          "too (paper scale: absolute values on the device that trained the runs)")


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
    wanted = {s[0] for s in r.suites} | {s[0] for b in r.blocks for s in (b.suites or ())}
    wanted |= {c.suite for c in r.certify}  # certification-only tables (gradient-reg 5, 6) count their images too
    n = _n_eval_text(sub[[smoke_suite_parent(str(x)) in wanted for x in sub["suite"]]] if not sub.empty else sub)
    scales: list[str] = []
    subst: list[str] = []
    metas = [m for m in (paper_meta(Path(run)) for run in dict.fromkeys(matched)) if m]
    if any(m.get("role") != "base" for m in metas):  # a shared base run records the first table's settings
        metas = [m for m in metas if m.get("role") != "base"]
    for meta in metas:
        if meta:
            scale = meta.get("scale", "?")
            if scale == "smoke" and meta.get("smoke"):
                scale = f"smoke ({smoke_text(meta['smoke'])})"
            elif scale == "cpu" and meta.get("cpu"):
                scale = f"cpu ({cpu_text(meta['cpu'])})"
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
    data = _data_text(list(dict.fromkeys(matched)))
    if data:
        parts.append(f"data: {data}")
    measured = [c for c in r.columns.values() if isinstance(c, ColumnRecipe) and (c.measure or c.value)]
    unit = "accuracy (%)" if not measured else "measurements (units as the paper prints them; see attacks)"
    text = f"{head} — {unit}; " + "; ".join(parts) + "; mean ± std over seeds; bold = best measured per column"
    rules = {m.get("checkpoint_rule") for m in metas}
    if "max-per-column" in rules:
        text += ("; checkpoints: each column's best over the kept epoch checkpoints and the selected one (the paper's "
                 "rule)" + (" for the runs reproduced with --paper-checkpoints" if len(rules) > 1 else ""))
    elif r.checkpoint_epochs:
        text += "; checkpoints: the one selected on a held-out validation split (not the paper's per-column best)"
    if r.sample_seed is not None:
        text += (f"; paper scale attacks {r.n_eval} test images drawn at random (sample seed {r.sample_seed}, "
                 "recorded in each result), smoke scale the first ones")
    text += f"; {_split_caption(r, matched)}"
    if r.caption_note:
        text += f"; {r.caption_note}"
    for s in dict.fromkeys(subst):
        text += f"; NOTE: {s}"
    return text


def _data_text(matched: list[str]) -> str:
    """Which data trained the runs (from each run's config.json): dataset, where it was read from, how many training
    images it offers after the held-out split and its test set size, e.g. ``mnist (/data/MNIST/raw): 1348
    training images available, test set 300`` (the images each run trained on: ``training set`` in the caption)."""
    seen: dict[tuple[Any, ...], None] = {}
    for run in matched:
        try:
            d = runs.read_json(Path(run) / "config.json").get("dataset")
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict):
            continue
        where = d.get("data_dir") or d.get("source") or "?"
        if d.get("source") not in (None, "generated") and d.get("source") != d.get("data_dir"):
            where = d.get("source")
        seen[(d.get("dataset"), where, d.get("n_train_available"), d.get("n_test_available"))] = None
    return "; ".join(f"{name} ({where}): {avail} training images available, test set {n_test}"
                     for name, where, avail, n_test in seen)


_RULES = {"last": "last epoch", "val-robust": "best held-out robust accuracy", "val-clean": "best held-out clean "
          "accuracy", "test-robust": "best robust accuracy on the TEST set"}


def _split_caption(recipe: TableRecipe, matched: list[str]) -> str:
    """How the runs used the training set, from their config.json / summary.json (``training set: 49000 images,
    1000 held out (checkpoint: ...)``); with no runs, the recipe's paper-scale split."""
    seen: dict[str, None] = {}
    for run in dict.fromkeys(matched):
        try:
            data = runs.read_json(Path(run) / "config.json").get("dataset") or {}
            summary = Path(run) / "summary.json"
            select = runs.read_json(summary).get("select") if summary.is_file() else None
        except (OSError, ValueError):
            continue
        if "n_train" not in data:
            continue
        held = int(data.get("n_val", data.get("val_size", 0)) or 0)
        line = f"{int(data['n_train']):,} images" + (f", {held:,} held out" if held else ", nothing held out")
        if select:
            line += f" (checkpoint: {_RULES.get(str(select), str(select))})"
        seen[line] = None
    if seen:
        return "training set: " + "; ".join(seen)
    return f"paper scale {recipe.split.text(recipe.dataset)}"


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
    if grid.cost:
        for column, (_measure, digits) in COST_COLUMNS.items():
            table[column] = [_fmt(grid.cost.get(r, {}).get(column, []), digits, scale=1) for r in grid.layout.rows]
    return table


def add_cost(grid: PaperGrid) -> None:
    """``report --cost``: the cost columns (:data:`~advbench.report.grids.COST_COLUMNS`) of every row, from the
    training runs behind it (measured on this machine; a paper's own cost table prints its own units)."""
    grid.cost = {r: cost_values(grid.runs_per_row.get(r, [])) for r in grid.layout.rows}


def to_latex(grid: PaperGrid, *, paper: bool = True, extra: list[str] | None = None) -> str:
    """booktabs table ready to paste (best measured per column in \\textbf, the notes and ``extra`` lines as
    comments)."""
    return latex_table(display_frame(grid, paper=paper, bold=""), grid.caption, bold=grid.best(),
                       comments=[*grid.notes, *(extra or [])])


def render_paper_grid(grid: PaperGrid, fmt: str, *, paper: bool = True, plots: list[Path] | None = None) -> str:
    """Render in markdown, latex, csv, json or html."""
    results = evaluate_claims(grid) if paper else []  # the paper's claims are checked beside its numbers
    claims = claims_text(results)
    if fmt == "markdown":
        body = display_frame(grid, paper=paper).to_markdown(disable_numparse=True)  # keep "85.60", not "85.6"
        legend = "\n\ncells: measured / published (Δ measured − published)" if paper else ""
        notes = "".join(f"\n- {n}" for n in grid.notes)
        text = f"{grid.caption}\n\n{body}{legend}\n" + (f"\nMissing or not measured:{notes}\n" if notes else "")
        return text + ("\n" + "\n".join(claims) + "\n" if claims else "")
    if fmt == "latex":
        return to_latex(grid, paper=paper, extra=claims)
    if fmt == "csv":
        cost = [{"row": r, "column": c, "measured": sum(v) / len(v), "n_runs": len(v)}
                for r, cols in grid.cost.items() for c, v in cols.items() if v]
        return pd.DataFrame(grid.records() + cost).to_csv(index=False)
    if fmt == "json":
        return json.dumps({"paper": grid.layout.paper, "table": grid.layout.table, "caption": grid.caption,
                           "rows": grid.layout.rows, "columns": grid.layout.columns, "cells": grid.records(),
                           "notes": grid.notes, **({"cost": grid.cost} if grid.cost else {}),
                           "claims": [{"claim": r.claim.text, "verdict": r.verdict, "detail": r.detail,
                                       "difference": r.difference, "se": r.se} for r in results]},
                          indent=2, default=str) + "\n"
    if fmt == "html":
        return html_page(grid.caption, display_frame(grid, paper=paper, bold="<b>"), grid.notes + claims, plots or [])
    raise ValueError(fmt)

PAPER_FORMATS = ("markdown", "latex", "csv", "json", "html")
