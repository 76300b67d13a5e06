"""From per-batch records to the result JSON (``attacks/<suite>.json``, format ``advbench-attacks-v1``).

A batch's record is what the evaluation loop saves after each batch (``correct`` flags, passes, seconds,
and for an attack its per-sample values, info, perturbation size and image range); :func:`assemble`
concatenates them in batch order into one result per attack, the worst case per budget (an image is
robust only if clean-correct and correct under every attack of that budget) and the hygiene checks.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from advbench import runs
from advbench.attacks import ATTACKS, AttackResult, SuiteEntry
from advbench.config import json_safe
from advbench.engine import hygiene
from advbench.engine.job import EvalJob
from advbench.threat import ThreatModel


def max_perturbation(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> float:
    """The largest perturbation of a batch in its norm (0 for an empty batch)."""
    flat = (x_adv - x).flatten(1)
    if flat.shape[0] == 0:
        return 0.0
    size = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)
    return float(size.max())


def attack_batch_record(res: AttackResult, x: torch.Tensor, norm: str) -> dict[str, Any]:
    """What one attacked batch adds to its record besides ``correct`` and ``seconds`` (JSON-safe)."""
    return {"forward": res.forward, "backward": res.backward, "per_sample": json_safe(res.per_sample),
            "info": json_safe(res.info), "max_perturbation": max_perturbation(res.x_adv, x, norm),
            "x_min": float(res.x_adv.min()), "x_max": float(res.x_adv.max())}


def _flat(done: dict[str, Any], field: str) -> list[Any]:
    """One field of every batch record, concatenated in batch order."""
    out: list[Any] = []
    for b in sorted(done, key=int):
        v = done[b][field]
        out.extend(v if isinstance(v, list) else [v])
    return out


def _per_sample(done: dict[str, Any]) -> dict[str, list[Any]]:
    """The attack's per-sample values (name -> one value per image), concatenated in batch order."""
    out: dict[str, list[Any]] = {}
    for b in sorted(done, key=int):
        for name, values in (done[b].get("per_sample") or {}).items():
            out.setdefault(name, []).extend(values)
    return out


def _attack_result(key: str, entry: SuiteEntry, threat: ThreatModel, done: dict[str, Any], desc: dict[str, Any],
                   n: int) -> dict[str, Any]:
    """One entry of ``results``: an attack's accuracy, per-image flags, cost and perturbation range."""
    correct = _flat(done, "correct")
    m = len(correct)
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
    return rec


def _worst_case(results: list[dict[str, Any]], clean: list[int]) -> list[dict[str, Any]]:
    """``robust``: per (norm, eps) budget, the images that are clean-correct and survive every attack."""
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
    return robust


def assemble(job: EvalJob, state: dict[str, Any], n: int, attack_descriptions: dict[str, Any],
             digest_after: str | None = None, world_size: int = 1) -> dict[str, Any]:
    """Build the attacks/<suite>.json record (results, worst case, checks) from the per-batch state."""
    clean = _flat(state["done"]["clean"], "correct")
    results = [_attack_result(key, entry, threat, state["done"][key], attack_descriptions[key], n)
               for key, entry, threat in job.entries()]
    result = {
        "format": "advbench-attacks-v1",
        "suite": job.suite.name,
        "description": job.suite.description,
        "source": job.source,
        "transfer_source": job.transfer_source,
        "identity": job.identity,
        "n_eval": n,
        "subset": "first-n",
        "batch_size": job.batch_size,
        "world_size": world_size,
        "seed": job.seed,
        "threats": [t.to_dict() for t in job.threats],
        "clean": {"accuracy": sum(clean) / max(1, n), "n": n, "correct": clean},
        "clean_acc": sum(clean) / max(1, n),
        "results": results,
        "robust": _worst_case(results, clean),
        "skipped": job.skipped(),
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result["checks"] = hygiene.run_checks(result, state.get("probe"), state.get("digest_before"), digest_after)
    return result
