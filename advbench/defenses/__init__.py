"""Defense registry: importing this package imports every module in it, which registers its defenses."""

import importlib
import pkgutil

from advbench.defenses.base import DEFENSES, Defense, StepContext, build_defense

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["DEFENSES", "Defense", "StepContext", "build_defense"]
