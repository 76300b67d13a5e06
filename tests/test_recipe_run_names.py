"""Every paper recipe plans the same run names (content hashes) as before the one-way architecture refactor:
``tests/data/recipe_run_names.json`` was recorded from ``reproduce PAPER --table N --scale S --dry-run`` on the
commit before it. A change here means reused runs would no longer be found; make it only on purpose. A recipe may
gain rows and blocks (their runs add names); the recorded ones must all still be planned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advbench.papers.plan import make_plan

RECORDED = json.loads((Path(__file__).parent / "data" / "recipe_run_names.json").read_text())


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_recipe_run_names_unchanged(key, tmp_path):
    paper, table, scale = key.split(":")
    plan = make_plan(paper, table, scale=scale, out=tmp_path, device="cpu")
    # every recorded run is still planned under the same name (rows a recipe gained since add names, none change)
    missing = sorted(set(RECORDED[key]) - {p.name for p in plan.runs})
    assert not missing
