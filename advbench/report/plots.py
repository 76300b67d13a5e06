"""Plots (matplotlib, Agg), written as PNG: accuracy against eps, training curves, cost against robustness, and
accuracy-vs-eps curves from the minimum-distance attacks' per-image distances.

Every plot is readable on its own: eps written as fractions (``8/255``), accuracy axes from 0 to 100 %, whole
epochs on epoch axes, panels only for metrics some run recorded, and the training cost in a unit a reader
knows (forward + backward passes per training image per epoch, or device-hours when passes were not counted).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advbench import runs
from advbench.report.text import eps_text, short_label

#: file name -> caption (the html report prints it under the image)
CAPTIONS = {
    "robust_vs_eps.png": "Worst-case accuracy over the suite against the attack budget eps, one line per defense "
                         "(one budget: clean and worst-case accuracy side by side).",
    "training_curves.png": "Accuracy per epoch on the training batches and the validation split, one line per run.",
    "cost_vs_robustness.png": "Training cost against worst-case accuracy, one point per run.",
    "distance_curves.png": "Accuracy against eps from the per-image minimum adversarial distances of the distance "
                           "attacks (accuracy at eps = share of images with distance > eps; images with no "
                           "adversarial found count as robust), one panel per norm, one line per defense and attack "
                           "(seeds pooled).",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _eps_value(text: str) -> float:
    from advbench.threat import parse_eps

    return float(parse_eps(str(text))[0])


def robust_vs_eps(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """Worst-case accuracy (%) against eps, one line per defense (mean over seeds); with a single eps, bars of
    clean and worst-case accuracy per defense instead of single points on a meaningless axis."""
    df = frame[(frame["kind"] == "robust") & frame["eps"].notna()]
    if df.empty:
        return None
    df = df.assign(x=[_eps_value(e) for e in df["eps"]], row=[short_label(str(lb)) for lb in df["label"]])
    plt = _plt()
    xs = sorted(df["x"].unique())
    if len(xs) == 1:
        return _accuracy_bars(frame, df, xs[0], path)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, sub in df.groupby("row", sort=False):
        pts = sub.groupby("x")["accuracy"].mean().sort_index()
        ax.plot(pts.index, 100 * pts.values, marker="o", label=str(label))
    ax.set_xticks(xs, [eps_text(x) for x in xs])
    ax.set_xlabel(f"eps ({', '.join(sorted(set(map(str, df['norm'].dropna()))))})")
    ax.set_ylabel("worst-case accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy under attack against eps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _accuracy_bars(frame: pd.DataFrame, robust: pd.DataFrame, eps: float, path: str | Path) -> Path:
    """Clean and worst-case accuracy per defense at the one eps attacked."""
    plt = _plt()
    clean = frame[frame["kind"] == "clean"].assign(row=lambda d: [short_label(str(lb)) for lb in d["label"]])
    rows = list(dict.fromkeys(robust["row"]))
    clean_acc = [100 * clean.loc[clean["row"] == r, "accuracy"].mean() for r in rows]
    robust_acc = [100 * robust.loc[robust["row"] == r, "accuracy"].mean() for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.8))
    pos = list(range(len(rows)))
    ax.bar([p - 0.2 for p in pos], clean_acc, width=0.4, label="clean", color="#9ecae1")
    bars = ax.bar([p + 0.2 for p in pos], robust_acc, width=0.4, label="worst case", color="#3182bd")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(pos, rows, rotation=20, ha="right", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    norm = ", ".join(sorted(set(map(str, robust["norm"].dropna()))))
    ax.set_title(f"Clean and worst-case accuracy at {norm} eps {eps_text(eps)}")
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def run_names(frame: pd.DataFrame) -> dict[str, str]:
    """Legend name of every run of ``frame``: its short row label, plus ``seed N`` where a label has several runs."""
    first = frame.drop_duplicates("run")
    labels = [short_label(str(lb)) for lb in first["label"]]
    repeated = {lb for lb in labels if labels.count(lb) > 1}
    return {str(r): (f"{lb} seed {s}" if lb in repeated else lb)
            for r, lb, s in zip(first["run"], labels, first["seed"], strict=True)}


def training_curves(run_dirs: list[str | Path], path: str | Path, names: dict[str, str] | None = None) -> Path | None:
    """Train and validation accuracy per epoch, one panel per metric some run recorded, one line per run
    (``names``: run -> legend name; default the run folder's name)."""
    from matplotlib.ticker import MaxNLocator

    names = names or {}
    metrics = {names.get(str(r), Path(r).name): runs.read_jsonl(Path(r) / "metrics.jsonl") for r in run_dirs
               if (Path(r) / "metrics.jsonl").is_file()}
    metrics = {k: v for k, v in metrics.items() if v}
    keys = [("acc", "train clean"), ("adv_acc", "train adversarial"), ("val_clean_acc", "validation clean"),
            ("val_robust_acc", "validation PGD")]
    keys = [(k, t) for k, t in keys if any(m.get(k) is not None for rows in metrics.values() for m in rows)]
    if not metrics or not keys:
        return None
    plt = _plt()
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: palette[i % len(palette)] for i, name in enumerate(metrics)}  # one colour per run in every panel
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 0.6, 3.4), sharey=True, squeeze=False)
    for ax, (key, title) in zip(axes[0], keys, strict=True):
        for name, rows in metrics.items():
            pts = [(m["epoch"] + 1, 100 * m[key]) for m in rows if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", color=color[name])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles = [plt.Line2D([], [], color=color[n], marker=".", label=n) for n in metrics]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 + 0.05 * ((len(handles) - 1) // 6), 1, 1))
    return _save(fig, plt, path, layout=False)


def _run_cost(run: Path) -> tuple[float, float, str]:
    """(mean forward + backward passes per training image per epoch, device-hours, device kind) of a run."""
    rows = runs.read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    per_epoch = [(m.get("forward_passes") or 0) + (m.get("backward_passes") or 0) for m in rows]
    passes = sum(per_epoch) / len(per_epoch) if per_epoch and all(per_epoch) else 0.0
    hours = sum(m.get("train_seconds") or 0 for m in rows) / 3600
    try:
        device = str(runs.read_json(run / "config.json").get("device") or "cpu")
    except (OSError, ValueError):
        device = "cpu"
    return passes, hours, "GPU" if device.startswith("cuda") else "CPU"


def cost_vs_robustness(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """Training cost (passes per image per epoch; device-hours when passes were not counted) against worst-case
    accuracy, one labelled point per run."""
    df = frame[frame["kind"] == "robust"]
    if df.empty:
        return None
    pts = []
    for run, sub in df.groupby("run", sort=False):
        passes, hours, kind = _run_cost(Path(run))
        pts.append((short_label(str(sub["label"].iloc[0])), passes, hours, kind, 100 * float(sub["accuracy"].min())))
    use_passes = all(p[1] > 0 for p in pts)
    kinds = sorted({p[3] for p in pts})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colors: dict[str, str] = {}
    for label, passes, hours, _kind, acc in pts:  # seeds of one defense share a colour and a legend entry
        first = label not in colors
        dots = ax.scatter(passes if use_passes else hours, acc, label=label if first else None, color=colors.get(label))
        colors.setdefault(label, dots.get_facecolor()[0])
    if use_passes:
        ax.set_xlabel("training cost: passes per image per epoch\n(forward + backward; standard training = 2)")
        ax.set_xlim(0, max(p[1] for p in pts) * 1.15)
    else:
        ax.set_xlabel(f"training time ({'/'.join(kinds)}-hours)")
        ax.set_xlim(0, max(p[2] for p in pts) * 1.15 or 1)
    ax.set_ylabel("worst-case accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Training cost against robustness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _distances(frame: pd.DataFrame) -> dict[tuple[str, str, str], list[float | None]]:
    """(norm, defense row, attack label) -> per-image distances pooled over the runs (seeds) of ``frame``, read from
    the result files of the suites in the frame (any result that stores ``per_sample.distance``)."""
    out: dict[tuple[str, str, str], list[float | None]] = {}
    pairs = frame.loc[frame["kind"] == "attack", ["run", "suite", "label"]].drop_duplicates(["run", "suite"])
    for run, suite, label in pairs.itertuples(index=False):
        path = Path(run) / "attacks" / f"{suite}.json"
        try:
            res = runs.read_json(path)
        except (runs.CorruptFile, runs.MissingFile, runs.UnreadableFile, OSError, ValueError):
            continue
        for r in res.get("results") or []:
            dist = (r.get("per_sample") or {}).get("distance") if isinstance(r, dict) else None
            if isinstance(dist, list) and dist and r.get("attack") != "rays":  # RayS: a fixed-eps search
                key = (str(r.get("norm")), short_label(str(label)), str(r.get("label")))
                out.setdefault(key, []).extend(d if isinstance(d, int | float) else None for d in dist)
    return out


def distance_curves(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """Accuracy (%) against eps from per-image minimum distances: a step curve per (defense, attack), one panel per
    norm; the x axis ends a little past the largest distance found."""
    curves = _distances(frame)
    if not curves:
        return None
    plt = _plt()
    norms = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(1, len(norms), figsize=(5.2 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        top = 0.0
        for (nm, row, attack), dist in curves.items():
            if nm != norm:
                continue
            found = sorted(d for d in dist if d is not None)
            top = max([top, *found[-1:]])
            xs = [0.0, *found]
            ys = [100 * sum(1 for d in dist if d is None or d > e) / len(dist) for e in xs]
            ax.step(xs, ys, where="post", label=f"{row}: {attack}")
        ax.set_xlim(0, 1.05 * top or 1)
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Accuracy against eps from minimum distances ({norm})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path, layout: bool = True) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    with runs.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")  # titles and long labels never clipped
    plt.close(fig)
    return out


def write_plots(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every plot that has data into ``out_dir``; returns the PNG paths."""
    out = Path(out_dir)
    made = [robust_vs_eps(frame, out / "robust_vs_eps.png"),
            training_curves(list(dict.fromkeys(frame["run"])), out / "training_curves.png", run_names(frame)),
            cost_vs_robustness(frame, out / "cost_vs_robustness.png"),
            distance_curves(frame, out / "distance_curves.png")]
    return [p for p in made if p is not None]
