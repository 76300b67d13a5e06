"""Attack throughput: our PGD-20 vs torchattacks' PGD-20, and AutoAttack (standard) seconds per 100 images.

Both PGD implementations run on the same model (eval mode), the same batch and the same settings
(Linf eps 8/255, step 2/255, 20 steps, uniform random start) and must end with per-sample correctness,
so torchattacks' time includes the one forward pass that turns its images into correctness (ours
returns it). Runs alternate between the two so that machine load affects both alike; the median is
reported. Ours must be at least as fast.

Our PGD stops computing for a sample once it is misclassified (its first misclassified iterate is the
result), so it is much faster whenever samples fall; the second measurement (``--eps-hard``, default
0.01/255, where no sample falls) shows the per-step cost when every sample runs all 20 steps.

AutoAttack time depends on how robust the model is (later components only attack the points that
survive): without ``--run`` the model is untrained and the labels are its own predictions (every point
starts correct: the cost on an undefended model); with ``--run`` it is that run's model on its test set.

    python benchmarks/attack_cost.py                                  # CPU, small-cnn, batch 128
    python benchmarks/attack_cost.py --model preact-resnet18 --device cuda --batch 256
    python benchmarks/attack_cost.py --run runs/quickstart/pgd-at --aa-images 100 --json out.json
    python benchmarks/attack_cost.py --run RUN --skip-autoattack --smoke-targets --threads 1   # 9 vs 3 targets
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advbench.attacks import build_attack
from advbench.core.devices import resolve_device
from advbench.core.seeding import seed_everything
from advbench.threat import ThreatModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_problem(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model and up to ``max(batch, aa_images)`` images with labels."""
    n = max(args.batch, args.aa_images)
    if args.run:
        from advbench import runs
        from advbench.config import TrainConfig
        from advbench.data import load_splits
        from advbench.engine.evaluate import to_model_input
        from advbench.engine.setup import load_run_model

        model, record = load_run_model(args.run, "best", device)
        cfg = TrainConfig(**runs.read_json(f"{args.run}/config.json")["config"])
        test = load_splits(cfg.dataset, data_dir=cfg.data_dir, n_test=n, options=cfg.dataset_options).test
        return model.eval(), to_model_input(test.x, device), test.y.to(device)
    from advbench.models import build_model

    seed_everything(0)
    model = build_model(args.model, num_classes=10, in_channels=3, input_size=32, mean=(0.5,) * 3,
                        std=(0.25,) * 3).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correctly classified
    return model, x, y


def time_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
             device: torch.device, eps: str) -> dict:
    """Median seconds per batch of ours and torchattacks' PGD-20 at ``eps`` (alternating runs)."""
    import torchattacks

    threat = ThreatModel.parse(eps)
    ours = build_attack("pgd", threat, {"steps": 20, "step_size": 2 / 255})
    ref = torchattacks.PGD(model, eps=threat.eps, alpha=2 / 255, steps=20, random_start=True)
    xb, yb = x[:args.batch], y[:args.batch]

    def run_ours() -> torch.Tensor:
        return ours(model, xb, yb, generator=torch.Generator(device=device).manual_seed(0)).correct

    def run_ref() -> torch.Tensor:
        adv = ref(xb, yb)
        with torch.no_grad():
            return model(adv).argmax(1) == yb

    t_ours, t_ref, acc_ours, acc_ref = [], [], 0.0, 0.0
    for i in range(args.warmup + args.repeats):
        for fn, bucket in ((run_ours, t_ours), (run_ref, t_ref)) if i % 2 == 0 else ((run_ref, t_ref),
                                                                                    (run_ours, t_ours)):
            _sync(device)
            t0 = time.perf_counter()
            correct = fn()
            _sync(device)
            if i >= args.warmup:
                bucket.append(time.perf_counter() - t0)
            if fn is run_ours:
                acc_ours = correct.float().mean().item()
            else:
                acc_ref = correct.float().mean().item()
    s_ours, s_ref = statistics.median(t_ours), statistics.median(t_ref)
    return {"eps": eps, "batch": len(xb), "ours_seconds": s_ours, "torchattacks_seconds": s_ref,
            "ours_images_per_second": len(xb) / s_ours, "torchattacks_images_per_second": len(xb) / s_ref,
            "speed_ratio": s_ref / s_ours, "ours_accuracy": acc_ours, "torchattacks_accuracy": acc_ref}


def time_attack(name: str, options: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                device: torch.device, eps: str, *, repeats: int = 3, warmup: int = 1) -> dict:
    """Median seconds of one call of attack ``name`` (advbench registry) on the batch ``(x, y)``."""
    attack = build_attack(name, ThreatModel.parse(eps), options)
    times, acc = [], 0.0
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        res = attack(model, x, y, generator=torch.Generator(device=device).manual_seed(0))
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        acc = res.correct.float().mean().item()
    s = statistics.median(times)
    return {"attack": name, "options": options, "eps": eps, "batch": len(x), "seconds": s,
            "images_per_second": len(x) / s, "accuracy": acc,
            "passes_per_image": (res.forward / len(x), res.backward / len(x))}


def time_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                    device: torch.device) -> dict:
    """Seconds of AutoAttack standard (via the adapter) on ``aa_images`` images, scaled to 100 images."""
    n = args.aa_images
    attack = build_attack("autoattack", ThreatModel.parse(args.eps), {"version": "standard"})
    seconds, correct = 0.0, 0
    for i in range(0, n, args.batch):
        xb, yb = x[i:min(n, i + args.batch)], y[i:min(n, i + args.batch)]
        _sync(device)
        t0 = time.perf_counter()
        res = attack(model, xb, yb)
        _sync(device)
        seconds += time.perf_counter() - t0
        correct += int(res.correct.sum())
    with torch.no_grad():
        clean = (model(x[:n]).argmax(1) == y[:n]).float().mean().item()
    return {"images": n, "seconds": seconds, "seconds_per_100_images": 100 * seconds / n, "clean_accuracy": clean,
            "robust_accuracy": correct / n}


def time_smoke_autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
                          device: torch.device) -> dict:
    """Smoke scale's AutoAttack (APGD-CE + APGD-T, 1 restart) with APGD-T on 9 and on 3 target classes, on the
    same ``aa_images`` images, in alternating rounds (9 3, 3 9, ...): median seconds and robust accuracy of each."""
    n = args.aa_images
    xb, yb = x[:n], y[:n]
    times: dict[int, list[float]] = {9: [], 3: []}
    acc: dict[int, float] = {}
    for r in range(args.aa_rounds):
        for targets in ((9, 3) if r % 2 == 0 else (3, 9)):
            options = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_restarts": 1,
                       "n_target_classes": targets}
            one = time_attack("autoattack", options, model, xb, yb, device, args.eps, repeats=1, warmup=0)
            times[targets].append(one["seconds"])
            acc[targets] = one["accuracy"]
    s9, s3 = statistics.median(times[9]), statistics.median(times[3])
    return {"images": len(xb), "rounds": args.aa_rounds, "seconds_9_targets": s9, "seconds_3_targets": s3,
            "time_ratio_3_over_9": s3 / s9, "robust_accuracy_9_targets": acc[9], "robust_accuracy_3_targets": acc[3]}


def main() -> None:
    """Parse arguments, run both benchmarks, print (and optionally save) the numbers."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--run", default=None, help="benchmark this run's model on its test images")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--eps-hard", default="0.01/255", help="PGD at an eps where no sample falls (full work)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--aa-images", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-autoattack", action="store_true")
    p.add_argument("--smoke-targets", action="store_true",
                   help="also time smoke scale's AutoAttack with APGD-T on 9 and on 3 target classes, side by side")
    p.add_argument("--aa-rounds", type=int, default=2, help="rounds of --smoke-targets (median)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, x, y = load_problem(args, device)
    out = {"device": str(device), "threads": torch.get_num_threads(), "model": args.run or args.model,
           "eps": args.eps, "pgd20": time_pgd(model, x, y, args, device, args.eps),
           "pgd20_hard": time_pgd(model, x, y, args, device, args.eps_hard)}
    for key in ("pgd20", "pgd20_hard"):
        r = out[key]
        print(f"PGD-20 at eps {r['eps']} on {r['batch']} images ({device}, {out['threads']} threads, "
              f"model {out['model']}):")
        print(f"  advbench      {r['ours_images_per_second']:9.1f} img/s  ({r['ours_seconds']:.3f} s/batch, "
              f"accuracy {100 * r['ours_accuracy']:.1f}%)")
        print(f"  torchattacks  {r['torchattacks_images_per_second']:9.1f} img/s  "
              f"({r['torchattacks_seconds']:.3f} s/batch, accuracy {100 * r['torchattacks_accuracy']:.1f}%)")
        verdict = "OK (at least as fast)" if r["speed_ratio"] >= 1.0 else "slower than torchattacks"
        print(f"  ratio torchattacks/advbench time: {r['speed_ratio']:.3f}  {verdict}")
    if not args.skip_autoattack:
        out["autoattack"] = time_autoattack(model, x, y, args, device)
        a = out["autoattack"]
        print(f"AutoAttack standard: {a['seconds_per_100_images']:.1f} s per 100 images ({a['images']} images, "
              f"clean {100 * a['clean_accuracy']:.1f}% -> robust {100 * a['robust_accuracy']:.1f}%)")
    if args.smoke_targets:
        out["smoke_autoattack"] = a = time_smoke_autoattack(model, x, y, args, device)
        print(f"smoke AutoAttack (APGD-CE + APGD-T) on {a['images']} images, median of {a['rounds']} rounds: "
              f"9 targets {a['seconds_9_targets']:.1f} s ({100 * a['robust_accuracy_9_targets']:.1f}%), "
              f"3 targets {a['seconds_3_targets']:.1f} s ({100 * a['robust_accuracy_3_targets']:.1f}%); "
              f"time ratio 3/9: {a['time_ratio_3_over_9']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
