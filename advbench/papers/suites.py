"""The attack suites of paper recipes, looked up like any other suite.

Two kinds: the suites a paper module defines (its ``define_suites()``, e.g. ``soar-init``, ``scorpio-um-steps``)
and the smoke variants ``SUITE-smokeN`` that smoke scale derives from any suite. Importing this module installs
a lookup hook on the suite registry that registers them on the first miss, so ``advbench attack RUN --suite
soar-init`` finds a paper's suite without a ``reproduce`` first. The api imports this module; the attacks
package knows nothing of papers (the layering's arrows point down).

Imports torch (through the attacks): the report side uses the torch-free
:func:`advbench.papers.recipes.smoke_suite_parent` and the description stored with each result instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advbench.attacks import ATTACKS, SUITES, SuiteEntry
from advbench.attacks.suites import register_suite
from advbench.papers.recipes import SMOKE_SUITE_NAME, load_recipe_modules


def register_paper_suites() -> None:
    """Register the suites every paper module defines (``define_suites() -> {name: (entries, description)}``)
    that are not registered yet."""
    for module in load_recipe_modules():
        define = getattr(module, "define_suites", None)
        for name, (entries, description) in (define() if define else {}).items():
            if name not in SUITES.names():
                register_suite(name, entries, description)


def _expensive(entry: SuiteEntry) -> bool:
    """True for an entry that costs far more than a PGD-20 per image (the attack says so, or > 200 steps)."""
    if entry.attack in ATTACKS and ATTACKS.get(entry.attack).expensive:
        return True
    steps = int(entry.options.get("steps", 0) or 0) * int(entry.options.get("restarts", 1) or 1)
    return steps > 200


def smoke_suite(suite: str, n_expensive: int, n_eval: int) -> str:
    """The smoke variant of ``suite``: its expensive entries on the first ``n_expensive`` images.

    Returns ``suite`` itself when nothing is expensive or ``n_expensive >= n_eval``; otherwise registers
    (once) and returns ``SUITE-smokeN``. Labels are unchanged, so the grid's columns still find them.
    """
    register_paper_suites()
    if suite not in SUITES.names() or n_expensive >= n_eval:
        return suite
    entries = SUITES.get(suite).entries
    if not any(_expensive(e) for e in entries):
        return suite
    return ensure_suite(f"{suite}-smoke{int(n_expensive)}")


def ensure_suite(name: str) -> str:
    """Register the paper suites, and the smoke variant ``SUITE-smokeN`` if ``name`` is one and is not
    registered yet; returns ``name`` (the suite registry's lookup hook)."""
    register_paper_suites()
    m = SMOKE_SUITE_NAME.match(name)
    if m is None or name in SUITES.names() or m["suite"] not in SUITES.names():
        return name
    n = int(m["n"])
    parent = SUITES.get(m["suite"])
    entries, notes = [], []
    for e in parent.entries:
        if not _expensive(e):
            entries.append(e)
            continue
        options, changed = _cheaper(e)
        entries.append(dataclasses.replace(e, options=options, subset=min(n, e.subset or n)))
        notes.append(f"{e.label}{f' ({changed})' if changed else ''}")
    register_suite(name, entries, f"smoke variant of {m['suite']}, on the first {n} images only: {'; '.join(notes)}")
    return name


def _cheaper(entry: SuiteEntry) -> tuple[dict[str, Any], str]:
    """Smoke options of an expensive entry: AutoAttack keeps APGD-CE and APGD-T (FAB-T and Square, slow on a CPU
    and rarely decisive on unmasked models, are dropped), its APGD-T on 3 target classes like the lone targeted
    components (measured on the real-digit SAT Table 2 block, 100 digits: the same accuracy as 9 targets on 5 of
    6 rows, +1 on the sixth, in 40-45% of the time); Square gets 1000 queries, RayS 2000. Returns (options,
    what changed)."""
    o = dict(entry.options)
    if entry.attack == "autoattack" and o.get("version", "standard") == "standard":
        targets = o.get("n_target_classes") or 3
        return ({**o, "version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_restarts": 1,
                 "n_target_classes": targets},
                f"APGD-CE + APGD-T on {targets} target classes only, FAB-T and Square dropped")
    if entry.attack in ("apgd-t", "fab-t") and o.get("n_target_classes") is None:
        return {**o, "n_target_classes": 3}, "3 target classes"
    if entry.attack == "square" and "n_queries" not in o:
        return {**o, "n_queries": 1000}, "1000 queries"
    if entry.attack == "rays" and int(o.get("max_queries", 10000)) > 2000:
        return {**o, "max_queries": 2000}, "2000 queries"
    if entry.attack == "best-of" and "member_options" not in o:
        return {**o, "member_options": dict(BEST_OF_SMOKE)}, (
            "members on smaller budgets: CW-L2 4 x 50 steps, HopSkipJump 10 rounds of <= 200 queries, LogBarrier "
            "6 x 15 steps, bisection PGD 8 halvings")
    return o, ""


#: the best-of members' budgets at smoke scale (a CPU-minutes stand-in for the paper's distance attacks)
BEST_OF_SMOKE = {"cw-l2": {"search_steps": 4, "steps": 50}, "hopskipjump": {"iterations": 10, "max_evals": 200,
                                                                           "init_evals": 50},
                 "logbarrier": {"outer": 6, "inner": 15}, "min-dist": {"bisection": 8}}


SUITES.on_miss(ensure_suite)
