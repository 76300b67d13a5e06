"""A run's result as a RobustBench leaderboard entry: ``model_info/<dataset>/<threat>/<name>.json``.

The fields are those of RobustBench's own files: ``link``, ``name`` (the paper's title), ``authors``,
``additional_data``, ``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps`` (``"8/255"``;
an L2 budget as a decimal, ``"0.5"``), ``clean_acc`` and ``autoattack_acc`` (percent as strings with two
decimals), ``reported`` (the paper's own number, a string; empty when unknown), ``footnote`` and ``unreliable``
(true when advbench's hygiene checks flagged the result). The accuracies come from a stored AutoAttack
(standard version) result, the only attack RobustBench ranks by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs
from advbench.errors import UserError

FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue", "architecture",
          "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable")
_THREATS = {"linf": "Linf", "l2": "L2"}


def _autoattack_results(run: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(stored result, its AutoAttack standard entry) of every result file of ``run``."""
    found = []
    for f in sorted((run / "attacks").glob("*.json")) if (run / "attacks").is_dir() else []:
        try:
            res = runs.read_json(f)
        except (OSError, ValueError, UserError):
            continue
        results = res.get("results") if isinstance(res, dict) else None
        for r in results if isinstance(results, list) else []:
            if not isinstance(r, dict) or r.get("attack") != "autoattack":
                continue
            opts = r.get("options") if isinstance(r.get("options"), dict) else {}
            if opts.get("version", "standard") == "standard":
                found.append((res, r))
    return found


def _pick(run: Path, eps: str | None, train_eps: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AutoAttack entry at ``eps`` (default: the run's training eps; else the only one), most images first."""
    found = _autoattack_results(run)
    if not found:
        raise UserError(f"{run} has no AutoAttack (standard) result; RobustBench ranks by it: run 'advbench attack "
                        f"{run} --suite autoattack --n-eval 10000' first")
    want = eps or train_eps
    at = [(res, r) for res, r in found if r.get("eps") == want] or ([] if eps else found)
    if not at:
        have = ", ".join(sorted({str(r.get("eps")) for _, r in found}))
        raise UserError(f"{run} has no AutoAttack result at eps {want} (it has {have}); pass one of those")
    return max(at, key=lambda pair: int(pair[1].get("n") or pair[0].get("n_eval") or 0))


def robustbench_entry(run: str | Path, *, eps: str | None = None, name: str = "", link: str = "", authors: str = "",
                      venue: str = "", reported: str = "", architecture: str | None = None,
                      additional_data: bool = False, footnote: str | None = None) -> tuple[Path, dict[str, Any]]:
    """(relative path ``model_info/<dataset>/<threat>/``, entry) of ``run``'s AutoAttack result.

    ``name`` is the paper's title, ``link``/``authors``/``venue``/``reported`` describe it (RobustBench shows
    them); ``architecture`` defaults to the run's model; the footnote says how advbench evaluated it."""
    run = Path(run)
    record = runs.read_json(run / "config.json")
    cfg = record.get("config") or {}
    res, entry = _pick(run, eps, str(cfg.get("eps")))
    norm = str(entry.get("norm", cfg.get("norm", "linf")))
    threat = _THREATS.get(norm, norm)
    # RobustBench writes an Linf budget as a fraction ("8/255") and an L2 one as a decimal ("0.5")
    eps_text = str(entry["eps"]) if norm == "linf" else f"{float(entry.get('eps_float', entry['eps'])):g}"
    checks = res.get("checks") or {}
    n = int(entry.get("n") or res.get("n_eval") or 0)
    versions = res.get("versions") or {}
    note = (f"Evaluated with advbench {versions.get('advbench', '?')}: AutoAttack standard (pyautoattack "
            f"{versions.get('pyautoattack', '?')}, seed {(entry.get('options') or {}).get('seed', res.get('seed', 0))})"
            f" on the first {n} test images")
    if checks.get("flagged"):
        note += f"; advbench checks flagged: {', '.join(checks['flagged'])}"
    body = {"link": link, "name": name or f"{cfg.get('defense', 'model')} trained with advbench", "authors": authors,
            "additional_data": bool(additional_data), "number_forward_passes": 1, "dataset": str(cfg.get("dataset")),
            "venue": venue, "architecture": architecture or str(cfg.get("model")), "eps": eps_text,
            "clean_acc": f"{100 * float(res['clean']['accuracy']):.2f}", "reported": reported,
            "autoattack_acc": f"{100 * float(entry['accuracy']):.2f}",
            "footnote": footnote if footnote is not None else note,
            "unreliable": checks.get("status") not in (None, "pass")}
    return Path("model_info") / body["dataset"] / threat, {k: body[k] for k in FIELDS}
