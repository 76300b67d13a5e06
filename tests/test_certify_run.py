"""The certification loop, the ``gaussian-noise`` defense and ``advbench certify`` end to end:

- the defense's loss is the CE of the model at x + σ·z for the global RNG's z (recomputed by hand), clipped only
  with ``clip``; σ ≤ 0 is refused;
- :func:`certify_images` on a linear binary model: every certified radius is below the exact distance m/‖w‖₂,
  the certified accuracy at each radius is recomputed from the per-image certificates, abstentions are counted;
  a certification stopped half-way resumes from its partial file to the same per-image certificates;
- the CLI on a tiny synthetic run: smoothing, L-bound and ω-bound results in RUN/certify/NAME.json, reuse of a
  stored result, the report's certified columns, and bad input as one line with exit code 2 writing nothing.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench import api
from advbench.certify import ABSTAIN, SmoothingOptions
from advbench.cli import main
from advbench.core.progress import NullProgress
from advbench.core.signals import Interrupted, StopFlag
from advbench.defenses import StepContext, build_defense
from advbench.engine.certify import CertifyJob, certify_images, parse_radii
from advbench.errors import UserError
from advbench.threat import ThreatModel

D = 12


def test_gaussian_noise_loss_is_ce_at_the_noisy_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 3))
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    ctx = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=3)
    for clip in (False, True):
        defense = build_defense("gaussian-noise", ThreatModel.parse("0.5", "l2"), {"sigma": 0.5, "clip": clip})
        torch.manual_seed(11)
        loss, logs = defense.loss(model, x, y, ctx)
        torch.manual_seed(11)
        noisy = x + 0.5 * torch.randn_like(x)
        expect = F.cross_entropy(model(noisy.clamp(0, 1) if clip else noisy), y)
        assert torch.allclose(loss, expect) and 0 <= logs["acc"] <= 1
    assert build_defense("gaussian-noise", ThreatModel()).options.sigma == 0.25
    with pytest.raises(UserError, match="sigma"):
        build_defense("gaussian-noise", ThreatModel(), {"sigma": 0.0})


def _linear(w: torch.Tensor, b: float) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[1] = w
        model[1].bias[1] = b
    return model


def _images(w: torch.Tensor, b: float, margins: list[float]) -> torch.Tensor:
    base = torch.full((D,), 0.5, dtype=torch.float64)
    return torch.stack([base + (m - (w @ base + b)) * w / (w @ w) for m in margins]).view(-1, 3, 2, 2)


class StopAfter(NullProgress):
    """Progress that asks the loop to stop once ``k`` images are certified."""

    def __init__(self, flag: StopFlag, k: int) -> None:
        self.flag, self.k, self.seen = flag, k, 0

    def advance(self, handle, n: int = 1, **fields) -> None:
        self.seen += n
        if self.seen >= self.k:
            self.flag.request("test")


def test_certify_images_on_a_linear_model_and_resume(tmp_path):
    w = torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = _linear(w, 0.1)
    wn = float(w.norm())
    distances = [0.4, 0.15, 0.0, 0.25, 0.2, 0.6]  # signed by the label below; 0.0 sits on the boundary
    x = _images(w, 0.1, [d * wn for d in distances])
    y = torch.tensor([1, 1, 1, 0, 1, 1])  # image 3 is of class 0 but lies on the class-1 side: misclassified
    job = CertifyJob(method="smoothing", norm="l2", radii=parse_radii("0,0.1,0.2,0.3", "l2", ()), n_eval=6, seed=3,
                     smoothing=SmoothingOptions(sigma=0.25, n0=50, n=4000, alpha=0.001, batch=4000))
    out = tmp_path / "certify" / "s.json"
    res = certify_images(model, (x, y), job, out, device=torch.device("cpu"))
    assert json.loads(out.read_text())["fingerprint"] == job.fingerprint()
    ps = res["per_sample"]
    for pred, rad, d in zip(ps["prediction"], ps["radius"], distances, strict=True):
        assert pred in (ABSTAIN, 1) and rad <= d + 1e-12
    assert ps["prediction"][2] == ABSTAIN and res["summary"]["abstained"] >= 1
    for row in res["certified"]:
        expect = sum(1 for p, r, t in zip(ps["prediction"], ps["radius"], y.tolist(), strict=True)
                     if p == t and r >= row["radius"]) / 6
        assert row["accuracy"] == expect
    assert res["certified"][0]["accuracy"] == pytest.approx(4 / 6)  # 0, 1, 4, 5 certified correct at radius 0
    assert res["clean"]["correct"] == [1, 1, 0, 0, 1, 1]  # the base model: m = 0 is a tie, argmax picks class 0

    # stopped after 2 images: the partial file holds them; the rerun continues to the same certificates
    flag = StopFlag()
    cut = tmp_path / "certify" / "cut.json"
    with pytest.raises(Interrupted):
        certify_images(model, (x, y), job, cut, device=torch.device("cpu"), progress=StopAfter(flag, 2), stop=flag)
    partial = json.loads((tmp_path / "certify" / ".cut.partial.json").read_text())
    assert len(partial["per_sample"]["prediction"]) == 2 and not cut.exists()
    again = certify_images(model, (x, y), job, cut, device=torch.device("cpu"))
    assert again["per_sample"] == res["per_sample"] and not (tmp_path / "certify" / ".cut.partial.json").exists()


def test_bound_jobs_on_a_linear_model(tmp_path):
    from advbench.certify import BoundOptions

    w = torch.randn(D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = _linear(w, 0.0)
    wn = float(w.norm())
    margins = [s * k * 0.05 * wn for k in range(1, 21) for s in (1, -1)]
    x = _images(w, 0.0, margins)
    y = torch.ones(len(margins), dtype=torch.long)
    radii = parse_radii("0.1,0.3", "l2", ())
    lb = certify_images(model, (x, y), CertifyJob(method="lbound", radii=radii, n_eval=40,
                                                  bound=BoundOptions(batches=50, batch=10)),
                        tmp_path / "l.json", device=torch.device("cpu"))
    true = [max(m, 0) / wn for m in margins]
    assert all(d <= t * 1.05 + 1e-12 for d, t in zip(lb["per_sample"]["distance"], true, strict=True))
    assert lb["summary"]["lipschitz"] == pytest.approx(0.5 * wn, rel=0.1)
    assert lb["certified"][0]["accuracy"] == pytest.approx(
        sum(1 for d, t in zip(lb["per_sample"]["distance"], true, strict=True) if t > 0 and d >= 0.1) / 40)
    om = certify_images(model, (x, y), CertifyJob(method="omega", radii=radii, n_eval=40,
                                                  bound=BoundOptions(batches=10, batch=10),
                                                  grid=parse_radii("0.05,0.2", "l2", ())),
                        tmp_path / "o.json", device=torch.device("cpu"))
    assert [o["eps"] for o in om["summary"]["omega"]] == ["0.05", "0.1", "0.2", "0.3"]
    assert all(d in (0.0, 0.05, 0.1, 0.2, 0.3) for d in om["per_sample"]["distance"])
    assert math.isclose(om["summary"]["mean_distance"], sum(om["per_sample"]["distance"]) / 40)


# --- the CLI on a tiny synthetic run ---------------------------------------------------------------------------

TINY = dict(dataset="synthetic", model="small-cnn", epochs=1, n_train=64, batch_size=32, lr=0.01, device="cpu",
            quiet=True)
TINY_SET = {"val_n": 16, "val_attack_steps": 1, "data.n_train": 100, "data.n_test": 20, "model.width": 4,
            "model.hidden": 16, "sigma": 0.25}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cert-runs")
    run_dir, _ = api.train(out=out, name="g", defense="gaussian-noise", settings=TINY_SET, **TINY)
    return run_dir


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_certifies_reuses_and_reports(capsys, tiny_run):
    common = ["--n-eval", "6", "--device", "cpu", "-q"]
    code, out, err = _cli(capsys, "certify", str(tiny_run), "--sigma", "0.25", "--n", "200", "--n0", "20",
                          "--batch-size", "100", *common)
    assert code == 0, err
    stored = json.loads((tiny_run / "certify" / "smoothing-sigma0.25.json").read_text())
    assert stored["method"] == "smoothing" and stored["n_eval"] == 6 and stored["options"]["n"] == 200
    assert [r["eps"] for r in stored["certified"]] == ["0.25", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75", "2.0"]
    assert "Smoothing σ=0.25" in out and "abstained on" in out
    code, out, _ = _cli(capsys, "certify", str(tiny_run), "--sigma", "0.25", "--n", "200", "--n0", "20",
                        "--batch-size", "100", *common)
    assert code == 0 and "reused the stored result" in out
    for method in ("lbound", "omega"):
        code, out, err = _cli(capsys, "certify", str(tiny_run), "--method", method, "--batches", "5", "--stat-batch",
                              "4", "--grid", "0.5", "--radii", "0.25,0.5", *common)
        assert code == 0, err
        assert (tiny_run / "certify" / f"{method}-l2.json").is_file()
    code, out, err = _cli(capsys, "certify", str(tiny_run), "--method", "omega", "--norm", "linf", "--batches", "3",
                          "--stat-batch", "2", "--grid", "4/255", "--name", "omega-inf", *common)
    assert code == 0, err
    assert json.loads((tiny_run / "certify" / "omega-inf.json").read_text())["certified"][1]["eps"] == "8/255"
    grid, text = api.report([tiny_run.parent])
    for column in ("Smoothing σ=0.25@0.25", "Smoothing σ=0.25@2.0", "L-bound@0.5", "ω-bound@0.25", "ω-bound@8/255"):
        assert column in grid.columns, list(grid.columns)
    assert list(grid.columns).index("Smoothing σ=0.25@0.25") > list(grid.columns).index("Clean")
    code, out, _ = _cli(capsys, "show", str(tiny_run))
    assert code == 0 and "certify/smoothing-sigma0.25.json: Smoothing σ=0.25 (l2) certified accuracy at 0.25" in out


@pytest.mark.parametrize("args,needle", [
    (["--method", "randomized"], "unknown --method"),
    (["--norm", "linf"], "certifies l2 radii"),
    (["--sigma", "0"], "--sigma must be a finite number > 0"),
    (["--sigma", "inf"], "--sigma must be a finite number > 0"),
    (["--sigma", "nan"], "--sigma must be a finite number > 0"),
    (["--p", "nan", "--method", "lbound"], "--p must be in (0, 1)"),
    (["--n-eval", "0"], "--n-eval and --batch-size must be >= 1"),
    (["--grid", "1e400", "--method", "omega"], "invalid eps"),
    (["--alpha", "1.5"], "--alpha must be in (0, 1)"),
    (["--n", "0"], "--n must be >= 1"),
    (["--radii", "0.5,-1"], "invalid eps"),
    (["--method", "omega", "--norm", "linf", "--radii", "8"], "above 1"),
    (["--method", "lbound", "--batches", "1"], "--batches must be >= 2"),
    (["--name", "../evil"], "one folder name"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_run, args, needle):
    before = sorted(p.name for p in (tiny_run / "certify").glob("*")) if (tiny_run / "certify").exists() else []
    code, _, err = _cli(capsys, "certify", str(tiny_run), "--n-eval", "2", "--device", "cpu", "-q", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    after = sorted(p.name for p in (tiny_run / "certify").glob("*")) if (tiny_run / "certify").exists() else []
    assert after == before


def test_a_missing_run_is_one_line(capsys, tmp_path):
    code, _, err = _cli(capsys, "certify", str(tmp_path / "nope"))
    assert code == 2 and "run directory not found" in err and len(err.strip().splitlines()) == 1


def test_a_malformed_certification_is_skipped_by_the_report(tiny_run):
    from advbench.report.frame import load_frame

    bad = tiny_run / "certify" / "broken.json"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(json.dumps({"name": "broken", "label": "L-bound"}))  # no n_eval, norm or certified
    try:
        frame = load_frame([tiny_run])
        assert any(str(bad) in s and "malformed" in s for s in frame.attrs["skipped"])
        assert not (frame["suite"] == "certify:broken").any()
    finally:
        bad.unlink()
