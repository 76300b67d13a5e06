"""Images per second of a smoke grid's training and attacks, this checkout beside another one, in one run.

A smoke grid (``advbench reproduce ... --scale smoke``) trains a few defenses for an epoch on small data and
attacks each with PGD-20; that is what most users run first. This script runs the same work through the
public API (``advbench.api.train`` / ``advbench.api.attack``) in a fresh process per round, for this
checkout and, with ``--compare DIR``, for another checkout (e.g. a ``git worktree`` of ``main``), in
interleaved rounds (A B A B ...), so that a change of machine load hits both sides alike. It prints the
median images/s of each side and their ratio (with min/max over rounds).

    python benchmarks/smoke_speed.py                               # this checkout only
    git worktree add /tmp/advbench-main main
    python benchmarks/smoke_speed.py --compare /tmp/advbench-main --rounds 3 --threads 1

Training images/s = images trained / the run's recorded training seconds (metrics.jsonl ``train_seconds``,
validation excluded); attack images/s = images evaluated / the attack's recorded seconds (clean pass
excluded). No timed tests: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: the child: train each defense for one epoch, attack it with PGD-20, print images/s as JSON
CHILD = r"""
import json, sys, tempfile, torch
from advbench import api
spec = json.loads(sys.argv[1])
if spec["threads"]:
    torch.set_num_threads(spec["threads"])
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for defense in spec["defenses"]:
        run_dir, _ = api.train(out=tmp, name=defense, dataset="synthetic", model=spec["model"], defense=defense,
                               epochs=1, batch_size=spec["batch"], n_train=spec["n_train"], device="cpu", quiet=True,
                               fresh=True, settings=["val_n=0", "data.n_train=%d" % (spec["n_train"] + 64),
                                                     "data.n_test=%d" % spec["n_eval"]])
        metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train_s = sum(m["train_seconds"] for m in metrics)
        result = api.attack(run_dir, attack="pgd", attack_options=["steps=20"], n_eval=spec["n_eval"],
                            batch_size=spec["batch"], device="cpu", quiet=True)
        res = result if isinstance(result, dict) and "results" in result else json.loads(
            (run_dir / "attacks" / "adhoc-pgd.json").read_text())
        attack_s = sum(r["seconds"] for r in res["results"])
        out[defense] = {"train": spec["n_train"] / train_s, "attack": spec["n_eval"] / attack_s}
print("RESULT " + json.dumps(out))
"""


def run_side(checkout: Path, spec: dict) -> dict:
    """One round of the workload with ``checkout``'s advbench (a fresh process)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(spec["threads"] or "")}
    if not spec["threads"]:
        env.pop("OMP_NUM_THREADS")
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, cwd=cwd,
                              capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{checkout}: the workload failed:\n{proc.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", type=Path, help="another checkout to run beside this one (the 'before' side)")
    p.add_argument("--defenses", default="standard,pgd-at,trades,trades-awp")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    p.add_argument("--json", type=Path, help="also write the raw rounds here")
    args = p.parse_args()
    spec = {"defenses": args.defenses.split(","), "model": args.model, "n_train": args.n_train,
            "n_eval": args.n_eval, "batch": args.batch, "threads": args.threads}
    sides = {"after": HERE} | ({"before": args.compare.resolve()} if args.compare else {})
    rounds: dict[str, list[dict]] = {s: [] for s in sides}
    run_side(HERE, {**spec, "defenses": spec["defenses"][:1], "n_train": 128, "n_eval": 64})  # warm-up
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate who goes first
        for side in order:
            rounds[side].append(run_side(sides[side], spec))
    print(f"smoke workload: {args.model}, synthetic 32x32, 1 epoch on {args.n_train} images, PGD-20 on "
          f"{args.n_eval}, batch {args.batch}, threads {args.threads or 'default'}, {args.rounds} interleaved rounds")
    head = "| defense | what | " + " | ".join(f"{s} img/s" for s in sides) + (" | after/before (min–max) |"
                                                                                if "before" in sides else " |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for d in spec["defenses"]:
        for what in ("train", "attack"):
            med = {s: statistics.median(x[d][what] for x in rounds[s]) for s in sides}
            cells = " | ".join(f"{med[s]:.0f}" for s in sides)
            if "before" in sides:
                ratios = [a[d][what] / b[d][what] for a, b in zip(rounds["after"], rounds["before"], strict=True)]
                cells += f" | {med['after'] / med['before']:.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
            print(f"| {d} | {what} | {cells} |")
    if args.json:
        args.json.write_text(json.dumps({"spec": spec, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
