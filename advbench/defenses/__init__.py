"""Defense registry: importing this package imports every module in it, which registers its defenses.

One file per defense, named after it (``pgd_at.py`` registers ``pgd-at``); modules that hold shared pieces
(``input_gradients``, ``per_sample_state``, ``kl_divergence``, ``weight_perturbation``, ``sat_curriculum``,
``expansion_point``) register nothing. A new defense is one new file.
"""

import importlib
import pkgutil

from advbench.defenses.base import DEFENSES, Defense, StepContext, build_defense, options_for_dataset

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["DEFENSES", "Defense", "StepContext", "build_defense", "options_for_dataset"]
