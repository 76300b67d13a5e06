"""Attack registry: importing this package imports every module in it, which registers attacks and suites."""

import importlib
import pkgutil

from advbench.attacks.base import ATTACKS, Attack, AttackResult, build_attack, project
from advbench.attacks.suites import SUITES, Suite, SuiteEntry, single_attack_suite

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["ATTACKS", "SUITES", "Attack", "AttackResult", "Suite", "SuiteEntry", "build_attack", "project",
           "single_attack_suite"]
