"""What stands behind each row of a report: its runs, the commands that made them, the settings of the attacks and
the hygiene checks with what each one verifies. Read from the run folders (``config.json``, ``attacks/*.json``);
never builds a model."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from advbench import runs
from advbench.errors import UserError
from advbench.report.grids import row_labels

#: what each hygiene check verifies, in one sentence (the stored ``message`` says what it found)
CHECK_HELP = {
    "robust_le_clean": "No attack may leave more images correct than the clean model gets right.",
    "monotone_steps": "More steps or restarts of the same attack must not raise the accuracy.",
    "monotone_eps": "A larger budget eps must not raise the accuracy.",
    "large_eps": "PGD with eps = 1 (the whole image box) must fool almost every image; if not, gradients are "
                 "masked or the attack is broken.",
    "zero_gradients": "Few images may have an exactly zero input gradient (a sign of gradient masking).",
    "blackbox_vs_whitebox": "Black-box attacks must not beat the best white-box attack (else gradients mislead).",
    "autoattack_flags": "AutoAttack's own sanity flags, and Square fooling images the gradient attacks missed.",
    "eval_mode": "The evaluation must leave weights, buffers and modes unchanged, and eval outputs deterministic.",
    "input_range": "Clean and adversarial images lie in [0, 1], and each adversarial image within its eps ball.",
}


@dataclass
class SuiteInfo:
    """One stored attack result of a run."""

    suite: str
    n_eval: int
    seed: int
    command: str
    created: str
    autoattack: list[str] = field(default_factory=list)  # versions of the AutoAttack entries
    status: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunInfo:
    """One run behind a row."""

    path: str
    seed: Any
    command: str
    created: str
    suites: list[SuiteInfo] = field(default_factory=list)


def _read(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when it is missing, unreadable or not an object (the page then says less)."""
    try:
        obj = runs.read_json(path) if path.is_file() else {}
    except (OSError, ValueError, UserError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict items of a JSON list (anything else: none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _attack_command(run: str, res: dict[str, Any], record: dict[str, Any]) -> str:
    """The command that (re)computes a stored result; a model advbench did not train is evaluated from Python or
    with ``--model-module``."""
    eps = ",".join(str(t["eps"]) for t in _dicts(res.get("threats")) if t.get("eps"))
    tail = f"--suite {shlex.quote(str(res.get('suite')))} --n-eval {res.get('n_eval')}" + (f" --eps {eps}" if eps
                                                                                              else "")
    if record.get("kind") == "external":
        spec = record.get("model_module")
        return f"advbench attack --model-module {spec} --out {shlex.quote(run)} {tail}" if spec else \
            "advbench.evaluate(model, ...) from Python"
    return f"advbench attack {shlex.quote(run)} {tail}"


def _autoattack_versions(res: dict[str, Any]) -> list[str]:
    out = []
    for r in _dicts(res.get("results")):
        summary = r.get("summary") if isinstance(r.get("summary"), dict) else {}
        if summary.get("components") is not None or r.get("attack") == "autoattack":
            version = (r.get("options") if isinstance(r.get("options"), dict) else {}).get("version", "standard")
            comps = [str(c) for c in summary.get("components") or [] if isinstance(c, str)]
            out.append(f"{r.get('label')}: {version}" + (f" ({', '.join(comps)})" if comps else ""))
    return out


def run_info(run: str, suites: list[str]) -> RunInfo:
    """The run folder's command and the stored results of ``suites``."""
    record = _read(Path(run) / "config.json")
    cfg = record.get("config") if isinstance(record.get("config"), dict) else {}
    info = RunInfo(path=run, seed=cfg.get("seed"),
                   command=str(record.get("command") or "(not recorded)"), created=str(record.get("created") or ""))
    for suite in suites:
        res = _read(Path(run) / "attacks" / f"{suite}.json")
        if not res:
            continue
        checks = res.get("checks") if isinstance(res.get("checks"), dict) else {}
        n_eval = res.get("n_eval") if isinstance(res.get("n_eval"), int) else 0
        info.suites.append(SuiteInfo(suite=suite, n_eval=n_eval, seed=res.get("seed", 0),
                                     command=_attack_command(run, res, record), created=str(res.get("created", "")),
                                     autoattack=_autoattack_versions(res), status=checks.get("status"),
                                     checks=[c for c in _dicts(checks.get("checks")) if "name" in c]))
    return info


def rows_of(frame: pd.DataFrame) -> dict[str, list[RunInfo]]:
    """Row label (exactly as :func:`~advbench.report.grids.comparison_grid` prints it) -> the runs behind it."""
    out: dict[str, list[RunInfo]] = {}
    labelled = frame.assign(row=row_labels(frame))
    for run, sub in labelled.groupby("run", sort=False):
        out.setdefault(str(sub["row"].iloc[0]), []).append(
            run_info(str(run), list(dict.fromkeys(map(str, sub["suite"])))))
    return out


def caption_facts(frame: pd.DataFrame) -> list[str]:
    """n-eval, seeds, suites and AutoAttack versions of the frame: the facts a caption must state."""
    facts = []
    n = sorted({int(v) for v in frame["n"].dropna()})
    facts.append("n-eval: " + ", ".join(map(str, n)) + " (first N test images)")
    seeds = sorted({int(s) for s in frame["seed"].dropna()})
    per_row = frame.groupby("label")["run"].nunique()
    facts.append(f"seeds: {', '.join(map(str, seeds))} ({int(per_row.min())}–{int(per_row.max())} runs per row; "
                 "mean ± sample std over seeds)" if per_row.max() != per_row.min() else
                 f"seeds: {', '.join(map(str, seeds))} ({int(per_row.max())} run(s) per row; mean ± sample std)")
    facts.append("suites: " + ", ".join(sorted(set(map(str, frame["suite"])))))
    versions = sorted({v for run in dict.fromkeys(frame["run"]) for s in set(frame.loc[frame["run"] == run, "suite"])
                       for v in _autoattack_versions(_read(Path(run) / "attacks" / f"{s}.json"))})
    facts.append("AutoAttack: " + ("; ".join(versions) if versions else "not in these suites"))
    return facts
