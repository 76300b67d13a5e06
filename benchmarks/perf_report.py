"""The performance report: one table of every defense's training-step cost and every attack's throughput.

Per defense (same model, batch and weights for all): step time; step time relative to standard training
(timed alternately with it, so load changes hit both alike); step time relative to the method's inherent
passes (its declared forward/backward passes priced at standard training's measured forward, backward and
optimizer-step costs: see ``step_cost.py``); images per second; peak memory of one step above what was in
use before it (CUDA: max allocated; CPU: peak resident set, glibc set to return freed blocks at once) and
its ratio to standard training's; the number of autograd graphs the method must keep alive at its peak
(:data:`INHERENT_GRAPHS`). Per attack: images per second on one batch (AutoAttack: on ``--aa-images``).

Writes a markdown file (the table and the conditions it was measured under: device, threads, torch,
load average) and a JSON file next to it.

    python benchmarks/perf_report.py --out perf/cpu.md                               # CPU, small-cnn, batch 128
    python benchmarks/perf_report.py --device cuda --model preact-resnet18 --out perf/cuda.md
    python benchmarks/perf_report.py --defenses standard,pgd-at,trades --attacks fgsm,pgd --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_cost import load_problem, time_attack, time_autoattack, time_pgd  # noqa: E402
from step_cost import (  # noqa: E402
    add_arguments,
    defense_names,
    double_backward_unit,
    make_problem,
    step_memory,
    time_defense,
    track_cpu_memory,
)

from advbench.core.devices import resolve_device  # noqa: E402
from advbench.defenses import build_defense  # noqa: E402
from advbench.threat import ThreatModel  # noqa: E402

#: Autograd graphs through the network that each method must hold at once at its peak (the backward of
#: the training loss), with its default options. A "graph" is one forward's saved activations; a
#: gradient taken with create_graph (double backprop) keeps a second, backward graph of that forward.
#: Attack iterations run with frozen weights and free their graph every step, so they add none.
INHERENT_GRAPHS: dict[str, tuple[int, str]] = {
    "standard": (1, "CE(f(x)): one forward"),
    "pgd-at": (1, "CE(f(x')) only; the K attack graphs are freed step by step"),
    "free-at": (1, "each replay: one forward at x + delta, backward gives weight and delta gradients"),
    "p-sat": (1, "as PGD-AT; the curriculum only stops samples early"),
    "h-sat": (1, "as PGD-AT; the Hessian scores use transient per-chunk graphs"),
    "dat": (1, "as PGD-AT; FOSC only stops samples early"),
    "cat": (1, "as PGD-AT with per-sample radii and soft labels"),
    "awp": (1, "proxy graph freed before the training forward at w + v (plus v, one weight-sized copy)"),
    "scorpio": (1, "clean backward (g0 + clean weight gradient) is taken at once; then f(x + v_Q) only"),
    "trades": (2, "CE(f(x)) + beta*KL(f(x) || f(x')): clean and adversarial forwards, target not detached"),
    "trades-awp": (2, "TRADES at w + v: clean and adversarial forwards (plus v)"),
    "mart": (2, "BCE(f(x')) + KL(f(x) || f(x'))*(1 - f_y(x)): clean and adversarial forwards"),
    "mma": (2, "clean CE mixed into the loss (clean forward) + the forward at the margin points"),
    "rat": (2, "TRADES base: clean and adversarial forwards (Taylor terms are closed form on their logits)"),
    "grad-reg-fd": (2, "forward order: l(x) (kept for the slope and CE) and l(x + h d)"),
    "grad-reg": (2, "f(x) and its input-gradient graph (create_graph)"),
    "foar": (2, "f(x') and its input-gradient graph (create_graph)"),
    "llr": (3, "f(x) with its input-gradient graph (grad in the loss) and f(x + delta)"),
    "cure": (4, "f(x) and f(x + h z), each with its input-gradient graph (difference of gradients)"),
    "soar": (4, "f(x') and n_z = 1 FD point f(x' + h z), each with its input-gradient graph"),
}

#: How many of a double-backprop defense's declared backward passes are double-backprop weight backwards
#: (a backward of a function of an input gradient taken with create_graph); the report prices each at the
#: measured :func:`step_cost.double_backward_unit` instead of one standard backward.
DOUBLE_BACKWARDS: dict[str, tuple[int, str]] = {
    "grad-reg": (1, "the weight backward of CE + penalty runs through the input-gradient graph"),
    "foar": (1, "as grad-reg, at the PGD1 point"),
    "cure": (2, "declared 2 backward units for the backward through both gradient graphs"),
    "soar": (2, "declared 1 + n_z units for the backward through the 1 + n_z gradient graphs"),
    "llr": (1, "the weight backward runs through the clean input-gradient graph (grad in the loss)"),
}

#: the attacks timed by default: (label, registry name, options)
ATTACK_SET: dict[str, tuple[str, dict]] = {
    "fgsm": ("fgsm", {}),
    "pgd": ("pgd", {"steps": 20, "step_size": 2 / 255}),
    "cw-inf": ("cw-inf", {"steps": 20}),
    "apgd-ce": ("apgd-ce", {}),
    "square": ("square", {"n_queries": 100}),
    "autoattack": ("autoattack", {}),
}


def _mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 2**20:.1f}"


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def defense_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Time (paired with standard) and measure the memory of every requested defense."""
    threat = ThreatModel.parse(args.eps, args.norm)
    std_mem = step_memory(build_defense("standard", threat), make_problem(args, device), device, args.batch)
    dbp = double_backward_unit(args, device)
    print(f"  one double-backprop weight backward = {dbp['unit']:.2f} standard backwards", file=sys.stderr)
    rows = []
    for name in defense_names(args.defenses):
        t0 = time.perf_counter()
        r = time_defense(name, args, device, memory=True)
        r["images_per_second"] = args.batch / r["seconds"]
        r["memory_ratio"] = (r["peak_bytes"] / std_mem["peak_bytes"]
                             if r.get("peak_bytes") is not None and std_mem["peak_bytes"] else None)
        r["inherent_graphs"], r["graphs_note"] = INHERENT_GRAPHS.get(name, (None, "not declared"))
        d = DOUBLE_BACKWARDS.get(name, (0, ""))[0]
        r["double_backwards"], r["double_backward_unit"] = d, dbp["unit"]
        r["inherent_seconds_dbp"] = r["inherent_seconds"] + d * (dbp["unit"] - 1.0) * r["standard_backward_seconds"]
        r["overhead_dbp"] = r["seconds"] / r["inherent_seconds_dbp"]
        r["bench_seconds"] = time.perf_counter() - t0
        rows.append(r)
        print(f"  {name:<12} {1000 * r['seconds']:8.1f} ms  x{r['relative_time']:.2f} standard  "
              f"x{r['overhead']:.2f} inherent  {_mb(r.get('peak_bytes'))} MB", file=sys.stderr, flush=True)
    return rows


def attack_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Images per second of every requested attack (PGD also against torchattacks on the same batch)."""
    ns = argparse.Namespace(run=args.run, model=args.model, batch=args.batch, aa_images=args.aa_images,
                            warmup=1, repeats=args.attack_repeats, eps=args.eps)
    model, x, y = load_problem(ns, device)
    xb, yb = x[:args.batch], y[:args.batch]
    rows = []
    for label in [a for a in args.attacks.split(",") if a]:
        name, options = ATTACK_SET.get(label, (label, {}))
        t0 = time.perf_counter()
        if name == "autoattack":
            a = time_autoattack(model, x, y, ns, device)
            r = {"attack": label, "images": a["images"], "seconds": a["seconds"],
                 "images_per_second": a["images"] / a["seconds"], "accuracy": a["robust_accuracy"],
                 "note": f"standard version on {a['images']} images, clean {100 * a['clean_accuracy']:.0f}%"}
        elif name == "pgd":
            p = time_pgd(model, x, y, ns, device, args.eps)
            r = {"attack": "pgd-20", "images": p["batch"], "seconds": p["ours_seconds"],
                 "images_per_second": p["ours_images_per_second"], "accuracy": p["ours_accuracy"],
                 "note": f"torchattacks PGD-20: {p['torchattacks_images_per_second']:.0f} img/s "
                         f"(x{p['speed_ratio']:.2f} slower)"}
            rows.append(r)
            h = time_pgd(model, x, y, ns, device, args.eps_hard)
            r = {"attack": f"pgd-20 @ {args.eps_hard}", "images": h["batch"], "seconds": h["ours_seconds"],
                 "images_per_second": h["ours_images_per_second"], "accuracy": h["ours_accuracy"],
                 "note": f"no sample falls: all 20 steps; torchattacks "
                         f"{h['torchattacks_images_per_second']:.0f} img/s"}
        else:
            t = time_attack(name, options, model, xb, yb, device, args.eps, repeats=args.attack_repeats)
            r = {"attack": label, "images": t["batch"], "seconds": t["seconds"],
                 "images_per_second": t["images_per_second"], "accuracy": t["accuracy"],
                 "note": ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in options.items())}
        rows.append(r)
        print(f"  {r['attack']:<12} {r['images_per_second']:8.1f} img/s ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    return rows


def render(meta: dict, defenses: list[dict], attacks: list[dict]) -> str:
    """The markdown report: conditions, then one table (defense rows, then attack rows)."""
    lines = [f"# advbench performance report ({meta['device']})", "",
             f"- model `{meta['model']}`, batch {meta['batch']}, {meta['norm']} {meta['eps']}, "
             f"{meta['repeats']} timed steps (median) after {meta['warmup']} warm-up, defenses at epoch 50 of 100",
             f"- device {meta['device_name']}, torch {meta['torch']}, {meta['threads']} threads, "
             f"{meta['cpus']} CPUs, load average {meta['load_before']} before / {meta['load_after']} after",
             f"- memory: {meta['memory_kind']} above the level before the step; "
             "x standard = ratio to standard training on the same model and batch",
             "- x inherent = step time / (F x standard forward + B x standard backward + optimizer step), F/B the "
             "method's declared passes (counted passes in brackets); x inherent (DBP) prices each "
             f"double-backprop weight backward at the measured {meta['double_backward_unit']:.2f} standard "
             "backwards; graphs = autograd graphs the method must hold at its peak",
             "",
             "| kind | name | passes F+B (counted) | ms / step | x standard | x inherent | x inherent (DBP) | "
             "images/s | peak MB | memory x standard | graphs | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in defenses:
        passes = (f"{r['inherent_forward']:g}+{r['inherent_backward']:g} "
                  f"({r['counted_forward']:.3g}+{r['counted_backward']:.3g})")
        dbp = _fmt(r["overhead_dbp"], ".2f") if r.get("double_backwards") else ""
        note = r["graphs_note"]
        counted, declared = r["counted_forward"] + r["counted_backward"], r["inherent_forward"] + r["inherent_backward"]
        if counted < 0.8 * declared:
            note += "; declared passes are an upper bound, this batch stopped early (data-dependent)"
        lines.append(f"| defense | {r['defense']} | {passes} | {1000 * r['seconds']:.1f} | "
                     f"{r['relative_time']:.2f} | {_fmt(r['overhead'], '.2f')} | {dbp} | "
                     f"{r['images_per_second']:.0f} | {_mb(r.get('peak_bytes'))} | "
                     f"{_fmt(r.get('memory_ratio'), '.2f')} | {_fmt(r.get('inherent_graphs'), 'd')} | {note} |")
    for r in attacks:
        note = "; ".join(filter(None, [r["note"], "accuracy after: {:.0f}%".format(100 * r["accuracy"])]))
        lines.append(f"| attack | {r['attack']} | — | {1000 * r['seconds']:.1f} | — | — | — | "
                     f"{r['images_per_second']:.0f} | — | — | — | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse flags, measure, write the markdown and JSON reports, print the markdown."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--attacks", default=",".join(ATTACK_SET), help="comma list of attacks ('' for none): "
                   + ", ".join(ATTACK_SET))
    p.add_argument("--attack-repeats", type=int, default=3)
    p.add_argument("--eps-hard", default="0.01/255", help="PGD eps where no sample falls (every step runs)")
    p.add_argument("--aa-images", type=int, default=100)
    p.add_argument("--run", default=None, help="time the attacks on this run's model and test images")
    p.add_argument("--out", default="perf-report.md", help="markdown output (JSON written next to it)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cpu":
        track_cpu_memory()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    print(f"defenses ({device}):", file=sys.stderr)
    defenses = defense_rows(args, device) if args.defenses else []
    print("attacks:", file=sys.stderr)
    attacks = attack_rows(args, device)
    meta = {"device": str(device), "model": args.model, "batch": args.batch, "eps": args.eps, "norm": args.norm,
            "repeats": args.repeats, "warmup": args.warmup, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(),
            "load_before": " ".join(f"{v:.1f}" for v in load_before),
            "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "memory_kind": defenses[0].get("memory_kind", "—") if defenses else "—",
            "double_backward_unit": defenses[0]["double_backward_unit"] if defenses else float("nan"),
            "seconds": time.perf_counter() - t0}
    text = render(meta, defenses, attacks)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "defenses": defenses, "attacks": attacks},
                                                   indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
