"""The evaluation loop: clean accuracy, validation PGD, and resumable attack suites.

Suites are evaluated on the first ``n_eval`` test images in order, batch by batch. After every batch
the per-sample results so far are written atomically to ``attacks/.<suite>.partial.json``; a killed
evaluation resumes from there and gives the same per-sample result as an uninterrupted one, because
every batch's randomness comes from a generator seeded by (seed, attack, eps, batch index). Attacks
with internal progress (AutoAttack) keep per-batch state files in ``attacks/.<suite>.state/``.

Every result carries hygiene checks (:mod:`advbench.engine.hygiene`): a ``checks`` block with
pass/warn/fail and the numbers behind each check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.attacks import ATTACKS, Suite, SuiteEntry, build_attack
from advbench.attacks.base import AttackContext
from advbench.attacks.pgd import pgd_perturb
from advbench.attacks.suites import DEFAULT_EPS
from advbench.config import json_safe
from advbench.engine import hygiene
from advbench.engine.common import make_generator
from advbench.engine.passes import frozen
from advbench.engine.progress import NullProgress
from advbench.engine.signals import Interrupted, StopFlag
from advbench.threat import ThreatModel


def clean_accuracy(model: nn.Module, split: Any, n: int, batch_size: int, device: torch.device) -> float:
    """Accuracy on the first ``n`` images of ``split`` (eval mode, no grad); the model's mode is restored."""
    from advbench.data import batches

    correct = 0
    with frozen(model, "eval"), torch.no_grad():
        for x, y, _ in batches(_head(split, n), batch_size, shuffle=False, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, n)


def pgd_accuracy(model: nn.Module, split: Any, n: int, batch_size: int, device: torch.device,
                 threat: ThreatModel, *, steps: int, seed: Any) -> float:
    """PGD-``steps`` accuracy (step eps/4, uniform start) on the first ``n`` images, eval mode."""
    from advbench.data import batches

    correct = 0
    with frozen(model, "eval"):
        for b, (x, y, _) in enumerate(batches(_head(split, n), batch_size, shuffle=False, device=device)):
            gen = make_generator(x.device, seed, b)
            x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=threat.default_step(), generator=gen)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / max(1, n)


def _head(split: Any, n: int) -> Any:
    return type(split)(split.x[:n], split.y[:n])


@dataclass
class EvalData:
    """Evaluation images (uint8 [N, C, H, W] in 0..255, or float in [0, 1]) and int64 labels [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


def as_eval_data(data: Any) -> EvalData:
    """Accept a split (anything with ``.x`` and ``.y``) or an ``(x, y)`` pair of tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data.x, data.y
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    return EvalData(x, y)


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images as the model sees them: uint8 -> float32 / 255 (as :func:`advbench.data.batches`), floats as given."""
    x = x.to(device)
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


@dataclass
class EvalJob:
    """What to evaluate: a suite at one or more threats on the first ``n_eval`` images.

    ``available`` names the optional resources the evaluation provides (``source_model`` for transfer
    attacks); entries whose attack needs a missing one are skipped and listed in the result.
    ``hygiene`` runs the model probe (large-eps PGD, zero gradients, determinism) for the checks.
    """

    suite: Suite
    threats: list[ThreatModel]
    n_eval: int
    batch_size: int = 256
    seed: int = 0
    source: dict[str, Any] | None = None  # what model was attacked (run, checkpoint, epoch)
    transfer_source: dict[str, Any] | None = None  # the model transfer attacks are crafted on
    hygiene: bool = True
    available: frozenset[str] = frozenset()

    def entry_threat(self, entry: SuiteEntry, threat: ThreatModel) -> ThreatModel:
        """The entry's own threat: its fixed norm/eps, else the evaluation's (a foreign norm gets its default eps)."""
        norm = entry.norm or threat.norm
        eps = entry.eps or (threat.eps_text if norm == threat.norm else DEFAULT_EPS[norm])
        return ThreatModel.parse(eps, norm)

    def all_entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """(key, suite entry, threat) for every attack at every eps, runnable or not (no duplicates)."""
        multi = len(self.threats) > 1
        out, seen = [], set()
        for threat in self.threats:
            for e in self.suite.entries:
                t = self.entry_threat(e, threat)
                key = f"{e.label}@{t.eps_text}" if multi else e.label
                if key not in seen:
                    seen.add(key)
                    out.append((key, e, t))
        return out

    def entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """The runnable entries (their attack's needs are available)."""
        return [(k, e, t) for k, e, t in self.all_entries() if not self._missing(e)]

    def skipped(self) -> list[dict[str, Any]]:
        """Entries left out because a resource is missing, with the reason."""
        return [{"key": k, "label": e.label, "attack": e.attack, "reason": f"needs {', '.join(self._missing(e))} "
                 "(pass --source RUN)"} for k, e, _ in self.all_entries() if self._missing(e)]

    def _missing(self, entry: SuiteEntry) -> list[str]:
        return [n for n in ATTACKS.get(entry.attack).needs if n not in self.available]

    def fingerprint(self) -> str:
        """Hash of everything that decides the per-sample results (resume only matches the same job)."""
        blob = json.dumps(json_safe({
            "suite": self.suite.name,
            "entries": [(e.label, e.attack, e.options, e.norm, e.eps, e.subset) for e in self.suite.entries],
            "threats": [t.to_dict() for t in self.threats], "n": self.n_eval, "bs": self.batch_size,
            "seed": self.seed, "source": self.source, "transfer_source": self.transfer_source,
            "hygiene": self.hygiene, "available": sorted(self.available)}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _max_perturbation(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> float:
    flat = (x_adv - x).flatten(1)
    if flat.shape[0] == 0:
        return 0.0
    size = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)
    return float(size.max())


def evaluate_suite(model: nn.Module, split: Any, job: EvalJob, out_file: str | Path, *,
                   device: torch.device, progress: NullProgress | None = None, stop: StopFlag | None = None,
                   batch_hook: Any = None, context: AttackContext | None = None) -> dict[str, Any]:
    """Run ``job`` on ``model`` and write the result JSON to ``out_file`` (resumable per batch).

    ``split`` is anything with ``.x``/``.y`` (uint8 or [0, 1] float images) or an ``(x, y)`` pair;
    ``context`` carries the transfer source model and the AutoAttack state hook.
    """
    progress = progress or NullProgress()
    stop = stop or StopFlag()
    out_file = Path(out_file)
    partial_file = out_file.with_name(f".{out_file.stem}.partial.json")
    state_dir = out_file.with_name(f".{out_file.stem}.state")
    fp = job.fingerprint()
    data = as_eval_data(split)
    n = min(job.n_eval, len(data))
    xs, ys = data.x[:n], data.y[:n]
    state: dict[str, Any] = {"fingerprint": fp, "done": {}}
    if partial_file.is_file():
        try:
            prev = runs.read_json(partial_file)
        except (OSError, json.JSONDecodeError):
            prev = {}
        if prev.get("fingerprint") == fp:
            state = prev
    model = model.to(device)
    if job.hygiene and "digest_before" not in state:
        state["digest_before"] = hygiene.model_digest(model)
    base = context or AttackContext()
    todo: list[tuple[str, SuiteEntry | None, ThreatModel, int]] = [("clean", None, job.threats[0], n)]
    todo += [(k, e, t, min(n, e.subset or n)) for k, e, t in job.entries()]
    bs = job.batch_size
    for key, entry, threat, n_e in todo:
        done = state["done"].setdefault(key, {})
        attack = None if entry is None else build_attack(
            entry.attack, threat, entry.options, dataclasses.replace(base, key=key, state_dir=state_dir))
        n_batches = math.ceil(n_e / bs)
        handle = progress.task(f"{key}", n_batches)
        for b in range(n_batches):
            if str(b) in done:
                progress.advance(handle, 1)
                continue
            x = to_model_input(xs[b * bs:min(n_e, (b + 1) * bs)], device)
            y = ys[b * bs:min(n_e, (b + 1) * bs)].to(device)
            t0 = time.perf_counter()
            if attack is None:
                with frozen(model, "eval"), torch.no_grad():
                    correct = model(x).argmax(1) == y
                record: dict[str, Any] = {"forward": x.shape[0], "backward": 0}
            else:
                attack.context.batch = b
                gen = make_generator(x.device, job.seed, key, threat.eps_text, b)
                res = attack(model, x, y, generator=gen)
                correct = res.correct
                record = {"forward": res.forward, "backward": res.backward, "per_sample": json_safe(res.per_sample),
                          "info": json_safe(res.info), "max_perturbation": _max_perturbation(res.x_adv, x, threat.norm),
                          "x_min": float(res.x_adv.min()), "x_max": float(res.x_adv.max())}
            record = {"correct": [int(c) for c in correct.tolist()], "seconds": time.perf_counter() - t0, **record}
            done[str(b)] = record
            runs.write_json(partial_file, state)
            progress.advance(handle, 1, images=x.shape[0])
            if batch_hook is not None:
                batch_hook(key, b)
            if stop.requested:
                progress.done(handle)
                raise Interrupted(f"evaluation stopped at {key} batch {b + 1}/{n_batches}")
        progress.done(handle)
    if job.hygiene and "probe" not in state:
        k = min(n, hygiene.PROBE_N)
        state["probe"] = hygiene.probe_model(model, to_model_input(xs[:k], device), ys[:k].to(device), bs)
        runs.write_json(partial_file, state)
    digest_after = hygiene.model_digest(model) if job.hygiene else None
    result = assemble(job, state, n, attack_descriptions={
        key: build_attack(e.attack, t, e.options).describe() for key, e, t in job.entries()},
        digest_after=digest_after)
    runs.write_json(out_file, result)
    partial_file.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    return result


def _flat(done: dict[str, Any], field: str) -> list[Any]:
    out: list[Any] = []
    for b in sorted(done, key=int):
        v = done[b][field]
        out.extend(v if isinstance(v, list) else [v])
    return out


def _per_sample(done: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for b in sorted(done, key=int):
        for name, values in (done[b].get("per_sample") or {}).items():
            out.setdefault(name, []).extend(values)
    return out


def assemble(job: EvalJob, state: dict[str, Any], n: int, attack_descriptions: dict[str, Any],
             digest_after: str | None = None) -> dict[str, Any]:
    """Build the attacks/<suite>.json record (results, worst case, checks) from the per-batch state."""
    clean = _flat(state["done"]["clean"], "correct")
    results = []
    for key, entry, threat in job.entries():
        done = state["done"][key]
        correct = _flat(done, "correct")
        m = len(correct)
        desc = attack_descriptions[key]
        per_sample = _per_sample(done)
        infos = [done[b].get("info") or {} for b in sorted(done, key=int)]
        summary = ATTACKS.get(entry.attack).summarize(per_sample, infos, correct, threat)
        rec = {
            "key": key, "label": entry.label, "attack": entry.attack, "kind": desc.get("kind", "white-box"),
            "options": desc["options"], "norm": threat.norm, "eps": threat.eps_text, "eps_float": threat.eps,
            "accuracy": sum(correct) / max(1, m), "n": m, "correct": correct,
            "seconds": sum(_flat(done, "seconds")),
            "forward_passes": sum(_flat(done, "forward")) / max(1, m),
            "backward_passes": sum(_flat(done, "backward")) / max(1, m),
            "max_perturbation": max([done[b].get("max_perturbation", 0.0) for b in done] + [0.0]),
            "x_range": [min([done[b].get("x_min", 0.0) for b in done] + [1.0]),
                        max([done[b].get("x_max", 1.0) for b in done] + [0.0])],
        }
        if entry.subset is not None:
            rec["subset"] = f"first {m} of the {n} evaluated images"
        if per_sample:
            rec["per_sample"] = per_sample
        if summary:
            rec["summary"] = json_safe(summary)
        results.append(rec)
    robust = []
    budgets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        budgets.setdefault((r["norm"], r["eps"]), []).append(r)
    for (norm, eps), members in budgets.items():
        m = min(r["n"] for r in members)
        flags = list(clean[:m])
        for r in members:
            flags = [a & b for a, b in zip(flags, r["correct"][:m], strict=True)]
        robust.append({"norm": norm, "eps": eps, "eps_float": members[0]["eps_float"],
                       "accuracy": sum(flags) / max(1, m), "n": m, "correct": flags,
                       "attacks": [r["key"] for r in members]})
    result = {
        "format": "advbench-attacks-v1",
        "suite": job.suite.name,
        "description": job.suite.description,
        "source": job.source,
        "transfer_source": job.transfer_source,
        "n_eval": n,
        "subset": "first-n",
        "batch_size": job.batch_size,
        "seed": job.seed,
        "threats": [t.to_dict() for t in job.threats],
        "clean": {"accuracy": sum(clean) / max(1, n), "n": n, "correct": clean},
        "clean_acc": sum(clean) / max(1, n),
        "results": results,
        "robust": robust,
        "skipped": job.skipped(),
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result["checks"] = hygiene.run_checks(result, state.get("probe"), state.get("digest_before"), digest_after)
    return result
