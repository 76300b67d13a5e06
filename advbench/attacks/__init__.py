"""Attack registry: importing this package registers every attack and suite."""

from advbench.attacks import pgd  # noqa: F401  (registers fgsm, pgd)
from advbench.attacks.base import ATTACKS, Attack, AttackResult, build_attack, project
from advbench.attacks.suites import SUITES, Suite, SuiteEntry, single_attack_suite

__all__ = ["ATTACKS", "SUITES", "Attack", "AttackResult", "Suite", "SuiteEntry", "build_attack", "project",
           "single_attack_suite"]
