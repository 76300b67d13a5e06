"""Cost of RAT's paper-literal Taylor terms (``taylor=paper``) against the code-faithful default, side by side.

Every variant trains its own copy of the same model on the same batch; their steps are interleaved
(code, paper, paper, ... in one round per repetition), so a change of machine load affects every ratio
alike. Printed per variant: the passes counted by :class:`PassCounter` (each forward-mode call counts as one
forward of the batch, though a jvp-of-jvp costs several), the declared ``inherent_passes``, the median step
time and its ratio to the code-faithful step, and the Taylor terms' logged values.

    python benchmarks/rat_taylor_cost.py                         # CPU, small-cnn, batch 128, TRADES base
    python benchmarks/rat_taylor_cost.py --model preact-resnet18 --device cuda --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advbench.core.devices import resolve_device
from advbench.core.passes import PassCounter
from advbench.core.seeding import seed_everything
from advbench.defenses import StepContext, build_defense
from advbench.models import build_model
from advbench.threat import ThreatModel

#: (label, RAT options): the code-faithful default first (the reference of every ratio)
VARIANTS: list[tuple[str, dict[str, object]]] = [
    ("code (default)", {}),
    ("paper, 1st, conv", {"taylor": "paper", "order": "1"}),
    ("paper, 1st+2nd, conv", {"taylor": "paper"}),
    ("paper, 1st+2nd, weights", {"taylor": "paper", "taylor_layers": "weights"}),
    ("paper, 1st+2nd, last", {"taylor": "paper", "taylor_layers": "last"}),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Parse flags, time the variants interleaved, print the table (and JSON if asked)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="attack steps")
    p.add_argument("--noise-std", type=float, default=1e-4, help="σ of u (code: 1e-4; paper: 0.01)")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    threat = ThreatModel.parse("8/255", "linf")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    runs = []
    for label, opts in VARIANTS:
        seed_everything(0)
        model = build_model(args.model, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).to(device).train()
        defense = build_defense("rat", threat, {"steps": args.steps, "noise_std": args.noise_std, **opts})
        runs.append({"label": label, "model": model, "defense": defense, "times": [],
                     "opt": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)})
    for i in range(args.warmup + args.repeats):
        ctx = StepContext(epoch=50, step=i, steps_per_epoch=1000, epochs=100, num_classes=10,
                          idx=torch.arange(args.batch, device=device))
        for r in runs:
            with PassCounter(r["model"]) as counter:
                _sync(device)
                t0 = time.perf_counter()
                logs = r["defense"].train_step(r["model"], r["opt"], x, y, ctx)
                _sync(device)
                elapsed = time.perf_counter() - t0
            if i >= args.warmup:
                r["times"].append(elapsed)
            r["counted"] = (counter.forward / args.batch, counter.backward / args.batch)
            r["logs"] = logs
    ref = statistics.median(runs[0]["times"])
    print(f"rat (TRADES base), model {args.model}, batch {args.batch}, {args.steps} attack steps, σ {args.noise_std}, "
          f"device {device}, threads {torch.get_num_threads()}, median of {args.repeats} interleaved steps")
    header = (f"{'variant':<26}{'counted f+b':>13}{'inherent f+b':>14}{'ms/step':>10}{'x code':>8}"
              f"{'first':>11}{'second':>11}")
    print(header)
    print("-" * len(header))
    rows = []
    for r in runs:
        sec = statistics.median(r["times"])
        fi, bi = r["defense"].inherent_passes
        row = {"variant": r["label"], "counted_forward": r["counted"][0], "counted_backward": r["counted"][1],
               "inherent_forward": fi, "inherent_backward": bi, "seconds": sec, "ratio": sec / ref,
               "rat_first": r["logs"].get("rat_first"), "rat_second": r["logs"].get("rat_second")}
        rows.append(row)
        second = "—" if row["rat_second"] is None else f"{row['rat_second']:.3g}"
        print(f"{row['variant']:<26}{row['counted_forward']:>6.1f}+{row['counted_backward']:<6.1f}"
              f"{fi:>7.1f}+{bi:<6.1f}{1000 * sec:>10.1f}{row['ratio']:>8.2f}{row['rat_first']:>11.3g}{second:>11}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "model": args.model, "batch": args.batch, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
