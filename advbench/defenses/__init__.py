"""Defense registry: importing this package registers every defense."""

from advbench.defenses import adversarial, standard  # noqa: F401  (registration)
from advbench.defenses.base import DEFENSES, Defense, StepContext, build_defense

__all__ = ["DEFENSES", "Defense", "StepContext", "build_defense"]
