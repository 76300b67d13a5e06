"""Time one training step of every defense on the same model and batch.

Prints, per defense: the forward/backward passes it inherently needs (``Defense.inherent_passes``),
the passes actually counted, the median step time, the time relative to ``standard`` and the
overhead = step time / inherent cost, where the inherent cost is the declared passes priced at the
measured cost of standard training's own passes (F × forward + B × backward + one optimizer step). A
lean implementation has overhead <= 1.15 (no duplicate clean forward, no retained graph it does not use).

Standard-training steps are timed alternately with each defense's steps (paired), so that a change of
machine load during the run affects both sides of every ratio alike.

    python benchmarks/step_cost.py                       # CPU, small-cnn, batch 128, every defense
    python benchmarks/step_cost.py --model preact-resnet18 --device cuda --batch 128
    python benchmarks/step_cost.py --defenses standard,pgd-at,trades --json out.json

``benchmarks/perf_report.py`` builds on these functions (adds peak memory and attack throughput).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from advbench.core.devices import resolve_device
from advbench.core.memory import PeakMemory
from advbench.core.passes import PassCounter
from advbench.core.seeding import seed_everything
from advbench.defenses import DEFENSES, StepContext, build_defense
from advbench.models import build_model
from advbench.threat import ThreatModel

#: options under which a defense is timed, where its default at mid-training would time another method
#: (H-SAT's default schedule reaches lambda = 1 at epoch 50, where it is PGD-AT)
BENCH_OPTIONS: dict[str, dict[str, object]] = {
    "h-sat": {"lambda_schedule": "constant", "lam": 0.8},
    "p-sat": {"lambda_schedule": "constant", "lam": 0.8},
}
EPOCHS = 100  # defenses are timed at mid-training (epoch 50): AWP and RAT warm-ups are over


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by the step benchmarks (model, batch, threat, device, repetitions)."""
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


def defense_names(spec: str) -> list[str]:
    """Canonical defense names from a comma list (or ``all``), standard first."""
    names = DEFENSES.names() if spec == "all" else [DEFENSES.canonical(n) for n in spec.split(",")]
    return ["standard", *[n for n in names if n != "standard"]]


def inherent(defense) -> tuple[float, float]:
    """The defense's declared inherent (forward, backward) passes, or (nan, nan) if undeclared."""
    p = defense.inherent_passes
    return (float("nan"), float("nan")) if p is None else (float(p[0]), float(p[1]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Problem:
    """A model, its optimizer and one fixed batch (every defense sees the same ones)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor


def make_problem(args: argparse.Namespace, device: torch.device) -> Problem:
    """A fresh model (seed 0, so every defense starts from the same weights), SGD and a random batch."""
    seed_everything(0)
    model = build_model(args.model, num_classes=10, in_channels=3, input_size=32, mean=(0.5,) * 3,
                        std=(0.25,) * 3).to(device)
    if args.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    model.train()
    return Problem(model, opt, x, y)


def _context(i: int, batch: int, device: torch.device) -> StepContext:
    return StepContext(epoch=EPOCHS // 2, step=i, steps_per_epoch=1000, epochs=EPOCHS, num_classes=10,
                       idx=torch.arange(batch, device=device))


def standard_split(pb: Problem, device: torch.device) -> tuple[float, float, float]:
    """One standard-training step timed in parts: (forward + loss, backward, zero_grad + optimizer step)."""
    _sync(device)
    t0 = time.perf_counter()
    loss = F.cross_entropy(pb.model(pb.x), pb.y)
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    pb.opt.step()
    pb.opt.zero_grad(set_to_none=True)
    _sync(device)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def time_defense(name: str, args: argparse.Namespace, device: torch.device, *, memory: bool = False) -> dict:
    """Median wall time of ``train_step``, counted passes, and (``memory``) the peak memory of one step.

    Standard-training steps on their own copy of the model alternate with the defense's steps; their
    medians (whole step and forward / backward / optimizer parts) are returned with the row, so each
    ratio is taken under the same machine load.
    """
    threat = ThreatModel.parse(args.eps, args.norm)
    pb = make_problem(args, device)
    ref = make_problem(args, device)
    defense = build_defense(name, threat, BENCH_OPTIONS.get(name))
    defense.on_epoch_start(EPOCHS // 2, pb.model)
    times, parts, counts = [], [], (0.0, 0.0)
    with PassCounter(pb.model) as counter:
        for i in range(args.warmup + args.repeats):
            parts_i = standard_split(ref, device)
            counter.reset()
            _sync(device)
            t0 = time.perf_counter()
            defense.train_step(pb.model, pb.opt, pb.x, pb.y, _context(i, args.batch, device))
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                parts.append(parts_i)
                counts = (counter.forward / args.batch, counter.backward / args.batch)
    fwd, bwd = inherent(defense)
    row = {"defense": name, "inherent_forward": fwd, "inherent_backward": bwd,
           "counted_forward": counts[0], "counted_backward": counts[1], "seconds": statistics.median(times),
           "standard_seconds": statistics.median(sum(p) for p in parts),
           "standard_forward_seconds": statistics.median(p[0] for p in parts),
           "standard_backward_seconds": statistics.median(p[1] for p in parts),
           "standard_optimizer_seconds": statistics.median(p[2] for p in parts)}
    row["inherent_seconds"] = (fwd * row["standard_forward_seconds"] + bwd * row["standard_backward_seconds"]
                               + row["standard_optimizer_seconds"])
    row["relative_time"] = row["seconds"] / row["standard_seconds"]
    row["overhead"] = row["seconds"] / row["inherent_seconds"]
    if memory:
        del ref
        row.update(step_memory(defense, pb, device, args.batch))
    return row


def step_memory(defense, pb: Problem, device: torch.device, batch: int) -> dict[str, Any]:
    """Peak memory of one ``train_step`` above what was in use before it (after one unmeasured step, so
    the optimizer state and the gradients of the previous step already exist, as in training)."""
    defense.on_epoch_start(EPOCHS // 2, pb.model)
    defense.train_step(pb.model, pb.opt, pb.x, pb.y, _context(0, batch, device))
    gc.collect()
    with PeakMemory(device) as pm:
        defense.train_step(pb.model, pb.opt, pb.x, pb.y, _context(1, batch, device))
    return {"peak_bytes": pm.extra_bytes, "memory_kind": pm.kind}


def double_backward_unit(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """The cost of one double-backprop weight backward in standard weight-backward units, on the benchmark
    model and batch: the backward of a penalty on ∇ₓℓ (taken with create_graph) to the weights, which runs
    back through the input-gradient graph and the forward graph. Declared passes count it as one backward;
    double-backprop defenses are priced with this unit in the perf report. Timed alternately with a
    standard backward."""
    pb = make_problem(args, device)
    plain, double = [], []
    for i in range(args.warmup + args.repeats):
        loss = F.cross_entropy(pb.model(pb.x), pb.y)
        _sync(device)
        t0 = time.perf_counter()
        loss.backward()
        _sync(device)
        t1 = time.perf_counter()
        pb.model.zero_grad(set_to_none=True)
        xr = pb.x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(pb.model(xr), pb.y, reduction="sum"), xr, create_graph=True)
        penalty = g.pow(2).sum()
        _sync(device)
        t2 = time.perf_counter()
        penalty.backward()
        _sync(device)
        t3 = time.perf_counter()
        pb.model.zero_grad(set_to_none=True)
        if i >= args.warmup:
            plain.append(t1 - t0)
            double.append(t3 - t2)
    b, d = statistics.median(plain), statistics.median(double)
    return {"standard_backward_seconds": b, "double_backward_seconds": d, "unit": d / b}


def track_cpu_memory() -> bool:
    """Make the process's resident set follow the live tensors (glibc: every block >= 64 KiB is its own
    mapping, returned to the kernel when freed), so that CPU peak-RSS differences measure what a step
    allocates. False where this is not glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 64 * 1024))
    except (OSError, AttributeError):
        return False


def main() -> None:
    """Parse flags, time every requested defense, print the table (and JSON if asked)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [time_defense(n, args, device) for n in defense_names(args.defenses)]
    header = (f"{'defense':<14}{'inherent f+b':>14}{'counted f+b':>14}{'ms/step':>10}{'x standard':>12}"
              f"{'overhead':>10}")
    print(f"model {args.model}, batch {args.batch}, {args.norm} {args.eps}, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['defense']:<14}{r['inherent_forward']:>6.1f}+{r['inherent_backward']:<7.1f}"
              f"{r['counted_forward']:>6.1f}+{r['counted_backward']:<7.1f}{1000 * r['seconds']:>10.1f}"
              f"{r['relative_time']:>12.2f}{r['overhead']:>10.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "model": args.model, "batch": args.batch, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
