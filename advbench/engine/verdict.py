"""Per-result verdicts: is this number a trustworthy upper bound on robust accuracy, or likely inflated, and why.

The ``checks`` block describes the model and the suite; a verdict judges one number. A result's verdict is

- ``not-meaningful`` when the model is at chance level (the ``chance_level`` check fails);
- ``likely-inflated`` when the probe found a kind of gradient masking the attack is not suited to
  (:meth:`~advbench.attacks.base.Attack.suited_to`), or when a check points at this attack: its accuracy
  rises with more steps, a black-box attack or FGSM beats it, an attack with twice its steps is clearly
  lower (not converged), its own adaptation fails the eps = 1 test, another white-box attack beats it;
- ``trustworthy`` otherwise.

A worst case (``robust``, ``adapted``) is trustworthy when one of the attacks it combines is (it is at most
that attack's accuracy, image by image). Each verdict has a plain-words ``summary`` (the report's column),
the ``reasons`` (each ``why`` with its ``remedy``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from advbench.engine import hygiene
from advbench.engine.adapt import masking_kinds
from advbench.engine.checklist import suited

TRUSTWORTHY, INFLATED, MEANINGLESS = "trustworthy", "likely-inflated", "not-meaningful"

REMEDY = {
    "randomized": "run with --adapt (EOT: gradients and verdict averaged over draws)",
    "non-differentiable": "run with --adapt (BPDA through the gradient-breaking step)",
    "saturated": "run with --adapt (PGD on the scale-free DLR loss)",
    "unexplained": "run with --adapt, and a gradient-free suite (--suite blackbox)",
}

#: the masking kinds in the few words of a report column
SHORT = {
    "randomized": "randomized model, not attacked with EOT",
    "non-differentiable": "gradients masked (zero input gradients)",
    "saturated": "gradients masked (saturated logits)",
    "unexplained": "PGD fails even at eps=1 (masking of unknown kind)",
}

Issues = dict[str, list[tuple[str, str]]]


def _acc(r: dict[str, Any], m: int) -> float:
    return sum(r["correct"][:m]) / max(1, m)


def _pass_tol(n: int) -> float:
    return hygiene._tolerances(n)[0] + 1e-12


def _step_issues(checks: dict[str, Any], issues: Issues) -> None:
    for p in (checks.get("monotone_steps") or {}).get("values", {}).get("pairs", []):
        if p["increase"] > _pass_tol(p["n"]):
            issues[p["stronger"]].append((f"accuracy rises with more steps ({p['weaker']} is "
                                          f"{100 * p['increase']:.1f} points lower)",
                                          "the attack or its verdict is unstable; for a randomized model run with "
                                          "--adapt"))
    for p in (checks.get("iterative_vs_single_step") or {}).get("values", {}).get("pairs", []):
        if p["increase"] > _pass_tol(p["n"]):
            issues[p["stronger"]].append((f"weaker than single-step {p['weaker']} by {100 * p['increase']:.1f} points",
                                          "gradients are likely masked: run with --adapt"))
    conv = (checks.get("converged") or {}).get("values", {})
    for row in conv.get("pairs", []):
        if row["drop"] > hygiene._tolerances(row["n"])[1] + 1e-12:
            issues[row["fewer_steps"]].append((f"not converged: {row['more_steps']} is {100 * row['drop']:.1f} "
                                               "points lower", "use the attack with more steps"))


def _attack_issues(result: dict[str, Any], checks: dict[str, Any], issues: Issues) -> None:
    for row in (checks.get("blackbox_vs_whitebox") or {}).get("values", {}).get("budgets", []):
        m, best = row["n"], row["best_black_box_accuracy"]
        for r in result["results"]:
            if (r["norm"], r["eps"]) == (row["norm"], row["eps"]) and r.get("kind", "white-box") == "white-box" \
                    and _acc(r, m) - best > _pass_tol(m):
                issues[r["key"]].append((f"the black-box {row['best_black_box']} is {100 * (_acc(r, m) - best):.1f} "
                                         "points lower (gradients likely masked)", "run with --adapt"))
    for row in (checks.get("adaptive_large_eps") or {}).get("values", {}).get("attacks", []):
        if round(row["accuracy"] * row["n"]) > max(1, 0.02 * row["n"]):
            for r in result["results"]:
                if r["label"] == row["label"]:
                    issues[r["key"]].append((f"its adaptation leaves {100 * row['accuracy']:.0f}% correct at eps=1",
                                             "name the gradient-breaking submodule (--attack adaptive-pgd --set "
                                             "bpda=PATH) or try --suite blackbox"))
    for p in (checks.get("adaptive_vs_others") or {}).get("values", {}).get("pairs", []):
        if p["increase"] > _pass_tol(p["n"]):
            issues[p["stronger"]].append((f"weaker than {p['weaker']} by {100 * p['increase']:.1f} points",
                                          "the adaptation misses the masking; check its settings"))


def result_issues(result: dict[str, Any]) -> Issues:
    """Per result key, (reason, remedy) pairs the checks' numbers point at."""
    checks = {c["name"]: c for c in (result.get("checks") or {}).get("checks", [])}
    issues: Issues = defaultdict(list)
    _step_issues(checks, issues)
    _attack_issues(result, checks, issues)
    return issues


def _make(status: str, reasons: list[dict[str, str]], kinds: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A verdict: status, a one-line summary in plain words (short reason; short remedy), every reason."""
    if status == TRUSTWORTHY:
        summary = "trustworthy"
    else:
        first = reasons[0]
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        head = "not meaningful" if status == MEANINGLESS else "likely inflated"
        summary = f"{head}: {first['short']}{more}; {first['remedy'].split(' (')[0]}"
    return {"status": status, "summary": summary, "reasons": reasons, "masking": sorted(kinds), **extra}


def _reason(why: str, remedy: str, short: str | None = None) -> dict[str, str]:
    return {"why": why, "remedy": remedy, "short": short or why}


def _chance(checks: dict[str, Any]) -> dict[str, str] | None:
    c = checks.get("chance_level")
    if not c or c["status"] != "fail":
        return None
    v = c["values"]
    return _reason(f"the model is at chance level (clean {100 * v['clean_accuracy']:.1f}%, chance "
                   f"{100 * v['chance']:.1f}%)", "train the model (or check the data and labels) before attacking it",
                   f"model at chance level (clean {100 * v['clean_accuracy']:.1f}%)")


def result_verdict(r: dict[str, Any], kinds: dict[str, str], chance: dict[str, str] | None,
                   issues: list[tuple[str, str]]) -> dict[str, Any]:
    """The verdict of one attack's number."""
    own = suited(r)
    if chance:
        return _make(MEANINGLESS, [chance], kinds, suited_to=sorted(own))
    reasons = [_reason(f"{kinds[k]}, and this attack is not adapted to it", REMEDY[k], SHORT[k])
               for k in kinds if k not in own]
    reasons += [_reason(why, remedy) for why, remedy in issues]
    return _make(INFLATED if reasons else TRUSTWORTHY, reasons, kinds, suited_to=sorted(own))


def combined_verdict(members: list[dict[str, Any]], kinds: dict[str, str],
                     chance: dict[str, str] | None) -> dict[str, Any]:
    """A worst case's verdict: trustworthy if one of its attacks is (it is at most that attack's accuracy)."""
    if chance:
        return _make(MEANINGLESS, [chance], kinds)
    trusted = [m["key"] for m in members if m["verdict"]["status"] == TRUSTWORTHY]
    if trusted:
        return _make(TRUSTWORTHY, [], kinds, trusted_by=trusted)
    seen: dict[str, dict[str, str]] = {}
    for m in members:
        for r in m["verdict"]["reasons"]:
            why = r["why"].replace(", and this attack is not adapted to it", ", and no attack is adapted to it")
            seen.setdefault(why, {**r, "why": why})
    reasons = list(seen.values()) or [_reason("none of its attacks is trustworthy", "run with --adapt")]
    return _make(INFLATED, reasons, kinds)


def attach_verdicts(result: dict[str, Any]) -> None:
    """Add ``verdict`` to every result, worst case (``robust``) and adapted worst case (``adapted``), in place."""
    checks = {c["name"]: c for c in (result.get("checks") or {}).get("checks", [])}
    probe = (result.get("checks") or {}).get("probe")
    kinds = masking_kinds(probe)
    chance = _chance(checks)
    issues = result_issues(result)
    for r in result["results"]:
        r["verdict"] = result_verdict(r, kinds, chance, issues.get(r["key"], []))
    by_key = {r["key"]: r for r in result["results"]}
    for block in ("robust", "adapted"):
        for wc in result.get(block) or []:
            wc["verdict"] = combined_verdict([by_key[k] for k in wc["attacks"]], kinds, chance)
    adapted = {(a["norm"], a["eps"]): a for a in result.get("adapted") or []}
    for rb in result["robust"]:
        a = adapted.get((rb["norm"], rb["eps"]))
        if a is not None and rb["verdict"]["status"] == INFLATED:
            rb["verdict"]["summary"] += f" (adapted worst case: {100 * a['accuracy']:.2f}%, {a['verdict']['status']})"
