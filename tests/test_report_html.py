"""Reports worth looking at: one number format in every format, short row labels with eps-like values as fractions,
plots without degenerate axes or empty panels, and an html page that says what stands behind every row."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from fake_runs import write_run

from advbench.api.report import report
from advbench.report import load_frame, plots
from advbench.report.text import eps_fraction, fmt_value, short_label

_WARN = {"status": "warn", "flagged": ["monotone_steps"], "checks": [
    {"name": "monotone_steps", "status": "warn", "message": "PGD-100 is 2.00 points above PGD-20"},
    {"name": "large_eps", "status": "pass", "message": "accuracy 0.0% at eps=1"}]}


@pytest.mark.parametrize(("value", "force", "want"), [
    (8 / 255, False, "8/255"), (2.5 / 255, False, "2.5/255"), (0.5, False, None), (0.5, True, "127.5/255"),
    (0.07, False, None), (0.031, False, None), (0.0, False, None)])
def test_eps_fraction(value, force, want):
    assert eps_fraction(value, force=force) == want


def test_short_labels_write_eps_like_values_as_fractions_and_keep_the_rest():
    assert short_label("pgd-at (step_size=0.00980392156862745, steps=5)") == "pgd-at (step_size=2.5/255, steps=5)"
    assert short_label("p-sat (schedule_scale=0.07, step_size=0.00980392156862745)") == \
        "p-sat (schedule_scale=0.07, step_size=2.5/255)"
    assert short_label("trades (beta=6.0, loss=kl)") == "trades (beta=6, loss=kl)"
    assert short_label("mma (margin=0.12549019607843137)") == "mma (margin=32/255)"  # small: a fraction too
    assert short_label("standard") == "standard"
    assert fmt_value("lam", 0.5) == "0.5" and fmt_value("eps", 0.5) == "127.5/255" and fmt_value("steps", 10) == "10"


def _cells(markdown: str, row: str) -> list[str]:
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {row} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_every_format_prints_the_same_digits(tmp_path):
    write_run(tmp_path, "std", "standard", clean=0.09, attacks={"FGSM": 0.0, "PGD-20": 0.0})
    write_run(tmp_path, "adv", "pgd-at", options={"step_size": 2.5 / 255, "steps": 5}, clean=0.9,
              attacks={"FGSM": 0.5, "PGD-20": 0.41})
    _, md = report([tmp_path], fmt="markdown")
    assert _cells(md, "standard")[1:7] == ["1", "9.00", "0.00", "0.00", "0.00", "pass"]  # not "9" and "0"
    assert _cells(md, "pgd-at (step_size=2.5/255, steps=5)")[2:6] == ["90.00", "50.00", "41.00", "41.00"]
    _, csv = report([tmp_path], fmt="csv")
    table = pd.read_csv(io.StringIO(csv), dtype=str, index_col=0)
    assert list(table.loc["standard"])[1:5] == ["9.00", "0.00", "0.00", "0.00"]
    _, latex = report([tmp_path], fmt="latex")
    assert re.search(r"standard & 1 & 9\.00 & 0\.00 & 0\.00 & 0\.00", latex)
    _, js = report([tmp_path], fmt="json")
    grid = json.loads(js)["grid"]
    assert grid["data"][grid["index"].index("standard")][1:5] == ["9.00", "0.00", "0.00", "0.00"]


class _Page(HTMLParser):
    """Tags with their attributes and the text inside each element type (enough to check a report)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        for tag in set(self.stack):
            self.text.setdefault(tag, []).append(data)


def test_html_page_has_title_date_runs_commands_captions_checks_and_plots(tmp_path):
    root = tmp_path / "runs"
    metrics = [{"epoch": e, "loss": 1.0, "adv_acc": 0.3 + 0.1 * e, "val_clean_acc": 0.6, "val_robust_acc": 0.3,
                "forward_passes": 6.0, "backward_passes": 6.0, "train_seconds": 2.0} for e in range(3)]
    for seed in (0, 1):
        write_run(root, f"adv-{seed}", "pgd-at", options={"step_size": 2.5 / 255}, seed=seed, metrics=metrics,
                  command=f"advbench train --defense pgd-at --seed {seed}", checks=_WARN if seed else None)
    write_run(root, "aa", "trades", autoattack=True, suite="autoattack", attacks={"AutoAttack": 0.4},
              metrics=metrics, command="advbench train --defense trades")
    page = tmp_path / "out" / "report.html"
    table, text = report([root], fmt="html", output=page)
    assert page.read_text() == text
    doc = _Page()
    doc.feed(text)
    assert "".join(doc.text["h1"]) == "advbench report"
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC by advbench \S+ from 3 run\(s\)", text)
    caption = "".join(doc.text["caption"])
    assert "Accuracy (%)" in caption and "n-eval: 100" in caption
    facts = " ".join(doc.text["li"])
    assert "seeds: 0, 1" in facts and "AutoAttack: AutoAttack: standard (apgd-ce, apgd-t, fab-t, square)" in facts
    pre = doc.text["pre"]
    for seed in (0, 1):  # every run behind a row and the commands that made it
        assert f"advbench train --defense pgd-at --seed {seed}" in pre and str(root / f"adv-{seed}") in text
    assert f"advbench attack {root / 'adv-0'} --suite pgd-lite --n-eval 100 --eps 8/255" in pre
    # the flagged check is explained where it is flagged: what it verifies and what it found
    anchor = re.search(r'<a href="#(row-\d+)">pgd-at \(step_size=2\.5/255\)</a>', text)
    assert anchor and f'<section id="{anchor.group(1)}"><h3>pgd-at (step_size=2.5/255)</h3>' in text
    row = text[anchor.start():]
    row = row[: row.index("</tr>")]
    assert "<details>" in row and "warn: monotone_steps" in row
    assert "More steps or restarts of the same attack must not raise the accuracy" in row
    assert "PGD-100 is 2.00 points above PGD-20" in row
    imgs = [a for t, a in doc.tags if t == "img"]
    assert len(imgs) == 3 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert len(doc.text["figcaption"]) == 3 and {p.name for p in (page.parent / "plots").iterdir()} == set(
        plots.CAPTIONS) - {"distance_curves.png"}  # no distance attack among these results
    assert set(table.index) == {"pgd-at (step_size=2.5/255)", "trades"}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save (kept open for inspection)."""
    saved = []

    def keep(fig, plt, path, layout=True):
        saved.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield saved
    import matplotlib.pyplot as plt

    plt.close("all")


def test_accuracy_against_eps_writes_fractions_and_never_a_single_point(tmp_path, figures):
    write_run(tmp_path / "a", "adv", "pgd-at", attacks={"PGD-20": 0.4}, eps_list=["4/255", "8/255"])
    assert plots.robust_vs_eps(load_frame([tmp_path / "a"]), tmp_path / "a.png")
    ax = figures[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4/255", "8/255"] and ax.get_ylim() == (0, 100)
    write_run(tmp_path / "b", "std", "standard", clean=0.9, attacks={"PGD-20": 0.1})
    write_run(tmp_path / "b", "adv", "pgd-at", clean=0.8, attacks={"PGD-20": 0.4})
    assert plots.robust_vs_eps(load_frame([tmp_path / "b"]), tmp_path / "b.png")
    ax = figures[-1].axes[0]  # one eps: clean and worst-case bars per defense instead of two lone points
    names = [t.get_text() for t in ax.get_xticklabels()]
    bars = {names[round(p.get_x() + p.get_width() / 2)]: [] for p in ax.patches}
    for p in sorted(ax.patches, key=lambda p: p.get_x()):  # clean bar left of the worst-case bar at each tick
        bars[names[round(p.get_x() + p.get_width() / 2)]].append(round(p.get_height(), 6))
    assert bars == {"standard": [90.0, 10.0], "pgd-at": [80.0, 40.0]}
    assert "8/255" in ax.get_title() and ax.get_ylim() == (0, 100)


def test_training_curves_show_only_recorded_metrics_on_whole_epochs(tmp_path, figures):
    metrics = [{"epoch": e, "adv_acc": 0.2 * e, "val_clean_acc": 0.5, "val_robust_acc": 0.2} for e in range(3)]
    write_run(tmp_path, "adv", "pgd-at", metrics=metrics)
    assert plots.training_curves([tmp_path / "adv"], tmp_path / "c.png")
    fig = figures[-1]
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["train adversarial", "validation clean", "validation PGD"]
    ticks = [t for ax in fig.axes for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_cost_axis_is_in_passes_per_image_per_epoch_or_device_hours(tmp_path, figures):
    counted = [{"epoch": e, "forward_passes": 6.0, "backward_passes": 6.0, "train_seconds": 36.0} for e in range(2)]
    write_run(tmp_path / "a", "adv", "pgd-at", metrics=counted)
    plots.cost_vs_robustness(load_frame([tmp_path / "a"]), tmp_path / "a.png")
    ax = figures[-1].axes[0]
    assert "passes per image per epoch" in ax.get_xlabel()
    assert ax.collections[0].get_offsets()[0][0] == pytest.approx(12.0)  # 6 forward + 6 backward
    timed = [{"epoch": e, "train_seconds": 1800.0} for e in range(2)]
    write_run(tmp_path / "b", "adv", "pgd-at", metrics=timed)
    plots.cost_vs_robustness(load_frame([tmp_path / "b"]), tmp_path / "b.png")
    ax = figures[-1].axes[0]
    assert "CPU-hours" in ax.get_xlabel() and ax.collections[0].get_offsets()[0][0] == pytest.approx(1.0)
