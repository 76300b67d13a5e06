"""AutoAttack's own sanity checks (pyautoattack's ``checks`` module, documented in its ``flags_doc.md``), run on
the probe images whatever the suite, so every result stores AutoAttack's flags beside advbench's checks.

AutoAttack runs them at the start of ``run_standard_evaluation`` and only logs warnings: a randomized
defence (outputs differ between passes), probability outputs (softmax instead of logits), a dynamic
defence (the forward pass itself computes gradients), too many target classes, and zero gradients (of the
DLR loss, inside APGD). Its Square check needs an AutoAttack run and stays with AutoAttack results.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from advbench.attacks.autoattack import capture_autoattack_messages
from advbench.attacks.losses import dlr_loss
from advbench.attacks.pgd import input_grad

#: AutoAttack checks whose flag means its evaluation (or a gradient attack's) may be unreliable; the others
#: (``n_classes``) are notes about settings advbench adjusts (it caps target classes at classes - 1). AutoAttack
#: raises ``zero_gradients`` for a single point; it counts here above ``ZERO_GRAD_SHARE`` of the images
TRUST_CHECKS = ("randomized", "output_range", "dynamic", "zero_gradients")
ZERO_GRAD_SHARE = 0.01


def counts(flag: dict[str, Any]) -> bool:
    """Whether an AutoAttack flag says the evaluation may be unreliable (else it is a note)."""
    if flag["check"] == "zero_gradients":
        return flag.get("fraction", 1.0) > ZERO_GRAD_SHARE
    return flag["check"] in TRUST_CHECKS


@contextlib.contextmanager
def _keep_tracer() -> Iterator[None]:
    """AutoAttack's dynamic-defence check calls ``sys.settrace(None)``; put back any tracer (a coverage tool)."""
    tracer = sys.gettrace()
    try:
        yield
    finally:
        sys.settrace(tracer)


def _run(name: str, fn: Callable[[Any], Any], out: list[dict[str, str]]) -> Any:
    """Run one check with AutoAttack's logger captured; each message becomes ``{"check", "message"}``."""
    import logging

    messages: list[str] = []
    other: list[str] = []
    with capture_autoattack_messages(messages, other):
        value = fn(logging.getLogger("auto-attack"))
    out.extend({"check": name, "message": m} for m in messages + other)
    return value


def autoattack_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     n_target_classes: int = 9) -> list[dict[str, str]]:
    """Every flag AutoAttack's checks raise on images ``x`` (model frozen in eval mode by the caller).

    Target classes are capped at classes - 1 as the adapter does; the zero-gradient check gets the DLR-loss
    input gradient at the correctly classified images of ``x`` (AutoAttack checks it at APGD's first iterate of
    the points it attacks).
    """
    from pyautoattack import checks

    from advbench.attacks.autoattack import _reset_dynamic_check

    flags: list[dict[str, str]] = []
    _run("randomized", lambda log: checks.check_randomized(model, x, y, bs=len(x), logger=log), flags)
    n_cls = _run("output_range", lambda log: checks.check_range_output(model, x, logger=log), flags)
    _reset_dynamic_check()
    with _keep_tracer():
        _run("dynamic", lambda log: checks.check_dynamic(model, x, False, logger=log), flags)
    n_t = max(1, min(n_target_classes, int(n_cls) - 1))
    _run("n_classes", lambda log: checks.check_n_classes(int(n_cls), ["apgd-ce", "apgd-t", "fab-t", "square"], n_t,
                                                          n_t, logger=log), flags)
    with torch.no_grad():
        right = model(x).argmax(1) == y  # AutoAttack attacks (and checks) correctly classified points only
    if n_cls >= 3 and bool(right.any()):
        xg = x[right].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            grad = input_grad(dlr_loss(model(xg), y[right]).sum(), xg)
        start = len(flags)
        _run("zero_gradients", lambda log: checks.check_zero_gradients(grad, logger=log), flags)
        frac = float((grad.flatten(1).abs().sum(1) == 0).float().mean())
        for f in flags[start:]:
            f["fraction"] = frac  # AutoAttack flags one point already; advbench grades the share
    return flags
