"""``advbench.evaluate_tensors``: your own model on your own tensors in one call, nothing written to disk. On a
linear model the robust accuracy has a closed form: a correct point survives every Linf attack of size eps iff
its margin |w·x + b| exceeds eps·‖w‖₁ (the points lie inside the box, so it never binds)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

import advbench
from advbench.errors import UserError


def test_one_call_on_tensors_matches_the_closed_form_and_writes_nothing(linear_problem, tmp_path, monkeypatch):
    model, x, y, w, b = linear_problem
    monkeypatch.chdir(tmp_path)
    before = {p.name for p in Path(tempfile.gettempdir()).glob("advbench-tensors-*")}
    eps = 0.02
    res = advbench.evaluate_tensors(model, x, y, attack="pgd", attack_options={"steps": 50}, eps=eps, device="cpu")
    correct = model(x).argmax(1) == y
    margin = (x.flatten(1) @ w + b) * (2 * y - 1)  # signed distance to the boundary, times ‖w‖₂
    want = float((correct & (margin > eps * w.abs().sum())).double().mean())
    assert res["clean"]["accuracy"] == pytest.approx(float(correct.double().mean()))
    assert res["robust"][0]["accuracy"] == pytest.approx(want) and 0 < want < res["clean"]["accuracy"]
    assert res["n_eval"] == len(y) and res["checks"]["status"] in ("pass", "warn")
    assert list(tmp_path.iterdir()) == []  # no runs/ folder
    assert {p.name for p in Path(tempfile.gettempdir()).glob("advbench-tensors-*")} == before  # temp folder gone


def test_default_suite_and_bad_shapes(linear_problem):
    model, x, y, _w, _b = linear_problem
    res = advbench.evaluate_tensors(model, x[:8], y[:8], eps="8/255", device="cpu", hygiene=False)
    assert [r["label"] for r in res["results"]] == ["FGSM", "PGD-20", "PGD-100"]  # pgd-lite
    with pytest.raises(UserError, match="as many images as labels"):
        advbench.evaluate_tensors(model, x[:8], y[:7])
