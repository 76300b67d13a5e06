"""The papers and report packages in the one-way architecture: the report side renders comparison and paper
grids from run folders without torch or a defense, papers are discovered by file, the api installs the
paper suites' lookup, and the one ``slug`` keeps the names that already exist on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from advbench import runs

ROOT = Path(__file__).resolve().parents[1]
_PGD = ("FGSM", "PGD-20", "PGD-100", "PGD-200", "PGD-1000", "PGD-20-50")
_SMOKE_DESCRIPTION = "smoke variant of pgd, on the first 4 images only: PGD-1000; PGD-20-50"


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); its last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_run(root: Path, name: str, defense: str, options: dict, accuracy: float) -> Path:
    """A finished run as plain JSON files: config.json (as training writes it) and one pgd smoke result."""
    run = root / name
    config = {"defense": defense, "dataset": "synthetic", "model": "small-cnn", "norm": "linf", "eps": "8/255",
              "seed": 0, "defense_options": options, "epochs": 1, "init_from": None}
    runs.write_json(run / "config.json", {"format": "advbench-run-v1", "config": config,
                                          "defense": {"defense": defense, "options": {"sentinel": 1, **options}}})
    runs.write_json(run / "summary.json", {"status": "completed"})
    results = [{"label": a, "norm": "linf", "eps": "8/255", "accuracy": accuracy - 0.01 * i, "seconds": 1.0,
                "n": 4 if a in ("PGD-1000", "PGD-20-50") else 8} for i, a in enumerate(_PGD)]
    runs.write_json(run / "attacks" / "pgd-smoke4.json", {
        "suite": "pgd-smoke4", "description": _SMOKE_DESCRIPTION, "n_eval": 8, "clean": {"accuracy": 0.9},
        "results": results, "robust": [{"norm": "linf", "eps": "8/255", "accuracy": accuracy - 0.1}],
        "checks": {"status": "pass", "flagged": []}})
    return run


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("json-runs")
    _write_run(root, "standard", "standard", {}, 0.2)
    _write_run(root, "adv", "pgd-at", {"steps": 10, "step_size": 2 / 255}, 0.5)  # the recipe writes "2/255"
    _write_run(root, "mma", "mma", {"margin": 32 / 255}, 0.45)
    _write_run(root, "trades-beta6", "trades", {"beta": 6.0}, 0.55)  # soar Table 1's TRADES row has beta 9
    return root


def test_report_and_paper_grid_render_without_torch_or_a_defense(runs_folder):
    got = _python(f"""
        import json, sys
        from advbench.report import comparison_grid, load_frame, render
        from advbench.report.paper_grids import build_paper_grid, render_paper_grid

        frame = load_frame([{str(runs_folder)!r}])
        texts = [render(comparison_grid(frame), fmt, "caption", frame) for fmt in ("markdown", "latex", "json")]
        grid = build_paper_grid(frame, "soar", "1")
        texts += [render_paper_grid(grid, fmt) for fmt in ("markdown", "latex", "csv", "json", "html")]
        print(json.dumps({{"modules": sorted(m for m in sys.modules if m.split(".")[0] == "torch"
                                            or m.startswith(("advbench.defenses", "advbench.engine",
                                                             "advbench.attacks", "advbench.api"))),
                          "rows": grid.runs_per_row, "caption": grid.caption, "sizes": [len(t) for t in texts]}}))
    """)
    assert got["modules"] == []  # no torch, no defense built, no engine, no attack registry
    rows = {label: [Path(r).name for r in rs] for label, rs in got["rows"].items()}
    assert rows == {"ResNet / Standard": ["standard"], "ResNet / ADV": ["adv"], "ResNet / MMA": ["mma"]}
    assert f"[pgd-smoke4: {_SMOKE_DESCRIPTION}]" in got["caption"]  # read from the stored result
    assert all(got["sizes"])


def test_paper_modules_import_without_torch_and_are_discovered_by_file():
    got = _python("""
        import json, sys
        from advbench.papers import paper_modules
        from advbench.papers.published import PAPERS, published_tables
        from advbench.papers.recipes import get_recipe, load_recipe_modules

        modules = [m.__name__ for m in load_recipe_modules()]
        recipes = sum(get_recipe(p, t) is not None for p, t in published_tables())
        print(json.dumps({"torch": "torch" in sys.modules, "papers": paper_modules(), "PAPERS": PAPERS,
                          "modules": modules, "recipes": recipes}))
    """)
    assert not got["torch"]
    assert got["papers"] == {"gradient-reg": "gradient_reg", "randomized-at": "randomized_at", "sat": "sat",
                             "scorpio": "scorpio", "soar": "soar"}  # helpers (plan, recipes, suites ...) skipped
    assert got["PAPERS"] == list(got["papers"])
    assert got["modules"] == [f"advbench.papers.{m}" for m in got["papers"].values()]
    assert got["recipes"] >= 27


def test_help_names_the_discovered_papers_without_torch():
    got = _python("""
        import contextlib, io, json, sys
        from advbench.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["reproduce", "--help"])
        print(json.dumps({"torch": "torch" in sys.modules, "text": out.getvalue(), "code": code}))
    """)
    assert not got["torch"] and got["code"] == 0
    assert "gradient-reg, randomized-at, sat, scorpio, soar" in " ".join(got["text"].split())


def test_attacks_do_not_know_papers_and_the_api_installs_the_paper_suites():
    got = _python("""
        import json, sys
        from advbench.attacks import SUITES

        before = sorted(m for m in sys.modules if m.startswith("advbench.papers"))
        import advbench.api  # noqa: F401
        print(json.dumps({"before": before, "init": SUITES.get("soar-init").name,
                          "smoke": [e.label for e in SUITES.get("pgd-smoke100").entries]}))
    """)
    assert got["before"] == []  # importing the attacks imports nothing of papers
    assert got["init"] == "soar-init" and "PGD-1000" in got["smoke"]


@pytest.mark.parametrize("text,kind,sep,default,want", [
    ("SCORPIO (FE,N=3)", "label", "-", "", "scorpio-fe-n-3"),  # reproduce's row part of a run name
    ("Adv Train (PGD-10)", "label", "-", "", "adv-train-pgd-10"),
    ("β=6.0_x", "label", "-", "", "β-6-0-x"),  # any script kept, '.' and '_' replaced
    ("my_models.py:Net v2", "file", "-", "model", "my_models.py-Net-v2"),  # --model-module run folder
    ("APGD-T / 8/255", "file", "_", "attack", "APGD-T_8_255"),  # AutoAttack state file stem
    ("///", "file", "_", "attack", "attack"),
])
def test_slug_kinds_keep_existing_names(text, kind, sep, default, want):
    assert runs.slug(text, sep=sep, default=default, kind=kind) == want


def test_commands_start_without_torchvision_or_scipy_stats():
    """torchvision (about 1.3 s to import, with torch._dynamo) and scipy.stats (about 0.6 s) are imported where they
    are used (a ResNet-50, a real dataset's files, a certificate), not by every command's start-up: importing the
    api and the CLI and building and running a small-cnn imports neither; a ResNet-50 still builds (through the
    registry, picklable by its module path) and the claims' Z is scipy's 97.5% normal quantile."""
    got = _python("""
        import json, pickle, sys
        import advbench.api, advbench.cli, advbench.report.paper_grids
        import torch
        from advbench.models import build_model
        model = build_model("small-cnn", num_classes=10, in_channels=1, input_size=28)
        model(torch.rand(2, 1, 28, 28)).sum().backward()
        before = sorted(m for m in ("torchvision", "scipy.stats", "torch._dynamo") if m in sys.modules)
        net = build_model("resnet50", num_classes=5, input_size=64).net
        cls = type(net)
        again = pickle.loads(pickle.dumps(net))
        print(json.dumps({"before": before, "after": "torchvision" in sys.modules, "cls": cls.__module__,
                          "same": type(again) is cls, "params": sum(p.numel() for p in net.parameters())}))
    """)
    assert got["before"] == [], got
    assert got["after"] and got["cls"] == "advbench.models._resnet50_net" and got["same"]
    assert got["params"] == 25557032 - 1000 * 2048 - 1000 + 5 * 2048 + 5  # torchvision's ResNet-50, 5 classes
    from scipy.stats import norm

    from advbench.report.claims import Z
    assert Z == float(norm.ppf(0.975))
