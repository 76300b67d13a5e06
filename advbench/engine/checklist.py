"""Checks from the published checklists for adaptive evaluation, where a check can be computed from a result.

Carlini et al. 2019, "On evaluating adversarial robustness" (its evaluation checklist), and Tramèr et al.
2020, "On adaptive attacks to adversarial example defenses". Each check names the item it implements
(``item``); docs/attacks.md lists them. They join the hygiene checks (:mod:`advbench.engine.hygiene`) in
the ``checks`` block; the per-result verdicts (:mod:`advbench.engine.verdict`) read their numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from advbench.attacks import ATTACKS
from advbench.engine import hygiene
from advbench.engine.adapt import masking_kinds
from advbench.engine.hygiene import Check

CARLINI = "Carlini et al. 2019 checklist"
TRAMER = "Tramèr et al. 2020"


def suited(r: dict[str, Any]) -> set[str]:
    """The masking kinds result ``r``'s attack is suited to (the attack class decides, from its options and summary)."""
    try:
        cls = ATTACKS.get(r["attack"])
    except Exception:  # a result of an attack this version does not know: suited to nothing
        return set()
    return cls.suited_to(r.get("options") or {}, r.get("summary"))


def measures_distance(r: dict[str, Any]) -> bool:
    """Whether result ``r`` comes from a minimum-distance attack (any registered one, not a fixed name)."""
    try:
        return bool(ATTACKS.get(r["attack"]).measures_distance)
    except Exception:  # an attack this version does not know
        return False


def check_chance_level(result: dict[str, Any], probe: dict[str, Any] | None) -> Check | None:
    """Clean accuracy clearly above chance (max(1/classes, the most frequent label's share)); else every robust
    number is meaningless. Fail within 3 binomial standard deviations of chance, warn within 10% of the way
    from chance to 100%."""
    if not probe or not probe.get("num_classes"):
        return None
    n, acc = result["clean"]["n"], result["clean"]["accuracy"]
    chance = max(1.0 / probe["num_classes"], probe.get("majority_fraction", 0.0))
    sigma = math.sqrt(chance * (1 - chance) / max(1, n))
    fail_at, warn_at = chance + 3 * sigma, chance + 0.1 * (1 - chance) + 3 * sigma
    # on a handful of images even 100% can lie within the warn band: that says "too few images", not "near chance"
    status = "fail" if acc <= fail_at else ("warn" if acc <= warn_at < 1.0 else "pass")
    words = {"fail": "at chance level", "warn": "barely above chance", "pass": "above chance"}[status]
    msg = f"clean accuracy {100 * acc:.1f}% on {n} images is {words} (chance {100 * chance:.1f}%)" + \
        ("" if status == "pass" else ": robust accuracies of this model say nothing")
    return Check("chance_level", status, msg, {"clean_accuracy": acc, "chance": chance, "n": n, "fail_at": fail_at,
                                               "warn_at": warn_at, "item": f"{CARLINI}: report clean model accuracy"})


def _pair(stronger: dict[str, Any], weaker: dict[str, Any], **extra: Any) -> dict[str, Any]:
    m = min(stronger["n"], weaker["n"])
    a, b = sum(stronger["correct"][:m]) / max(1, m), sum(weaker["correct"][:m]) / max(1, m)
    return {"stronger": stronger["key"], "weaker": weaker["key"], "stronger_accuracy": a, "weaker_accuracy": b,
            "increase": a - b, "n": m, **extra}


def check_iterative_vs_single_step(result: dict[str, Any]) -> Check | None:
    """At each budget, every iterative white-box attack is at least as strong as FGSM (same images)."""
    by_budget: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in result["results"]:
        by_budget[(r["norm"], r["eps"])].append(r)
    pairs = []
    for members in by_budget.values():
        single = [r for r in members if r["attack"] == "fgsm"]
        iterative = [r for r in members if r.get("kind", "white-box") == "white-box" and r["attack"] != "fgsm"
                     and not measures_distance(r)]
        pairs += [_pair(i, f) for i in iterative for f in single]
    if not pairs:
        return None
    bad = max(pairs, key=lambda p: p["increase"])
    status = hygiene._grade(bad["increase"], bad["n"])
    msg = "iterative attacks are at least as strong as FGSM" if status == "pass" else \
        f"{bad['stronger']} is {100 * bad['increase']:.2f} points weaker than the single-step {bad['weaker']} " \
        "(broken optimisation, masked gradients or a noisy verdict)"
    return Check("iterative_vs_single_step", status, msg, {
        "worst": bad, "pairs": pairs, "tolerance": hygiene._tolerances(bad["n"]),
        "item": f"{CARLINI}: verify iterative attacks perform better than single-step attacks"})


def _families(result: dict[str, Any]) -> list[list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in result["results"]:
        fam = hygiene._step_family(r)
        if fam is not None:
            groups[fam].append(r)
    return [g for g in groups.values() if len(g) > 1]


def _effort(r: dict[str, Any]) -> tuple[int, int]:
    return int(r["options"]["steps"]), int(r["options"].get("restarts") or 1)


def _drop(fewer: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    m = min(fewer["n"], more["n"])
    drop = (sum(fewer["correct"][:m]) - sum(more["correct"][:m])) / max(1, m)
    return {"fewer_steps": fewer["key"], "more_steps": more["key"], "drop": drop, "n": m}


def check_converged(result: dict[str, Any]) -> Check | None:
    """Doubling the steps no longer lowers accuracy: in each family (same attack and options but steps and
    restarts), each member against every member with at least twice its steps. Warns when even the strongest
    member is more than max(3 images, 2%) below a member with at most half its steps."""
    rows, of_strongest = [], []
    for members in _families(result):
        strongest = max(members, key=_effort)
        for a in members:
            for b in members:
                (sa, ra), (sb, rb) = _effort(a), _effort(b)
                if b is not a and sb >= 2 * sa and rb >= ra:
                    rows.append(_drop(a, b))
                    if b is strongest:
                        of_strongest.append(rows[-1])
    if not rows:
        return None
    worst_top = max(of_strongest, key=lambda r: r["drop"], default=None)
    warn_tol = hygiene._tolerances(worst_top["n"] if worst_top else 1)[1]
    status = "warn" if worst_top and worst_top["drop"] > warn_tol + 1e-12 else "pass"
    msg = "more steps no longer lower the accuracy of the strongest attack of each family" if status == "pass" else \
        f"{worst_top['more_steps']} is {100 * worst_top['drop']:.2f} points below {worst_top['fewer_steps']}: " \
        "even the strongest attack may not have converged (try more steps or restarts)"
    return Check("converged", status, msg, {"pairs": rows, "worst_strongest": worst_top, "warn_tolerance": warn_tol,
                                            "item": f"{CARLINI}: verify that the attacks have converged (doubling "
                                            "the number of iterations does not increase attack success rate)"})


def check_adaptive_coverage(result: dict[str, Any], probe: dict[str, Any] | None) -> Check | None:
    """Every masking kind the probe found has, at every budget, an attack suited to it (EOT for randomness,
    BPDA or a gradient-free attack for broken gradients, a scale-free loss for saturation)."""
    kinds = masking_kinds(probe)
    if probe is None:
        return None
    budgets: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in result["results"]:
        budgets[(r["norm"], r["eps"])] |= suited(r)
    missing = {f"{norm} {eps}": sorted(set(kinds) - got) for (norm, eps), got in budgets.items() if set(kinds) - got}
    if not kinds:
        status, msg = "pass", "no gradient masking found: no adaptive attack needed"
    elif missing:
        status = "fail"
        msg = f"masked ({', '.join(kinds)}) but no attack at {', '.join(missing)} is adapted to " \
              f"{', '.join(sorted({k for v in missing.values() for k in v}))}: the worst case is likely inflated; " \
              "run with --adapt"
    else:
        status, msg = "pass", f"every masking kind found ({', '.join(kinds)}) has an adapted attack at every budget"
    return Check("adaptive_coverage", status, msg, {
        "masking": kinds, "missing": missing,
        "item": f"{CARLINI}: perform adaptive attacks; ensemble over randomness; apply differentiable techniques "
                f"(BPDA) | {TRAMER}: attack the full defense, target the component that masks gradients"})


def check_adaptive_large_eps(adapt: dict[str, Any] | None) -> Check | None:
    """Each adaptive attack, with its own adaptations, brings accuracy to ~0 at Linf eps = 1 (the whole box)."""
    rows = (adapt or {}).get("large_eps") or []
    if not rows:
        return None
    grades = [(r, "pass" if round(r["accuracy"] * r["n"]) <= max(1, 0.02 * r["n"])
               else ("warn" if round(r["accuracy"] * r["n"]) <= 0.10 * r["n"] else "fail")) for r in rows]
    bad = [(r, s) for r, s in grades if s != "pass"]
    status = hygiene.worst([s for _, s in grades])
    msg = "every adaptive attack reaches ~0% at eps=1" if not bad else "; ".join(
        f"{r['label']} leaves {100 * r['accuracy']:.1f}% correct at eps=1 (should be ~0%: its adaptation does not "
        "reach the masking)" for r, _ in bad)
    return Check("adaptive_large_eps", status, msg, {
        "attacks": rows, "item": f"{CARLINI}: perform an unbounded attack; with high distortion accuracy should "
                                 f"reach random guessing | {TRAMER}: check that the adaptive attack succeeds"})


def check_adaptive_vs_others(result: dict[str, Any]) -> Check | None:
    """Each adaptive attack is at least as strong as every other white-box attack at its budget (same images)."""
    pairs = []
    for a in (r for r in result["results"] if r.get("adaptive")):
        others = [r for r in result["results"] if not r.get("adaptive") and (r["norm"], r["eps"]) ==
                  (a["norm"], a["eps"]) and r.get("kind", "white-box") == "white-box"]
        pairs += [_pair(a, o) for o in others]
    if not pairs:
        return None
    bad = max(pairs, key=lambda p: p["increase"])
    status = hygiene._grade(bad["increase"], bad["n"])
    msg = "adaptive attacks are at least as strong as the suite's other white-box attacks" if status == "pass" else \
        f"{bad['stronger']} is {100 * bad['increase']:.2f} points weaker than {bad['weaker']}: the adaptation misses"
    return Check("adaptive_vs_others", status, msg, {
        "worst": bad, "pairs": pairs, "item": f"{CARLINI}: verify adaptive attacks perform better than any other"})


def run_all_checks(result: dict[str, Any], probe: dict[str, Any] | None, digest_before: str | None,
                   digest_after: str | None, adapt: dict[str, Any] | None) -> dict[str, Any]:
    """The ``checks`` block: hygiene checks, then the checklist's, and the masking kinds the probe found."""
    extra = [check_chance_level(result, probe), check_iterative_vs_single_step(result), check_converged(result),
             check_adaptive_coverage(result, probe), check_adaptive_large_eps(adapt), check_adaptive_vs_others(result)]
    block = hygiene.run_checks(result, probe, digest_before, digest_after, extra=extra)
    block["masking"] = masking_kinds(probe)
    return block
