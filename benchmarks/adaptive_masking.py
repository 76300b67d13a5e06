"""Acceptance table for ``--adapt``: four deliberately masked wrappers of one trained model, attacked with a
suite without and with ``--adapt``, beside the plain model.

The wrappers keep the model's predictions but mask its gradients: Gaussian input noise (randomized),
input quantisation to 16 levels in a ``prep`` submodule, logits scaled by 10^4 (saturated softmax), and a
numpy blur in a ``prep`` submodule (no gradient at all). Every masked model must be flagged, the plain
model not; with ``--adapt`` each masked model's worst case must come within a few points of the plain
model's (the blur model's reference is its differentiable twin, the same blur written in torch). A second
table checks that EOT-PGD's accuracy is non-increasing in steps on the randomized model, where plain
PGD's rises.

    python benchmarks/adaptive_masking.py                     # trains a small-cnn on synthetic (CPU)
    python benchmarks/adaptive_masking.py --run runs/<a run> --n-eval 1000 --eps 8/255 --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench import api
from advbench.api.models import load_any_run_model
from advbench.attacks import Suite, SuiteEntry
from advbench.config import run_config
from advbench.core.devices import resolve_device
from advbench.data import load_splits
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob
from advbench.threat import ThreatModel


class Noisy(nn.Module):
    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


class Quantize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 15) / 15


class Saturated(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


class NumpyBlur(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().numpy()
        p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        box = sum(p[:, :, i:i + a.shape[2], j:j + a.shape[3]] for i in range(3) for j in range(3)) / 9
        return torch.from_numpy(0.5 * a + 0.5 * box).to(x)


class TorchBlur(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return 0.5 * x + 0.5 * box


class Pre(nn.Module):
    def __init__(self, prep: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.prep, self.net = prep, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prep(x))


def _model_and_data(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, Any]:
    run = args.run
    if run is None:
        run, _ = api.train(out=tempfile.mkdtemp(), dataset="synthetic", model="small-cnn", defense="standard",
                           epochs=args.epochs, n_train=args.n_train, eps=args.eps, device=str(device),
                           optimizer="adam", lr=0.002, schedule="cosine", weight_decay=0.0, batch_size=128)
    model, _ = load_any_run_model(Path(run), "best", device)
    _, cfg = run_config(Path(run))
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=False, n_test=args.n_eval,
                         options=cfg.dataset_options)
    return model.eval(), splits.test


def _row(name: str, res: dict[str, Any], reference: float) -> dict[str, Any]:
    adapted = (res.get("adapted") or [res["robust"][0]])[0]
    return {"model": name, "flagged": res["checks"]["flagged"], "masking": list(res["checks"]["masking"]),
            "adaptation": res["adapt"]["entries"], "clean": res["clean"]["accuracy"],
            "unadapted": res["robust"][0]["accuracy"], "unadapted_verdict": res["robust"][0]["verdict"]["summary"],
            "adapted": adapted["accuracy"], "adapted_verdict": adapted["verdict"]["summary"], "reference": reference,
            "gap": adapted["accuracy"] - reference}


def acceptance(model: nn.Module, data: Any, args: argparse.Namespace, device: torch.device,
               out: Path) -> list[dict[str, Any]]:
    """Each model with --adapt: flags, unadapted and adapted worst case, the reference (plain) worst case."""
    suite = Suite("pgd-lite", (SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-20", "pgd", {"steps": 20}),
                               SuiteEntry("PGD-100", "pgd", {"steps": 100})))
    job = EvalJob(suite, [ThreatModel.parse(args.eps)], n_eval=args.n_eval, batch_size=args.batch_size, adapt=True)

    def run(name: str, m: nn.Module) -> dict[str, Any]:
        return evaluate_suite(m.eval(), data, job, out / name / "attacks" / "s.json", device=device)

    plain = run("plain", model)
    twin = run("torch-blur", Pre(TorchBlur(), model))
    rows = [_row("plain", plain, plain["robust"][0]["accuracy"])]
    masked = {"randomized (noise 0.05)": Noisy(model, args.sigma), "quantized (16 levels)": Pre(Quantize(), model),
              "saturated (logits x 1e4)": Saturated(model)}
    for name, m in masked.items():
        rows.append(_row(name, run(name.split()[0], m), plain["robust"][0]["accuracy"]))
    rows.append(_row("numpy blur (no gradient)", run("blur", Pre(NumpyBlur(), model)),
                     twin["robust"][0]["accuracy"]))
    return rows


def monotone(model: nn.Module, data: Any, args: argparse.Namespace, device: torch.device,
             out: Path) -> list[dict[str, Any]]:
    """Plain PGD and EOT-PGD at 5..40 steps on the randomized model: accuracy per step count."""
    steps = (5, 10, 20, 40)
    suite = Suite("mono", tuple([SuiteEntry(f"PGD-{k}", "pgd", {"steps": k}) for k in steps]
                                + [SuiteEntry(f"EOT-PGD-{k}", "adaptive-pgd", {"steps": k}) for k in steps]))
    job = EvalJob(suite, [ThreatModel.parse(args.eps)], n_eval=args.n_eval, batch_size=args.batch_size)
    res = evaluate_suite(Noisy(model, args.sigma).eval(), data, job, out / "mono" / "attacks" / "m.json",
                         device=device)
    checks = {c["name"]: c for c in res["checks"]["checks"]}
    eot_pairs = [p for p in checks["monotone_steps"]["values"]["pairs"] if p["stronger"].startswith("EOT")]
    return [{"steps": k, "pgd": next(r["accuracy"] for r in res["results"] if r["key"] == f"PGD-{k}"),
             "eot_pgd": next(r["accuracy"] for r in res["results"] if r["key"] == f"EOT-PGD-{k}"),
             "eot_max_increase": max(p["increase"] for p in eot_pairs)} for k in steps]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a trained run (default: train small-cnn on synthetic)")
    p.add_argument("--n-eval", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=150)
    p.add_argument("--eps", default="4/255")
    p.add_argument("--sigma", type=float, default=0.05, help="input noise of the randomized model")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=4500)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = resolve_device(args.device)
    t0 = time.time()
    model, data = _model_and_data(args, device)
    out = Path(tempfile.mkdtemp())
    rows = acceptance(model, data, args, device, out)
    mono = monotone(model, data, args, device, out)
    print(f"eps {args.eps}, first {args.n_eval} test images, device {device}, {time.time() - t0:.0f} s\n")
    print("| model | masking found | checks flagged | adaptation | clean | worst case | with --adapt | reference "
          "| gap | verdict (unadapted) | verdict (adapted) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {', '.join(r['masking']) or '—'} | {', '.join(r['flagged']) or '—'} | "
              f"{'; '.join(r['adaptation']) or '—'} | {100 * r['clean']:.1f} | {100 * r['unadapted']:.1f} | "
              f"{100 * r['adapted']:.1f} | {100 * r['reference']:.1f} | {100 * r['gap']:+.1f} | "
              f"{r['unadapted_verdict']} | {r['adapted_verdict']} |")
    print("\n| steps | PGD (noisy verdict) | EOT-PGD (deterministic verdict) |\n|---|---|---|")
    for r in mono:
        print(f"| {r['steps']} | {100 * r['pgd']:.1f} | {100 * r['eot_pgd']:.1f} |")
    print(f"\nEOT-PGD largest increase with more steps: {100 * max(r['eot_max_increase'] for r in mono):.2f} points")
    if args.json:
        Path(args.json).write_text(json.dumps({"acceptance": rows, "monotone": mono}, indent=2))


if __name__ == "__main__":
    main()
