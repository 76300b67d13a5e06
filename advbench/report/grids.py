"""Comparison grids: rows = defense (with key hyperparameters), columns = Clean + attacks + worst case."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from advbench.report.grid_runs import run_measure
from advbench.report.text import short_label

#: ``report --cost``: column -> (run measure of :func:`advbench.report.grid_runs.run_measure`, digits)
COST_COLUMNS = {"Passes/step": ("passes_per_step", 1), "s/epoch": ("seconds_per_epoch", 1),
                "Peak MB": ("peak_memory_mb", 0)}


def _fmt(values: list[float], digits: int = 2, scale: float = 100) -> str:
    vals = [scale * v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "—"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def row_labels(df: pd.DataFrame) -> pd.Series:
    """The row label of every frame row: the defense label with eps-like option values as fractions of 255
    (``step_size=2.5/255``), plus dataset / model / training eps when the frame mixes several of them."""
    label = df["label"].astype(str).map(short_label)
    for col in ("dataset", "model", "train_eps"):
        if df[col].nunique() > 1:
            label = label + " / " + df[col].astype(str)
    return label


def cost_values(run_dirs: list[str]) -> dict[str, list[float]]:
    """``report --cost``: each cost column's values over the runs ``run_dirs`` (one per run that recorded it)."""
    return {column: [v for v in (run_measure(Path(r), measure) for r in run_dirs) if v is not None]
            for column, (measure, _digits) in COST_COLUMNS.items()}


def cost_cells(run_dirs: list[str]) -> dict[str, str]:
    """The ``report --cost`` cells of one row: each measure's mean ± std over the row's runs (— if none)."""
    return {column: _fmt(values, COST_COLUMNS[column][1], scale=1)
            for column, values in cost_values(run_dirs).items()}


def comparison_grid(frame: pd.DataFrame, suite: str | None = None, cost: bool = False) -> pd.DataFrame:
    """Accuracy grid (percent) with mean ± std (sample std) over runs that differ only in seed.

    ``cost``: three more columns from the training runs' records (:data:`COST_COLUMNS`): forward + backward
    passes per training step (per image), measured training seconds per epoch and peak training memory (MB,
    the kind each run recorded: CUDA max allocated or the CPU process's peak RSS), mean ± std over seeds.

    Row labels write eps-like option values as fractions (``step_size=2.5/255``) and add dataset/model/eps
    when the frame mixes several of them. When several eps were
    attacked, attack columns are suffixed ``@eps``. Certified accuracies (``advbench certify``) come last, one
    column per method and radius (``Smoothing σ=0.25@0.5``, ``ω-bound@8/255``). ``suite`` restricts to one suite
    (``certify:NAME`` for one certification).
    """
    if frame.empty:
        return pd.DataFrame()
    df = frame if suite is None else frame[frame["suite"] == suite]
    if df.empty:
        return pd.DataFrame()
    df = df.copy()
    multi_eps = df.loc[~df["kind"].isin(["clean", "certified"]), "eps"].nunique() > 1
    # a certification is one column per radius, always suffixed with it (``Smoothing σ=0.25@0.5``)
    df["column"] = [f"{a}@{e}" if k == "certified" else a if (k == "clean" or not multi_eps) else f"{a}@{e}"
                    for a, k, e in zip(df["attack"], df["kind"], df["eps"], strict=True)]
    df["row"] = row_labels(df)
    # several suites of one run may repeat the clean column: keep one value per run and column
    df = df.drop_duplicates(subset=["run", "column"], keep="first")
    columns = list(dict.fromkeys(["Clean", *[c for c in df["column"] if c != "Clean"]]))
    worst = [c for c in columns if c.startswith("Worst case")]
    certified = list(dict.fromkeys(df.loc[df["kind"] == "certified", "column"]))
    columns = [c for c in columns if c not in worst and c not in certified] + worst + certified
    rows = list(dict.fromkeys(df["row"]))
    table = pd.DataFrame(index=rows, columns=columns, dtype=object)
    table.index.name = "Defense"
    for (row, col), group in df.groupby(["row", "column"], sort=False):
        table.loc[row, col] = _fmt(list(group["accuracy"]))
    seeds = df.groupby("row")["run"].nunique()
    table.insert(0, "Runs", [int(seeds[r]) for r in rows])
    if cost:
        cells = {r: cost_cells(sorted(df.loc[df["row"] == r, "run"].unique())) for r in rows}
        for column in COST_COLUMNS:
            table[column] = [cells[r][column] for r in rows]
    if "checks" in df.columns:
        table["Checks"] = [_checks_flag(df[df["row"] == r]) for r in rows]
    if "verdict" in df.columns:
        table["Verdict"] = [_verdict_flag(df[df["row"] == r]) for r in rows]
    return table.fillna("—")


def _verdict_flag(rows: pd.DataFrame) -> str:
    """The verdict on a row's headline number: its adapted worst case if any, else its worst case (the most
    severe over seeds and budgets), in plain words."""
    order = ("not meaningful", "likely inflated", "trustworthy")
    for kind, prefix in (("adapted", "adapted worst case "), ("robust", "")):
        texts = [v for v in rows.loc[rows["kind"] == kind, "verdict"] if isinstance(v, str) and v]
        if texts:
            worst = min(texts, key=lambda t: next((i for i, o in enumerate(order) if t.startswith(o)), len(order)))
            return prefix + worst
    return "—"


def _checks_flag(rows: pd.DataFrame) -> str:
    """Worst hygiene status of a row's results with the flagged check names: ``pass``, ``warn: a, b``, ``FAIL: c``."""
    order = {"pass": 0, "warn": 1, "fail": 2}
    statuses = [s for s in rows["checks"] if isinstance(s, str) and s in order]
    if not statuses:
        return "—"
    status = max(statuses, key=order.__getitem__)
    if status == "pass":
        return "pass"
    names = sorted({n for f in rows["flagged"] if isinstance(f, str) and f for n in f.split(",")})
    return ("FAIL" if status == "fail" else "warn") + (": " + ", ".join(names) if names else "")
