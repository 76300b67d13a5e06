"""Transfer (black-box) attacks: craft white-box adversarial examples on a source model, evaluate the target.

SOAR Tables 2/7/9/12/16 use PGD-20 / PGD-1000 from independently trained standard models; Randomized-AT
Table 4 uses PGD-20 and CW-20 from a PGD-AT surrogate. The source is given to the evaluation
(``advbench attack RUN --suite blackbox --source runs/<source-run>``); the target is only queried for
the final prediction. With source = target and the same options and seed, the result equals the
white-box attack bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from advbench.attacks.base import ATTACKS, Attack, Perturbation
from advbench.attacks.pgd import PGDOptions, pgd_perturb, run_pgd_options
from advbench.core.passes import PassCounter, frozen
from advbench.errors import UserError


@dataclass
class TransferOptions:
    """Attack crafted on the source: ``method`` pgd (CE), cw-inf (CW margin, ``kappa``) or fgsm; steps, step size
    (default eps/4), random start, restarts and selection on the source (``last`` iterate, as the papers do)."""

    method: Literal["pgd", "cw-inf", "fgsm"] = "pgd"
    steps: int = 20
    step_size: float | None = None
    kappa: float = 50.0
    init: Literal["uniform", "zero", "normal"] = "uniform"
    restarts: int = 1
    select: Literal["last", "misclassified", "best-loss"] = "last"

    def validate(self) -> None:
        """Steps and restarts >= 1, step size > 0."""
        if self.steps < 1 or self.restarts < 1:
            raise UserError("transfer steps and restarts must be >= 1")
        if self.step_size is not None and self.step_size <= 0:
            raise UserError("transfer step_size must be > 0")


@ATTACKS.register("transfer", help="Transfer attack: PGD/CW/FGSM crafted on a source run's model (--source RUN), "
                  "evaluated on the target")
class Transfer(Attack):
    """Adversarial examples of a source model, evaluated on the target (x, y unchanged)."""

    kind = "black-box"
    needs = ("source_model",)
    Options = TransferOptions

    def perturb_ex(self, model, x, y, generator=None):
        """Craft on the source (eval mode, weights frozen); record the source's own accuracy on them."""
        source = self.context.source_model
        assert source is not None
        o = self.options
        with frozen(source, "eval"), PassCounter(source) as counter:
            if o.method == "fgsm":
                x_adv = pgd_perturb(source, x, y, self.threat, steps=1, alpha=self.threat.eps, init="zero",
                                    select="last", generator=generator)
            else:
                opts = PGDOptions(steps=o.steps, step_size=o.step_size, restarts=o.restarts,
                                  loss="cw" if o.method == "cw-inf" else "ce", kappa=o.kappa, init=o.init,
                                  select=o.select)
                x_adv = run_pgd_options(source, x, y, self.threat, opts, generator)
            source_correct = None
            if source is not model:
                with torch.no_grad():
                    source_correct = (source(x_adv).argmax(1) == y).tolist()
        info = {"source": self.context.source, "source_forward": counter.forward, "source_backward": counter.backward}
        per_sample = {"source_correct": [int(c) for c in source_correct]} if source_correct is not None else {}
        return Perturbation(x_adv, per_sample=per_sample, info=info)

    def perturb(self, model, x, y, generator=None):
        """Adversarial images (see :meth:`perturb_ex`)."""
        return self.perturb_ex(model, x, y, generator).x_adv

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """The source model and its own (white-box) accuracy on the crafted images."""
        sc = per_sample.get("source_correct", [])
        return {"source": info[0].get("source") if info else None,
                "source_accuracy": sum(sc) / len(sc) if sc else None}
