"""Paper tables: published data and layouts, recipes, reproduce (plan, skip, resume), paper grids, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from advbench.papers.published import PAPERS, load_published, published_tables, table_layout
from advbench.papers.recipes import get_recipe
from advbench.papers.status import all_tables

SPEC_DIR = Path("/work/shared/specs/published")


def _csv_files() -> list[Path]:
    pkg = Path(__file__).resolve().parents[1] / "advbench" / "papers" / "published"
    return sorted(p for p in pkg.glob("*-table*.csv"))


def test_every_published_csv_is_shipped_and_unchanged():
    files = _csv_files()
    names = {p.name for p in files}
    assert len(files) >= 44 and (files[0].parent / "nontable-numbers.csv").is_file()
    for paper in PAPERS:
        assert any(n.startswith(paper + "-table") for n in names), paper
    if SPEC_DIR.is_dir():
        for src in SPEC_DIR.glob("*.csv"):
            shipped = Path(files[0]).parent / src.name
            assert shipped.read_bytes() == src.read_bytes(), src.name


@pytest.mark.parametrize("paper,table", published_tables())
def test_layout_places_every_published_cell_once(paper, table):
    df = load_published(paper, table)
    layout = table_layout(paper, table)
    assert len(layout.cells) == len(df)  # every CSV row has its own (row, column)
    assert len(layout.rows) == len(set(layout.rows)) and len(layout.columns) == len(set(layout.columns))
    # rows and columns appear in print order (first appearance in the CSV)
    for _, rec in df.iterrows():
        row = next(r for r in layout.rows if all(rec[f] == layout.row_keys[r].get(f, rec[f])
                                                 for f in layout.row_fields))
        col = next(c for c in layout.columns if all(rec[f] == layout.col_keys[c][f] for f in layout.col_fields))
        cell = layout.cells[(row, col)]
        if rec["value"]:
            assert cell.value == pytest.approx(float(rec["value"]))
        else:
            assert cell.value is None
    first_rows = list(dict.fromkeys(" / ".join(v for v in (rec[f] for f in layout.row_fields) if v)
                                    for _, rec in df.iterrows()))
    assert layout.rows == first_rows


@pytest.mark.parametrize("paper,table,n_rows,columns", [
    ("soar", "1", 12, ["Standard", "FGSM", "PGD20", "PGD100", "PGD200", "PGD1000", "PGD20-50"]),
    ("scorpio", "2(b)", 6, ["Clean", "UL", "TL", "UM", "TM"]),
    ("randomized-at", "1", 10, ["Clean", "PGD-20", "CW-20", "AA"]),
    ("gradient-reg", "4", 7, ["% clean error", "empirical % error / 2/255", "empirical % error / 8/255"]),
])
def test_layout_matches_printed_header(paper, table, n_rows, columns):
    layout = table_layout(paper, table)
    assert layout.columns == columns
    assert len(layout.rows) == n_rows


def test_sat_table1_columns_are_dataset_model_blocks():
    layout = table_layout("sat", "1")
    assert layout.rows == ["AT [23]", "TRADES [36]", "DAT [30]", "CAT20 [7]", "H-SAT (ours)", "P-SAT (ours)"]
    assert len(layout.columns) == 12 and layout.columns[:3] == [
        "CIFAR-10 / PreAct-ResNet-20 / Clean", "CIFAR-10 / PreAct-ResNet-20 / Adv", "CIFAR-10 / PreAct-ResNet-20 / Sum"]


def test_list_names_every_table_with_a_status():
    rows = all_tables()
    assert {(p, t) for p, t, *_ in rows} == set(published_tables()) | {("sat", "4"), ("scorpio", "roles")}
    assert {s for _, _, s, _ in rows} <= {"reproducible", "partial", "needs", "quoted", "waiting", "not numeric",
                                          "no recipe"}
    for paper in PAPERS:  # at least one main table of each paper has a recipe
        assert any(p == paper and s in ("reproducible", "partial") for p, _, s, _ in rows), paper


def test_cli_reproduce_list(capsys):
    from advbench.cli import main

    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for paper in PAPERS:
        assert paper in out


@pytest.mark.parametrize("paper,table", [(p, t) for p, t, s, _ in all_tables() if s in ("reproducible", "partial")])
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_every_recipe_plans_valid_configs(paper, table, scale, tmp_path):
    from advbench.papers.plan import make_plan

    plan = make_plan(paper, table, scale=scale, out=tmp_path)
    recipe = get_recipe(paper, table)
    assert plan.runs and all(p.action == "train" for p in plan.runs)
    assert len({p.hash for p in plan.runs}) == len(plan.runs)  # distinct rows never share a config
    if scale == "smoke":
        from advbench.papers.recipes import SMOKE

        assert plan.dataset == "synthetic" and plan.substituted  # no paper dataset on this machine
        # one shared base run per (seed, model, block threat), first (plus the transfer sources of black-box tables)
        bases = {p.hash: p for p in plan.runs if p.base}
        assert bases and all(p.base for p in plan.runs[:len(bases)])
        assert all(b.options["epochs"] == SMOKE["base_epochs"] and b.options["n_train"] == SMOKE["base_n_train"]
                   for b in bases.values())
        for p in plan.runs[len(bases):]:  # every other row fine-tunes from a base of its model and seed
            base = bases[p.init]
            assert p.options["epochs"] == SMOKE["epochs"] and (base.seed, base.options["model"]) == (
                p.seed, p.options["model"])
        if recipe.source:
            assert all(bases[p.source].seed == p.seed + 1000 for p in plan.runs[len(bases):] if p.role == "row")
    else:
        assert plan.dataset == recipe.dataset and plan.n_eval == recipe.n_eval


_TINY = {"epochs": 1, "base_epochs": 1, "base_n_train": 48, "n_train": 48, "batch_size": 16, "val_n": 8,
         "val_attack_steps": 1, "train_attack_steps": 2, "n_eval": 8, "n_eval_expensive": 4,
         "synthetic_options": {"n_train": 120, "n_test": 16}}
_ROWS = ["Standard", "Adv Train (PGD-10)"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """scorpio Table 2(b), two rows, tiny smoke scale (first reproduce call)."""
    from advbench import api

    out = tmp_path_factory.mktemp("repro")
    _, text = api.reproduce("scorpio", "2b", out=out, rows=_ROWS[:1], smoke=_TINY, device="cpu")
    _, text2 = api.reproduce("scorpio", "2b", out=out, rows=_ROWS, smoke=_TINY, device="cpu")
    return out, text, text2


def test_reproduce_renders_measured_beside_published(reproduced):
    out, text, text2 = reproduced
    assert ("scale: smoke (standard base run 1 epochs from scratch on 48 images, every other row fine-tuned from it "
            "for 1 epochs on 48; model small-cnn") in text and "synthetic" in text
    lines = {ln.split("|")[1].strip(): ln for ln in text2.splitlines() if ln.startswith("| ")}
    assert " / 94.50 (Δ " in lines["Standard"]  # measured / published (difference)
    assert " / " in lines["Adv Train (PGD-10)"] and "(Δ " in lines["Adv Train (PGD-10)"]
    assert lines["CURE"].count("— / ") == 5  # missing cells: dash beside the published number
    assert "CURE: — fill with: advbench reproduce scorpio --table 2b --scale smoke" in text2


def test_restarted_reproduce_redoes_no_finished_run(reproduced, monkeypatch):
    import importlib

    from advbench import api
    from advbench.papers.plan import make_plan

    out, _, _ = reproduced
    plan = make_plan("scorpio", "2b", out=out, rows=_ROWS, smoke=_TINY, device="cpu")
    assert [p.action for p in plan.runs] == ["done", "done"]
    calls = []
    executor = importlib.import_module("advbench.api.reproduce")  # the module (api.reproduce is the function)
    monkeypatch.setattr(executor, "train", lambda *a, **k: calls.append(k) or (_ for _ in ()).throw(AssertionError))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("attacks/*.json")}
    api.reproduce("scorpio", "2b", out=out, rows=_ROWS, smoke=_TINY, device="cpu")
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("attacks/*.json")} == mtimes  # attacks not redone
    assert len(list(out.rglob("config.json"))) == 2


def test_runs_anywhere_under_out_are_found_by_config_hash(reproduced, tmp_path):
    import shutil

    from advbench.papers.plan import make_plan

    out, _, _ = reproduced
    shutil.copytree(out, tmp_path / "elsewhere" / "renamed")  # e.g. made for another table with the same configs
    plan = make_plan("scorpio", "2b", out=tmp_path, rows=_ROWS, smoke=_TINY, device="cpu")
    assert [p.action for p in plan.runs] == ["done", "done"]
    assert all("renamed" in p.existing for p in plan.runs)


def test_interrupted_run_is_resumed_not_restarted(reproduced, tmp_path):
    import shutil

    from advbench import runs
    from advbench.papers.plan import make_plan

    out, _, _ = reproduced
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    summary = next(copy.rglob("standard-base-s0-*/summary.json"))
    runs.write_json(summary, {**runs.read_json(summary), "status": "interrupted"})
    plan = make_plan("scorpio", "2b", out=copy, rows=_ROWS, smoke=_TINY, device="cpu")
    actions = {p.row: p.action for p in plan.runs}
    assert actions == {"Standard": "resume", "Adv Train (PGD-10)": "done"}
    assert "[resume]" in plan.describe()


def test_latex_parses_back_to_the_grid_numbers(reproduced):
    from advbench.report import load_frame
    from advbench.report.latex import parse_latex_numbers
    from advbench.report.paper_grids import build_paper_grid, to_latex

    out, _, _ = reproduced
    grid = build_paper_grid(load_frame([out]), "scorpio", "2(b)")
    tex = to_latex(grid, paper=True)
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex
    parsed = parse_latex_numbers(tex)
    assert len(parsed) == len(grid.layout.rows)
    for row, got in zip(grid.layout.rows, parsed, strict=True):
        want = [grid.mean_std(row, c)[0] for c in grid.layout.columns]
        assert got == [None if w is None else pytest.approx(round(w, 2)) for w in want]
    measured = [v for row in parsed for v in row if v is not None]
    assert len(measured) == 10  # two rows x five columns


def test_csv_json_and_html_formats(reproduced, tmp_path):
    from advbench import api

    out, _, _ = reproduced
    _, csv_text = api.report([out], fmt="csv", grid="scorpio:2b", paper=True)
    df = pd.read_csv(__import__("io").StringIO(csv_text))
    assert set(df["row"]) == set(table_layout("scorpio", "2(b)").rows) and len(df) == 30
    done = df.dropna(subset=["measured"])
    assert len(done) == 10
    assert (done["delta"] - (done["measured"] - done["published"])).abs().max() < 1e-9
    _, js = api.report([out], fmt="json", grid="scorpio:table2b")
    assert json.loads(js)["columns"] == ["Clean", "UL", "TL", "UM", "TM"]
    page = tmp_path / "report.html"
    api.report([out], fmt="html", grid="scorpio:2b", paper=True, output=page, plots=tmp_path / "plots")
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "data:image/png;base64," in html
    _, md = api.report([out], fmt="markdown", plots=tmp_path / "plain")  # plots without a paper grid
    assert md.startswith("Accuracy (%)") and len(list((tmp_path / "plain").glob("*.png"))) == 3


def test_plots_are_written_and_non_empty(reproduced, tmp_path):
    from advbench.report import load_frame
    from advbench.report.plots import write_plots

    out, _, _ = reproduced
    made = write_plots(load_frame([out]), tmp_path)
    assert {p.name for p in made} == {"robust_vs_eps.png", "training_curves.png", "cost_vs_robustness.png"}
    for p in made:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000


def test_cli_report_grid_paper_and_dry_run(reproduced, capsys):
    from advbench.cli import main

    out, _, _ = reproduced
    assert main(["report", str(out), "--grid", "scorpio:table2b", "--format", "markdown", "--paper"]) == 0
    text = capsys.readouterr().out
    assert "scorpio Table 2(b)" in text and "| Defense" in text
    assert main(["reproduce", "scorpio", "--table", "2b", "--dry-run", "--out", str(out.parent / "none")]) == 0
    assert "[train ]" in capsys.readouterr().out
    assert main(["reproduce", "nopaper", "--table", "1"]) == 2
    assert main(["report", str(out), "--paper"]) == 2


def test_smoke_rows_fine_tune_from_a_base_run_shared_between_tables(tmp_path):
    from advbench.papers.plan import BASE_ROW, make_plan
    from advbench.papers.recipes import SMOKE

    soar = make_plan("soar", "1", out=tmp_path)
    sat = make_plan("sat", "1", out=tmp_path)
    (base,) = [p for p in soar.runs if p.base]
    (sat_base,) = [p for p in sat.runs if p.base]
    assert base.row == "ResNet / Standard" and base.suites  # the Standard row IS the base run
    assert sat_base.row == BASE_ROW and sat_base.suites == ()  # SAT has no standard row: trained, not attacked
    assert base.hash == sat_base.hash and base.out == sat_base.out == str(tmp_path / "smoke-base")
    assert base.options["epochs"] == SMOKE["base_epochs"] and "init_from" not in base.options
    for p in soar.runs[1:] + sat.runs[1:]:
        assert p.init == base.hash and p.options["init_from"] == str(tmp_path / "smoke-base" / base.name)
        assert p.options["epochs"] == SMOKE["epochs"]
    adv = next(p for p in soar.runs if p.row == "ResNet / ADV")
    assert adv.settings["defense.steps"] == SMOKE["train_attack_steps"] and adv.overrides == {"steps": 5}
    trades = next(p for p in soar.runs if p.row == "ResNet / TRADES")  # TRADES family: the lower fine-tuning lr
    assert trades.options["lr"] == SMOKE["lr_reg"] and adv.options["lr"] == SMOKE["lr"]
    psat = next(p for p in sat.runs if p.row == "P-SAT (ours)")  # the lambda ramp is compressed into 3 epochs
    assert psat.settings["defense.schedule_per_iteration"] is True and psat.settings["defense.schedule_scale"] < 0.1
    # paper scale: only SOAR and FOAR fine-tune from the Standard run (the paper's pretrained init)
    paper = make_plan("soar", "1", scale="paper", out=tmp_path)
    tuned = {p.row for p in paper.runs if p.init}
    assert tuned == {"ResNet / SOAR", "ResNet / FOAR"}
    assert next(p for p in paper.runs if p.base).row == "ResNet / Standard"


def test_base_run_of_one_table_is_reused_by_another(reproduced):
    from advbench.papers.plan import make_plan

    out, _, _ = reproduced
    plan = make_plan("soar", "1", out=out, rows=["ResNet / ADV"], smoke=_TINY, device="cpu")
    assert [(p.row, p.action) for p in plan.runs] == [("(standard base)", "done"), ("ResNet / ADV", "train")]
    assert "scorpio-table2b-smoke" not in plan.runs[0].existing and "smoke-base" in plan.runs[0].existing


def test_jobs_2_runs_independent_runs_in_processes_and_reruns_skip_them(tmp_path):
    from advbench import api, runs
    from advbench.papers.plan import make_plan

    rows = ["Gradient Reg", "Adv Train (PGD-10)"]
    _, text = api.reproduce("scorpio", "2b", out=tmp_path, rows=rows, smoke=_TINY, device="cpu", jobs=2, threads=1)
    plan = make_plan("scorpio", "2b", out=tmp_path, rows=rows, smoke=_TINY, device="cpu")
    # base + one run per smoke sweep value of Gradient Reg + AT, all completed
    n_sweep = len(get_recipe("scorpio", "2b").rows["Gradient Reg"].sweep.smoke_values)
    assert n_sweep == 3 and [p.action for p in plan.runs] == ["done"] * (2 + n_sweep)
    for p in plan.runs[1:]:
        assert runs.read_json(Path(p.existing) / "summary.json")["status"] == "completed"
        assert (Path(p.existing) / "attacks" / "scorpio.json").is_file()
        assert runs.read_json(Path(p.existing) / "paper.json")["rows"] == {"scorpio:2(b)": p.row}
    lines = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert lines["Gradient Reg"].count("(Δ ") == 5 and lines["Adv Train (PGD-10)"].count("(Δ ") == 5


def test_black_box_table_trains_an_independent_source_and_fills_the_transfer_column(tmp_path):
    from advbench import api, runs
    from advbench.papers.plan import make_plan

    rows = ["SOAR - PGD1 init"]
    _, text = api.reproduce("soar", "7", out=tmp_path, rows=rows, smoke=_TINY, device="cpu")
    plan = make_plan("soar", "7", out=tmp_path, rows=rows, smoke=_TINY, device="cpu")
    source, base, soar = plan.runs
    assert [p.action for p in plan.runs] == ["done"] * 3 and source.seed == 1000 and base.seed == 0
    assert soar.source == source.hash and soar.init == base.hash
    stored = runs.read_json(Path(soar.existing) / "attacks" / "soar-init.json")
    assert stored["transfer_source"]["run"] == source.existing
    line = next(ln for ln in text.splitlines() if ln.startswith("| SOAR - PGD1 init"))
    assert line.count("(Δ ") == 3  # clean, white-box PGD20 and black-box PGD20 all measured


def test_grid_counts_the_newest_run_of_a_row_and_seed(reproduced, tmp_path):
    import os
    import shutil

    from advbench.report import load_frame
    from advbench.report.paper_grids import build_paper_grid

    out, _, _ = reproduced
    shutil.copytree(out, tmp_path / "runs")
    adv = next((tmp_path / "runs").rglob("adv-train-pgd-10-s0-*"))
    shutil.copytree(adv, adv.with_name(adv.name + "-older"))
    os.utime(adv.with_name(adv.name + "-older") / "config.json", (1, 1))  # e.g. made by an older smoke setting
    grid = build_paper_grid(load_frame([tmp_path / "runs"]), "scorpio", "2(b)")
    assert grid.runs_per_row["Adv Train (PGD-10)"] == [str(adv)] and len(grid.values[("Standard", "Clean")]) == 1
    assert "1 older run(s) of the same row and seed ignored (the newest run counts)" in grid.notes
