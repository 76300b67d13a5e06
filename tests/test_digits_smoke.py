"""Real handwritten digits (scikit-learn's 1,797 8x8 digits as MNIST idx files): the mnist loader reads them, and
a real-digit smoke grid of SAT Table 2 through `advbench reproduce --data-dir` puts every defense above the
standard model under attack."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from digits import N_TEST, write_digits_mnist

pytest.importorskip("sklearn")


def test_digits_are_read_by_the_mnist_loader_as_written(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from advbench.data import load_splits

    write_digits_mnist(tmp_path)
    splits = load_splits("mnist", data_dir=tmp_path, download=False, val_size=0)
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x_test = splits.test.x.numpy() if hasattr(splits.test.x, "numpy") else np.asarray(splits.test.x)
    y_test = np.asarray(splits.test.y)
    assert x_test.shape == (N_TEST, 1, 28, 28)
    assert (y_test == digits.target[order][-N_TEST:]).all()
    assert np.bincount(y_test, minlength=10).min() > 10  # every class in the test set
    # the 20x20 centre, shrunk back to 8x8, is the original digit (not transposed, not shifted)
    scale = 255.0 if x_test.max() > 1.5 else 1.0
    same, transposed = [], []
    for i in range(N_TEST):
        centre = (x_test[i, 0, 4:24, 4:24] * 255.0 / scale).astype(np.uint8)
        back = np.asarray(Image.fromarray(centre).resize((8, 8), Image.BILINEAR), dtype=float)
        orig = digits.images[order][len(order) - N_TEST + i]
        same.append(np.corrcoef(back.ravel(), orig.ravel())[0, 1])
        transposed.append(np.corrcoef(back.ravel(), orig.T.ravel())[0, 1])
    print(f"correlation with the original: {np.mean(same):.3f} (min {np.min(same):.3f}); transposed "
          f"{np.mean(transposed):.3f}")
    assert np.min(same) > 0.85 and np.mean(same) > 0.9 and np.mean(transposed) < np.mean(same) - 0.2
    assert (x_test[:, 0, :4].max() == 0) and (x_test[:, 0, :, 24:].max() == 0)  # MNIST's empty border


#: the rows the CI grid trains (the whole block takes ~5 min on 2 busy cores): the baseline and the paper's P-SAT
ROWS = ("AT [23]", "P-SAT (ours)")


def test_real_digit_smoke_grid_puts_every_defense_above_the_standard_model(tmp_path, capsys):
    """SAT Table 2, block eps 0.3, at smoke scale on the real digits, through the CLI; the standard base run is
    attacked with the same suite. Every defense learns (clean accuracy > 70%) and its AutoAttack accuracy is above
    the standard model's by more than 1.96 standard errors (measured: AT 35%, P-SAT 32%, standard 0% on 100 test
    digits; 277 s on 2 busy cores)."""
    from advbench.cli import main

    data = write_digits_mnist(tmp_path / "data")
    out = tmp_path / "runs"
    start = time.monotonic()
    rc = main(["reproduce", "sat", "--table", "2", "--scale", "smoke", "--data-dir", str(data), "--out", str(out),
               "--block", "0.3", *[a for r in ROWS for a in ("--row", r)], "--device", "cpu",
               "--jobs", "2", "--threads", "1", "--format", "json"])
    assert rc == 0
    grid = json.loads(capsys.readouterr().out)
    assert "mnist" in grid["caption"] and "synthetic" not in grid["caption"]
    adv = {c["row"]: c["measured"] for c in grid["cells"] if c["column"] == "0.3 / Adv" and c["row"] in ROWS}
    clean = {c["row"]: c["measured"] for c in grid["cells"] if c["column"] == "0.3 / Clean" and c["row"] in ROWS}
    base = next(p for p in (out / "smoke-base").iterdir() if p.name.startswith("standard-base"))
    row_result = json.loads(next((out / "sat-table2-smoke").glob("*/attacks/autoattack*.json")).read_text())
    suite, n_eval = row_result["suite"], row_result["n_eval"]
    assert main(["attack", str(base), "--suite", suite, "--n-eval", str(n_eval), "--device", "cpu"]) == 0
    capsys.readouterr()
    std = json.loads((base / "attacks" / f"{suite}.json").read_text())
    standard_adv = 100 * next(r["accuracy"] for r in std["results"] if r["label"] == "AutoAttack")
    elapsed = time.monotonic() - start
    print(f"real-digit smoke grid: {elapsed:.0f} s; standard {standard_adv:.1f}; defenses {adv}")
    n = next(r.get("n", std["n_eval"]) for r in std["results"] if r["label"] == "AutoAttack")
    assert set(clean) == set(ROWS) and all(clean[row] > 70.0 for row in ROWS), clean  # every row learns
    for row, value in adv.items():
        p, q = value / 100, standard_adv / 100
        se = 100 * math.sqrt(p * (1 - p) / n + q * (1 - q) / n)
        assert value - standard_adv > 1.96 * se, f"{row} {value:.1f} vs standard {standard_adv:.1f} (SE {se:.1f})"
