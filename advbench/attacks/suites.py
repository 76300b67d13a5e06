"""Named attack suites: lists of (label, attack name, options), evaluated at one or more eps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advbench.registry import Registry


@dataclass(frozen=True)
class SuiteEntry:
    """One attack of a suite: a column label, a registered attack and its options."""

    label: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)


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


register_suite(
    "pgd",
    [
        SuiteEntry("FGSM", "fgsm"),
        SuiteEntry("PGD-20", "pgd", {"steps": 20}),
        SuiteEntry("PGD-100", "pgd", {"steps": 100}),
    ],
    "FGSM, PGD-20 and PGD-100 (step eps/4, uniform random start, CE) at the run's eps",
)

register_suite(
    "quick",
    [SuiteEntry("FGSM", "fgsm"), SuiteEntry("PGD-20", "pgd", {"steps": 20})],
    "FGSM and PGD-20: a fast smoke check",
)


def single_attack_suite(attack: str, options: dict[str, Any]) -> Suite:
    """An ad-hoc suite of one attack (``advbench attack --attack NAME --set k=v``)."""
    label = attack.upper() if not options else attack.upper() + "(" + ",".join(f"{k}={v}" for k, v in options.items()) + ")"
    return Suite(f"adhoc-{attack}", (SuiteEntry(label, attack, dict(options)),), f"single attack {attack}")
