"""Time one training step of every defense on the same model and batch.

Prints, per defense: the forward/backward passes it inherently needs (``Defense.inherent_passes``),
the passes actually counted, the median step time, the time relative to ``standard`` and the
overhead = (time / standard time) / (inherent passes / standard passes). A lean implementation has
overhead <= 1.15 (no duplicate clean forward, no retained graph it does not use).

    python benchmarks/step_cost.py                       # CPU, small-cnn, batch 128, every defense
    python benchmarks/step_cost.py --model preact-resnet18 --device cuda --batch 128
    python benchmarks/step_cost.py --defenses standard,pgd-at,trades --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advbench.defenses import DEFENSES, StepContext, build_defense
from advbench.engine.common import resolve_device, seed_everything
from advbench.engine.passes import PassCounter
from advbench.models import build_model
from advbench.threat import ThreatModel

#: options under which a defense is timed, where its default at mid-training would time another method
#: (H-SAT's default schedule reaches lambda = 1 at epoch 50, where it is PGD-AT)
BENCH_OPTIONS: dict[str, dict[str, object]] = {
    "h-sat": {"lambda_schedule": "constant", "lam": 0.8},
    "p-sat": {"lambda_schedule": "constant", "lam": 0.8},
}


def inherent(defense) -> tuple[float, float]:
    """The defense's declared inherent (forward, backward) passes, or (nan, nan) if undeclared."""
    p = defense.inherent_passes
    return (float("nan"), float("nan")) if p is None else (float(p[0]), float(p[1]))


def time_defense(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Median wall time of ``train_step`` and counted passes for one defense."""
    seed_everything(0)
    threat = ThreatModel.parse(args.eps, args.norm)
    model = build_model(args.model, num_classes=10, in_channels=3, input_size=32, mean=(0.5,) * 3,
                        std=(0.25,) * 3).to(device)
    if args.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    defense = build_defense(name, threat, BENCH_OPTIONS.get(name))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    times, counts = [], (0.0, 0.0)
    epochs = 100
    defense.on_epoch_start(epochs // 2, model)
    model.train()
    with PassCounter(model) as counter:
        for i in range(args.warmup + args.repeats):
            ctx = StepContext(epoch=epochs // 2, step=i, steps_per_epoch=1000, epochs=epochs, num_classes=10,
                              idx=torch.arange(args.batch, device=device))
            counter.reset()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            defense.train_step(model, opt, x, y, ctx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                counts = (counter.forward / args.batch, counter.backward / args.batch)
    fwd, bwd = inherent(defense)
    return {"defense": name, "inherent_forward": fwd, "inherent_backward": bwd,
            "counted_forward": counts[0], "counted_backward": counts[1],
            "seconds": statistics.median(times)}


def main() -> None:
    """Parse flags, time every requested defense, print the table (and JSON if asked)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--norm", default="linf")
    p.add_argument("--defenses", default="all", help="comma list or 'all'")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = DEFENSES.names() if args.defenses == "all" else [DEFENSES.canonical(n) for n in args.defenses.split(",")]
    if "standard" not in names:
        names = ["standard", *names]
    rows = [time_defense(n, args, device) for n in names]
    std = next(r for r in rows if r["defense"] == "standard")
    std_passes = std["inherent_forward"] + std["inherent_backward"]
    header = (f"{'defense':<14}{'inherent f+b':>14}{'counted f+b':>14}{'ms/step':>10}{'x standard':>12}"
              f"{'overhead':>10}")
    print(f"model {args.model}, batch {args.batch}, {args.norm} {args.eps}, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        rel = r["seconds"] / std["seconds"]
        passes = r["inherent_forward"] + r["inherent_backward"]
        r["relative_time"] = rel
        r["overhead"] = rel / (passes / std_passes)
        print(f"{r['defense']:<14}{r['inherent_forward']:>6.1f}+{r['inherent_backward']:<7.1f}"
              f"{r['counted_forward']:>6.1f}+{r['counted_backward']:<7.1f}{1000 * r['seconds']:>10.1f}"
              f"{rel:>12.2f}{r['overhead']:>10.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "model": args.model, "batch": args.batch, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
