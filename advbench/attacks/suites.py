"""Named attack suites: lists of (label, attack name, options), evaluated at one or more eps.

An entry may fix its own norm and eps (the Randomized-AT paper's PGD-20 and CW-20 run at 0.031, its
AutoAttack at 8/255) and may run on the first ``subset`` images only. The worst case ("robust") is
computed per (norm, eps) over every entry at that budget, on the images all of them attacked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advbench.registry import Registry


@dataclass(frozen=True)
class SuiteEntry:
    """One attack of a suite: a column label, a registered attack and its options.

    ``norm`` / ``eps`` fix the entry's threat (default: the evaluation's); ``subset`` limits it to the
    first N evaluated images.
    """

    label: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    norm: str | None = None
    eps: str | None = None
    subset: int | None = None


@dataclass(frozen=True)
class Suite:
    """A named list of attacks; ``robust`` = per-sample worst case over all of them."""

    name: str
    entries: tuple[SuiteEntry, ...]
    description: str = ""


SUITES: Registry[Suite] = Registry("suite")


def register_suite(name: str, entries: list[SuiteEntry], description: str) -> Suite:
    """Create and register a suite."""
    suite = Suite(name, tuple(entries), description)
    SUITES.add(name, suite, description)
    return suite


_STEP = "2/255"

register_suite(
    "pgd",
    [
        SuiteEntry("FGSM", "fgsm"),
        SuiteEntry("PGD-20", "pgd", {"steps": 20, "step_size": _STEP}),
        SuiteEntry("PGD-100", "pgd", {"steps": 100, "step_size": _STEP}),
        SuiteEntry("PGD-200", "pgd", {"steps": 200, "step_size": _STEP}),
        SuiteEntry("PGD-1000", "pgd", {"steps": 1000, "step_size": _STEP}),
        SuiteEntry("PGD-20-50", "pgd", {"steps": 20, "step_size": _STEP, "restarts": 50}),
    ],
    "SOAR Table 1: FGSM, PGD-20/100/200/1000 and PGD-20 with 50 restarts (step 2/255, uniform start, CE)",
)

register_suite(
    "pgd-lite",
    [
        SuiteEntry("FGSM", "fgsm"),
        SuiteEntry("PGD-20", "pgd", {"steps": 20}),
        SuiteEntry("PGD-100", "pgd", {"steps": 100}),
    ],
    "FGSM, PGD-20 and PGD-100 (step eps/4, uniform random start, CE): the quickstart suite",
)

register_suite(
    "autoattack",
    [SuiteEntry("AutoAttack", "autoattack", {"version": "standard"})],
    "AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square), seed 0, via pyautoattack",
)

register_suite(
    "autoattack-components",
    [
        SuiteEntry("APGD-CE", "apgd-ce"),
        SuiteEntry("APGD-T", "apgd-t"),
        SuiteEntry("FAB-T", "fab-t"),
        SuiteEntry("Square", "square"),
    ],
    "SOAR Tables 3/10: AutoAttack's components run individually (standard settings); the worst case "
    "column is their per-sample ensemble (not reported in the paper)",
)

register_suite(
    "blackbox",
    [
        SuiteEntry("SimBA", "simba"),
        SuiteEntry("Square", "square"),
        SuiteEntry("Transfer-PGD20", "transfer", {"method": "pgd", "steps": 20}),
        SuiteEntry("Transfer-PGD1000", "transfer", {"method": "pgd", "steps": 1000}),
        SuiteEntry("Transfer-CW20", "transfer", {"method": "cw-inf", "steps": 20}),
    ],
    "SOAR Table 2 / RAT Table 4: SimBA, Square, and transfer PGD-20/PGD-1000/CW-20 from --source RUN "
    "(transfer entries are skipped without a source)",
)

register_suite(
    "scorpio",
    [
        SuiteEntry("UL", "scorpio-ul"),
        SuiteEntry("TL", "scorpio-tl"),
        SuiteEntry("UM", "scorpio-um"),
        SuiteEntry("TM", "scorpio-tm"),
    ],
    "SCORPIO Tables 2/7: PGD-10 on UL, TL (random target), UM and TM (no random start, use_best)",
)

register_suite(
    "rat",
    [
        SuiteEntry("PGD-20", "pgd", {"steps": 20, "step_size": 0.003}, norm="linf", eps="0.031"),
        SuiteEntry("CW-20", "cw-inf", {"steps": 20, "step_size": 0.003, "kappa": 50.0}, norm="linf", eps="0.031"),
        SuiteEntry("AA", "autoattack", {"version": "standard"}),
    ],
    "Randomized-AT tables: PGD-20 and CW-20 at Linf 0.031 (step 0.003, random start), AutoAttack standard at the "
    "evaluation eps (8/255 by default)",
)

register_suite(
    "distance",
    [
        SuiteEntry("Best-Linf", "best-of", norm="linf"),
        SuiteEntry("Best-L2", "best-of", norm="l2"),
    ],
    "Finlay-Oberman Tables 1, 2, 4: per image the smallest Linf and L2 adversarial distance over CW-L2, "
    "HopSkipJump, LogBarrier and bisection-PGD (best-of; which attack won is recorded), mean distance, empirical "
    "error at eps, error-vs-eps curves",
)

register_suite(
    "distance-pgd",
    [
        SuiteEntry("MinDist-Linf", "min-dist", norm="linf"),
        SuiteEntry("MinDist-L2", "min-dist", norm="l2"),
    ],
    "Per-sample minimum Linf and L2 distance by bisection-PGD alone (the cheap part of the distance suite), mean "
    "distance, error-vs-eps curves",
)

register_suite(
    "quick",
    [
        SuiteEntry("FGSM", "fgsm"),
        SuiteEntry("PGD-20", "pgd", {"steps": 20}),
        SuiteEntry("APGD-CE+T", "autoattack", {"version": "custom", "attacks": ["apgd-ce", "apgd-t"],
                                               "n_restarts": 1}, subset=200),
    ],
    "FGSM and PGD-20 on all images, APGD-CE + APGD-T on the first 200: a fast smoke check",
)

register_suite(
    "adaptive",
    [
        SuiteEntry("Adaptive-PGD-100 (CE)", "adaptive-pgd", {"steps": 100}),
        SuiteEntry("Adaptive-PGD-100 (DLR)", "adaptive-pgd", {"steps": 100, "loss": "dlr"}),
        SuiteEntry("Adaptive-PGD-100 (CW)", "adaptive-pgd", {"steps": 100, "loss": "cw"}),
    ],
    "Adaptive PGD-100 (step eps/4, uniform start) on CE, DLR and the CW margin (the last two survive saturated "
    "logits), each with EOT over 10 draws and a deterministic 10-draw verdict when the model is randomized and "
    "BPDA through gradient-breaking submodules (or straight-through rounding ops) found on each batch",
)

#: eps used for an entry whose norm differs from the evaluation's and that fixes no eps
DEFAULT_EPS = {"linf": "8/255", "l2": "0.5"}


def single_attack_suite(attack: str, options: dict[str, Any]) -> Suite:
    """An ad-hoc suite of one attack (``advbench attack --attack NAME --set k=v``)."""
    inner = ",".join(f"{k}={v}" for k, v in options.items())
    label = attack.upper() if not options else f"{attack.upper()}({inner})"
    return Suite(f"adhoc-{attack}", (SuiteEntry(label, attack, dict(options)),), f"single attack {attack}")
