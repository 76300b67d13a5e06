"""From per-batch records to the result JSON (``attacks/<suite>.json``, format ``advbench-attacks-v1``).

A batch's record is what the evaluation loop saves after each batch (``correct`` flags, passes, seconds,
and for an attack its per-sample values, info, perturbation size and image range); :func:`assemble`
concatenates them in batch order into one result per attack, the worst case per budget (an image is
robust only if clean-correct and correct under every attack of that budget), the checks and a verdict
per number. With ``--adapt`` the adaptive attacks are marked (``adaptive``), left out of ``robust`` (the
unadapted worst case) and counted in ``adapted`` (the worst case with them).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from advbench import runs
from advbench.attacks import ATTACKS, AttackResult, SuiteEntry
from advbench.config import json_safe
from advbench.engine import checklist
from advbench.engine.adapt import masking_kinds
from advbench.engine.job import EvalJob
from advbench.engine.verdict import attach_verdicts
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
    """Per (norm, eps) budget, the images that are clean-correct and survive every attack of ``results``."""
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
    for r, (_key, entry, _threat) in zip(results, job.entries(), strict=True):
        if any(entry is e for e in job.adaptive):
            r["adaptive"] = True
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
        "robust": _worst_case([r for r in results if not r.get("adaptive")], clean),
        "skipped": job.skipped(),
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "cpu_threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    top5 = _top5(state["done"]["clean"])
    if top5 is not None:
        result["clean"].update({"top5_accuracy": sum(top5) / max(1, n), "top5_correct": top5})
        result["clean_top5_acc"] = sum(top5) / max(1, n)
    if job.adapt:
        kinds = masking_kinds(state.get("probe"))
        result["adapted"] = _adapted(result, clean, kinds)
        result["adapt"] = {"masking": kinds, "entries": [e.label for e in job.adaptive],
                           "clean_verdict_samples": state.get("clean_verdict_samples", 1),
                           "large_eps": list((state.get("adapted_large_eps") or {}).values())}
    result["checks"] = checklist.run_all_checks(result, state.get("probe"), state.get("digest_before"), digest_after,
                                                result.get("adapt"))
    attach_verdicts(result)
    return result


def _top5(done: dict[str, Any]) -> list[int] | None:
    """Per image, whether its label is among the model's 5 largest logits, when every clean batch recorded it
    (models with more than 5 classes and a deterministic clean pass); None otherwise."""
    if not done or not all("top5" in rec for rec in done.values()):
        return None
    return _flat(done, "top5")


def _adapted(result: dict[str, Any], clean: list[int], kinds: dict[str, str]) -> list[dict[str, Any]]:
    """``adapted``: the worst case per budget over every attack, the adaptive ones included, beside the
    unadapted worst case (``robust``) of the same budget. For a randomized model only attacks judged by the
    deterministic EOT verdict count (an AND of single noisy passes would mix in a different classifier)."""
    members = result["results"]
    if "randomized" in kinds:
        members = [r for r in members if "randomized" in checklist.suited(r)]
    out = _worst_case(members, clean)
    unadapted = {(rb["norm"], rb["eps"]): rb["accuracy"] for rb in result["robust"]}
    for a in out:
        a["unadapted_accuracy"] = unadapted.get((a["norm"], a["eps"]))
    return out
