"""Run folders written by hand (config.json, metrics.jsonl, attacks/<suite>.json) in the documented format, for
tests of what reads them (reports, plots, exports) without training anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs


def write_run(root: Path, name: str, defense: str, *, options: dict[str, Any] | None = None, seed: int = 0,
              clean: float = 0.9, attacks: dict[str, float] | None = None, eps: str = "8/255",
              eps_list: list[str] | None = None, checks: dict[str, Any] | None = None, suite: str = "pgd-lite",
              metrics: list[dict[str, Any]] | None = None, command: str = "advbench train --defense x",
              autoattack: bool = False, n_eval: int = 100, model: str = "small-cnn",
              dataset: str = "synthetic") -> Path:
    """One run with one stored result: ``attacks`` maps labels to accuracies at every eps in ``eps_list``
    (default: the run's eps), ``autoattack`` makes the only entry an AutoAttack standard result."""
    run = root / name
    (run / "attacks").mkdir(parents=True, exist_ok=True)
    runs.write_json(run / "config.json", {
        "format": "advbench-run-v1", "command": command, "created": "2026-01-02T03:04:05+0000", "device": "cpu",
        "config": {"defense": defense, "dataset": dataset, "model": model, "norm": "linf", "eps": eps, "seed": seed,
                   "epochs": len(metrics or []) or 2, "defense_options": options or {}}})
    for m in metrics if metrics is not None else [{"epoch": 0, "loss": 1.0}]:
        runs.append_jsonl(run / "metrics.jsonl", m)
    attacks = attacks if attacks is not None else {"PGD-20": clean / 2}
    results, robust = [], []
    for e in eps_list or [eps]:
        for i, (label, acc) in enumerate(attacks.items()):
            entry: dict[str, Any] = {"key": label, "label": label, "attack": "pgd", "norm": "linf", "eps": e,
                                     "accuracy": acc, "seconds": 1.0 + i, "n": n_eval, "options": {"steps": 20}}
            if autoattack:
                entry.update(attack="autoattack", options={"version": "standard"},
                             summary={"components": ["apgd-ce", "apgd-t", "fab-t", "square"]})
            results.append(entry)
        robust.append({"norm": "linf", "eps": e, "accuracy": min(attacks.values()), "n": n_eval})
    runs.write_json(run / "attacks" / f"{suite}.json", {
        "format": "advbench-attacks-v1", "suite": suite, "n_eval": n_eval, "seed": 0,
        "threats": [{"norm": "linf", "eps": e} for e in eps_list or [eps]],
        "clean": {"accuracy": clean, "n": n_eval}, "results": results, "robust": robust,
        "versions": {"advbench": "0.1.0", "pyautoattack": "0.2.0"}, "created": "2026-01-02T04:05:06+0000",
        "checks": checks or {"status": "pass", "flagged": [], "checks": [
            {"name": "robust_le_clean", "status": "pass", "message": "every attack's accuracy is at most clean"},
            {"name": "large_eps", "status": "pass", "message": "accuracy 0.0% at eps=1"}]}})
    return run
