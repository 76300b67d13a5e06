"""A paper grid's top-5 column: gradient-reg's ImageNet-1k block shows '% clean error' as 100 - the stored clean
top-5 accuracy, while the CIFAR-10 rows of the same column stay top-1 error, and the block's top-5 attack cells
stay empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runs import write_run

from advbench import runs
from advbench.report import load_frame
from advbench.report.paper_grids import build_paper_grid


def _with_top5(run: Path, suite: str, top5: float, norm: str | None = None, eps: str | None = None) -> None:
    result = runs.read_json(run / "attacks" / f"{suite}.json")
    result["clean"]["top5_accuracy"] = top5
    result["clean_top5_acc"] = top5
    runs.write_json(run / "attacks" / f"{suite}.json", result)
    if norm is not None:
        record = runs.read_json(run / "config.json")
        record["config"].update(norm=norm, eps=eps)
        runs.write_json(run / "config.json", record)


@pytest.mark.parametrize("table", ["1", "2"])
def test_imagenet_clean_error_is_top5(tmp_path: Path, table: str) -> None:
    # 37 of 50 images top-1 correct, 47 top-5 correct: the ImageNet cell is 100 - 94 = 6, not 100 - 74 = 26
    imagenet = write_run(tmp_path, "in-undefended", "standard", clean=0.74, attacks={"grad-norm": 0.74},
                         suite="grad-stats", dataset="imagenet", model="resnet50", eps="0.5", n_eval=50)
    _with_top5(imagenet, "grad-stats", 0.94, norm="l2", eps="0.5")
    reg = write_run(tmp_path, "in-lam1", "grad-reg-fd", options={"lam": 1.0, "penalty": "l2"}, clean=0.6,
                    attacks={"grad-norm": 0.6}, suite="grad-stats", dataset="imagenet", model="resnet50", eps="0.5",
                    n_eval=50)
    _with_top5(reg, "grad-stats", 0.88, norm="l2", eps="0.5")
    suite, norm, eps = ("finlay-linf", "linf", "8/255") if table == "1" else ("finlay-l2", "l2", "0.5")
    best = "Best-Linf" if table == "1" else "Best-L2"
    cifar = write_run(tmp_path, "c10-undefended", "standard", clean=0.9, attacks={best: 0.5}, suite=suite,
                      dataset="cifar10", model="resnext34-2x32", eps=eps)
    _with_top5(cifar, suite, 0.99, norm=norm, eps=eps)
    grid = build_paper_grid(load_frame([tmp_path]), "gradient-reg", table)
    assert grid.values[("ImageNet-1k / Undefended", "% clean error")] == [pytest.approx(6.0)]
    assert grid.values[("ImageNet-1k / squared ℓ2 norm, λ = 1", "% clean error")] == [pytest.approx(12.0)]
    assert grid.values[("CIFAR-10 / Undefended", "% clean error")] == [pytest.approx(10.0)]  # top-1 there
    assert grid.counts[("ImageNet-1k / Undefended", "% clean error")] == [50]
    # the top-5 attack cells of the block are not filled with top-1 numbers
    assert not [k for k in grid.values if k[0].startswith("ImageNet") and k[1] != "% clean error"
                and "training time" not in k[1]]


def test_top5_error_without_a_stored_top5_is_empty(tmp_path: Path) -> None:
    run = write_run(tmp_path, "in-undefended", "standard", clean=0.74, attacks={"grad-norm": 0.74},
                    suite="grad-stats", dataset="imagenet", model="resnet50", eps="0.5", n_eval=50)
    record = runs.read_json(run / "config.json")
    record["config"].update(norm="l2", eps="0.5")
    runs.write_json(run / "config.json", record)
    grid = build_paper_grid(load_frame([tmp_path]), "gradient-reg", "1")
    assert ("ImageNet-1k / Undefended", "% clean error") not in grid.values  # never the top-1 error instead
