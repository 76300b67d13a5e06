"""The λ curriculum shared by P-SAT and H-SAT (Sitawarin et al. 2021, SAT): the λ schedules of App. A, the
options they share, and the curriculum base class that turns the schedule into the step's λ.

A helper module: it registers no defense (``p_sat.py`` and ``h_sat.py`` do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from advbench.attacks.training import TrainingAttackOptions
from advbench.defenses.base import Defense, StepContext, check_positive
from advbench.errors import UserError

Schedule = Literal["linear", "linear-psat", "linear-hsat", "step-mnist", "step-prn20", "step-wrn", "constant"]

#: step schedules: λ rises by 1/3 at each listed epoch (SAT App. A, Fig. 5a)
STEP_BREAKPOINTS: dict[str, tuple[float, float, float]] = {
    "step-mnist": (30.0, 45.0, 60.0),
    "step-prn20": (40.0, 60.0, 80.0),
    "step-wrn": (30.0, 40.0, 50.0),
}
#: linear schedules: (λ at start, λ at end, epoch where the ramp starts, epoch where it ends) (Fig. 5b)
LINEAR_SCHEDULES: dict[str, tuple[float, float, float, float]] = {
    "linear-hsat": (0.8, 1.0, 0.0, 30.0),
    "linear-psat": (0.0, 1.0, 30.0, 70.0),
}
_SCHEDULES = set(STEP_BREAKPOINTS) | set(LINEAR_SCHEDULES) | {"constant", "linear"}


def sat_lambda(schedule: str, epoch: float, *, scale: float = 1.0, constant: float = 1.0) -> float:
    """Difficulty parameter λ(epoch) of a SAT schedule (App. A); breakpoint epochs are multiplied by ``scale``.

    ``step-*``: 0, then +1/3 at each breakpoint (1 after the third); ``linear-hsat``: 0.8 → 1 over epochs
    0–30; ``linear-psat``: 0 until 30, linear to 1 at 70; ``constant``: ``constant``. Epochs are 0-based.
    """
    if schedule == "constant":
        return float(constant)
    if schedule in STEP_BREAKPOINTS:
        passed = sum(epoch >= scale * b for b in STEP_BREAKPOINTS[schedule])
        return passed / 3.0
    if schedule in LINEAR_SCHEDULES:
        start, end, e0, e1 = LINEAR_SCHEDULES[schedule]
        e0, e1 = scale * e0, scale * e1
        if epoch <= e0:
            return start
        if epoch >= e1:
            return end
        return start + (end - start) * (epoch - e0) / (e1 - e0)
    raise UserError(f"unknown lambda schedule '{schedule}'; choose one of {', '.join(sorted(_SCHEDULES))}")


def first_positive_epoch(schedule: str, *, scale: float = 1.0, constant: float = 1.0,
                         per_iteration: bool = True) -> float:
    """The first epoch at which :func:`sat_lambda` is above 0 (0 when it starts above 0; ``inf`` when it never
    is). A step schedule rises at its first breakpoint; a linear one from 0 just after its ramp starts. With λ
    updated per epoch (integer epochs), the first whole epoch where it is."""
    if sat_lambda(schedule, 0.0, scale=scale, constant=constant) > 0:
        return 0.0
    if schedule == "constant":
        return math.inf
    if schedule in STEP_BREAKPOINTS:
        first = scale * STEP_BREAKPOINTS[schedule][0]
        return first if per_iteration else float(math.ceil(first))
    first = scale * LINEAR_SCHEDULES[schedule][2]
    return first if per_iteration else float(math.floor(first) + 1)


@dataclass
class LambdaSchedule:
    """The λ schedule fields of P-SAT and H-SAT, listed before the training attack's options."""

    lambda_schedule: Schedule = "linear"
    lam: float = 1.0
    schedule_scale: float = 1.0
    schedule_per_iteration: bool = False


@dataclass
class SATOptions(TrainingAttackOptions, LambdaSchedule):
    """Options shared by P-SAT and H-SAT: the λ schedule (``linear`` = the method's own linear schedule of
    App. A; ``step-mnist``/``step-prn20``/``step-wrn`` = the step schedules; ``constant`` = ``lam``),
    breakpoints scaled by ``schedule_scale`` (the paper's are for 70–100 epochs), λ per epoch (paper
    [NOT STATED]) or per iteration, and the training PGD (10 × eps/4, uniform start, eval-mode BN as
    in the ATES code)."""

    init: Literal["uniform", "zero", "normal"] = "uniform"
    attack_bn_mode: Literal["eval", "train"] = "eval"

    def validate(self) -> None:
        """Positive scale and a sane attack."""
        check_positive(self.schedule_scale, "sat schedule_scale")
        self.check_attack("sat")


class LambdaCurriculum(Defense):
    """Shared λ bookkeeping of P-SAT and H-SAT: the schedule's λ per epoch (or iteration), logged at each
    epoch start and written into ``describe()`` with the step size."""

    #: the schedule ``lambda_schedule = "linear"`` stands for (each method has its own, App. A)
    linear_schedule = "linear-psat"

    @property
    def schedule_name(self) -> str:
        """The configured schedule, with ``linear`` resolved to this method's own linear schedule."""
        o = self.options
        return self.linear_schedule if o.lambda_schedule == "linear" else o.lambda_schedule

    def lam(self, epoch: float) -> float:
        """λ at (fractional) ``epoch`` under the configured schedule."""
        o = self.options
        return sat_lambda(self.schedule_name, epoch, scale=o.schedule_scale, constant=o.lam)

    def lam_at(self, ctx: StepContext) -> float:
        """λ for this step (per epoch unless ``schedule_per_iteration``)."""
        return self.lam(ctx.progress if self.options.schedule_per_iteration else float(ctx.epoch))

    def describe(self) -> dict[str, Any]:
        """Options plus the schedule actually used and the step size."""
        return {**super().describe(), "resolved": {"lambda_schedule": self.schedule_name, "step_size": self.alpha}}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Record the epoch's λ."""
        return {"sat_lambda": self.lam(float(epoch))}

    @property
    def alpha(self) -> float:
        """PGD step size (eps/4 unless set)."""
        return self.options.step(self.threat)
