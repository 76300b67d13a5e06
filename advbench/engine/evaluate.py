"""The evaluation loop: clean accuracy, validation PGD, and resumable attack suites.

Suites are evaluated on the first ``n_eval`` test images in order, batch by batch. After every batch
the per-sample results so far are written atomically to ``attacks/.<suite>.partial.json``; a killed
evaluation resumes from there and gives the same per-sample result as an uninterrupted one, because
every batch's randomness comes from a generator seeded by (seed, attack, eps, batch index).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.attacks import Suite, build_attack
from advbench.attacks.pgd import pgd_perturb
from advbench.config import json_safe
from advbench.data import TensorSplit, batches
from advbench.engine.common import make_generator
from advbench.engine.passes import frozen
from advbench.engine.progress import NullProgress
from advbench.engine.signals import Interrupted, StopFlag
from advbench.threat import ThreatModel


def clean_accuracy(model: nn.Module, split: TensorSplit, n: int, batch_size: int, device: torch.device) -> float:
    """Accuracy on the first ``n`` images of ``split`` (eval mode, no grad); the model's mode is restored."""
    correct = 0
    with frozen(model, "eval"), torch.no_grad():
        for x, y, _ in batches(_head(split, n), batch_size, shuffle=False, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, n)


def pgd_accuracy(model: nn.Module, split: TensorSplit, n: int, batch_size: int, device: torch.device,
                 threat: ThreatModel, *, steps: int, seed: Any) -> float:
    """PGD-``steps`` accuracy (step eps/4, uniform start) on the first ``n`` images, eval mode."""
    correct = 0
    with frozen(model, "eval"):
        for b, (x, y, _) in enumerate(batches(_head(split, n), batch_size, shuffle=False, device=device)):
            gen = make_generator(x.device, seed, b)
            x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=threat.default_step(), generator=gen)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / max(1, n)


def _head(split: TensorSplit, n: int) -> TensorSplit:
    return TensorSplit(split.x[:n], split.y[:n])


@dataclass
class EvalJob:
    """What to evaluate: a suite at one or more threats on the first ``n_eval`` images."""

    suite: Suite
    threats: list[ThreatModel]
    n_eval: int
    batch_size: int = 256
    seed: int = 0
    source: dict[str, Any] | None = None  # what model was attacked (run, checkpoint, epoch)

    def entries(self) -> list[tuple[str, Any, ThreatModel]]:
        """(key, suite entry, threat) for every attack at every eps."""
        multi = len(self.threats) > 1
        out = []
        for threat in self.threats:
            for e in self.suite.entries:
                key = f"{e.label}@{threat.eps_text}" if multi else e.label
                out.append((key, e, threat))
        return out

    def fingerprint(self) -> str:
        """Hash of everything that decides the per-sample results (resume only matches the same job)."""
        blob = json.dumps(json_safe({
            "suite": self.suite.name, "entries": [(e.label, e.attack, e.options) for e in self.suite.entries],
            "threats": [t.to_dict() for t in self.threats], "n": self.n_eval, "bs": self.batch_size,
            "seed": self.seed, "source": self.source}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate_suite(model: nn.Module, split: TensorSplit, job: EvalJob, out_file: str | Path, *,
                   device: torch.device, progress: NullProgress | None = None, stop: StopFlag | None = None,
                   batch_hook: Any = None) -> dict[str, Any]:
    """Run ``job`` on ``model`` and write the result JSON to ``out_file`` (resumable per batch)."""
    progress = progress or NullProgress()
    stop = stop or StopFlag()
    out_file = Path(out_file)
    partial_file = out_file.with_name(f".{out_file.stem}.partial.json")
    fp = job.fingerprint()
    n = min(job.n_eval, len(split))
    data = _head(split, n)
    state: dict[str, Any] = {"fingerprint": fp, "done": {}}
    if partial_file.is_file():
        try:
            prev = runs.read_json(partial_file)
        except (OSError, json.JSONDecodeError):
            prev = {}
        if prev.get("fingerprint") == fp:
            state = prev
    model = model.to(device)
    todo = [("clean", None, job.threats[0])] + job.entries()
    n_batches = (n + job.batch_size - 1) // job.batch_size
    for key, entry, threat in todo:
        done = state["done"].setdefault(key, {})
        attack = None if entry is None else build_attack(entry.attack, threat, entry.options)
        handle = progress.task(f"{key}", n_batches)
        for b, (x, y, _) in enumerate(batches(data, job.batch_size, shuffle=False, device=device)):
            if str(b) in done:
                progress.advance(handle, 1)
                continue
            t0 = time.perf_counter()
            if attack is None:
                with frozen(model, "eval"), torch.no_grad():
                    correct = model(x).argmax(1) == y
                fwd, bwd = x.shape[0], 0
            else:
                gen = make_generator(x.device, job.seed, key, threat.eps_text, b)
                res = attack(model, x, y, generator=gen)
                correct, fwd, bwd = res.correct, res.forward, res.backward
            done[str(b)] = {"correct": [int(c) for c in correct.tolist()], "seconds": time.perf_counter() - t0,
                            "forward": fwd, "backward": bwd}
            runs.write_json(partial_file, state)
            progress.advance(handle, 1, images=x.shape[0])
            if batch_hook is not None:
                batch_hook(key, b)
            if stop.requested:
                progress.done(handle)
                raise Interrupted(f"evaluation stopped at {key} batch {b + 1}/{n_batches}")
        progress.done(handle)
    result = assemble(job, state, n, attack_descriptions={
        key: build_attack(e.attack, t, e.options).describe() for key, e, t in job.entries()})
    runs.write_json(out_file, result)
    partial_file.unlink(missing_ok=True)
    return result


def _flat(done: dict[str, Any], field: str) -> list[Any]:
    out: list[Any] = []
    for b in sorted(done, key=int):
        v = done[b][field]
        out.extend(v if isinstance(v, list) else [v])
    return out


def assemble(job: EvalJob, state: dict[str, Any], n: int, attack_descriptions: dict[str, Any]) -> dict[str, Any]:
    """Build the attacks/<suite>.json record from the per-batch state."""
    clean = _flat(state["done"]["clean"], "correct")
    results = []
    for key, entry, threat in job.entries():
        done = state["done"][key]
        correct = _flat(done, "correct")
        desc = attack_descriptions[key]
        results.append({
            "key": key, "label": entry.label, "attack": entry.attack, "options": desc["options"],
            "norm": threat.norm, "eps": threat.eps_text, "eps_float": threat.eps,
            "accuracy": sum(correct) / max(1, n), "n": n, "correct": correct,
            "seconds": sum(_flat(done, "seconds")),
            "forward_passes": sum(_flat(done, "forward")) / max(1, n),
            "backward_passes": sum(_flat(done, "backward")) / max(1, n),
        })
    robust = []
    for threat in job.threats:
        flags = list(clean)
        for r in results:
            if r["eps"] == threat.eps_text:
                flags = [a & b for a, b in zip(flags, r["correct"], strict=True)]
        robust.append({"norm": threat.norm, "eps": threat.eps_text, "eps_float": threat.eps,
                       "accuracy": sum(flags) / max(1, n), "n": n, "correct": flags})
    return {
        "format": "advbench-attacks-v1",
        "suite": job.suite.name,
        "description": job.suite.description,
        "source": job.source,
        "n_eval": n,
        "subset": "first-n",
        "batch_size": job.batch_size,
        "seed": job.seed,
        "threats": [t.to_dict() for t in job.threats],
        "clean": {"accuracy": sum(clean) / max(1, n), "n": n, "correct": clean},
        "clean_acc": sum(clean) / max(1, n),
        "results": results,
        "robust": robust,
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
