"""Plots (matplotlib, Agg): robust accuracy vs eps, training curves, cost vs robustness; written as PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advbench import runs


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _eps_value(text: str) -> float:
    from advbench.threat import parse_eps

    return float(parse_eps(str(text))[0])


def robust_vs_eps(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """Per-sample worst-case accuracy (%) against eps, one line per defense label (mean over seeds)."""
    df = frame[(frame["kind"] == "robust") & frame["eps"].notna()]
    if df.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, sub in df.groupby("label", sort=False):
        pts = sub.assign(x=[_eps_value(e) for e in sub["eps"]]).groupby("x")["accuracy"].mean().sort_index()
        ax.plot(pts.index, 100 * pts.values, marker="o", label=str(label))
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title("Robust accuracy vs eps (worst case over the suite)")
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def training_curves(run_dirs: list[str | Path], path: str | Path) -> Path | None:
    """Clean/robust train and validation accuracy per epoch, one panel per metric, one line per run."""
    metrics = {Path(r).name: runs.read_jsonl(Path(r) / "metrics.jsonl") for r in run_dirs
               if (Path(r) / "metrics.jsonl").is_file()}
    metrics = {k: v for k, v in metrics.items() if v}
    if not metrics:
        return None
    keys = [("acc", "train clean"), ("adv_acc", "train robust"), ("val_clean_acc", "val clean"),
            ("val_robust_acc", "val robust")]
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name, rows in metrics.items():
            pts = [(m["epoch"] + 1, 100 * m[key]) for m in rows if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=6)
    return _save(fig, plt, path)


def cost_vs_robustness(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """Training cost (GPU/CPU-hours, or forward+backward passes when stored) against robust accuracy."""
    df = frame[frame["kind"] == "robust"]
    if df.empty:
        return None
    pts = []
    for run, sub in df.groupby("run", sort=False):
        rows = runs.read_jsonl(Path(run) / "metrics.jsonl") if (Path(run) / "metrics.jsonl").is_file() else []
        passes = sum((m.get("forward_passes") or 0) + (m.get("backward_passes") or 0) for m in rows)
        hours = sum(m.get("train_seconds") or 0 for m in rows) / 3600
        pts.append((str(sub["label"].iloc[0]), passes, hours, 100 * float(sub["accuracy"].min())))
    use_passes = all(p[1] > 0 for p in pts)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, passes, hours, acc in pts:
        ax.scatter(passes if use_passes else hours, acc, label=label)
    ax.set_xlabel("training passes (forward + backward)" if use_passes else "training hours")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title("Cost vs robustness")
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with runs.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def write_plots(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every plot that has data into ``out_dir``; returns the PNG paths."""
    out = Path(out_dir)
    made = [robust_vs_eps(frame, out / "robust_vs_eps.png"),
            training_curves(list(dict.fromkeys(frame["run"])), out / "training_curves.png"),
            cost_vs_robustness(frame, out / "cost_vs_robustness.png")]
    return [p for p in made if p is not None]
