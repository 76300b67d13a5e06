"""``--adapt``: what kind of gradient masking the probe found, and the attack suited to it.

:func:`masking_kinds` reads the model probe (:func:`~advbench.engine.hygiene.probe_model`):

- ``randomized``: two eval-mode passes differ (noise drawn in ``forward``) -> EOT gradients and a
  deterministic verdict over draws;
- ``non-differentiable``: the logit margin's input gradient is exactly zero for some images, or a submodule
  breaks gradients (rounding, a numpy step, ``detach``) -> BPDA through the breaking submodule, or
  straight-through rounding ops when it is inline;
- ``saturated``: the cross-entropy gradient is zero while the margin's is not (softmax underflow) -> the
  scale-free DLR loss;
- ``unexplained``: PGD at eps = 1 does not reach ~0% and none of the above explains it -> DLR with BPDA.

:func:`adaptive_entries` turns the kinds into one ``adaptive-pgd`` suite entry; :func:`adapted_large_eps`
runs that attack's settings at eps = 1 (the attack's own "unbounded attack succeeds" test).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advbench.attacks import SuiteEntry, build_attack
from advbench.attacks.aa_checks import autoattack_flags
from advbench.attacks.base import AttackContext
from advbench.attacks.bpda import find_gradient_breakers
from advbench.core.passes import frozen
from advbench.threat import ThreatModel

KINDS = ("randomized", "non-differentiable", "saturated", "unexplained")
#: relative output difference of two passes above which a model counts as randomized (the eval-mode check's)
NONDET_TOL = 1e-5
#: fraction of images with an all-zero input gradient above which gradients count as masked (zero_gradients' pass)
ZERO_TOL = 0.01
ADAPT_STEPS = 100
ADAPT_EOT = 10
#: images the adapted attack is run on at eps = 1
ADAPTED_PROBE_N = 128
BREAKER_PROBE_N = 32


def probe_extras(model: nn.Module, x: torch.Tensor, y: torch.Tensor, measured: dict[str, Any]) -> dict[str, Any]:
    """AutoAttack's own flags on the probe images and, when gradients are zero, the gradient-breaking submodules."""
    with frozen(model, "eval"):
        extra: dict[str, Any] = {"autoattack_flags": autoattack_flags(model, x, y)}
        zero = max(measured["zero_grad_fraction"], measured["margin_zero_grad_fraction"])
        extra["gradient_breakers"] = find_gradient_breakers(model, x[:BREAKER_PROBE_N]) if zero > ZERO_TOL else []
    return extra


def _large_eps_fails(probe: dict[str, Any]) -> bool:
    n = probe["n"]
    return round(probe["large_eps_accuracy"] * n) > max(1, 0.02 * n)


def masking_kinds(probe: dict[str, Any] | None) -> dict[str, str]:
    """The kinds of gradient masking the probe shows, each with the measurement behind it (in plain words)."""
    if not probe:
        return {}
    kinds: dict[str, str] = {}
    if probe.get("nondeterminism", 0.0) > NONDET_TOL:
        kinds["randomized"] = f"randomized model (two passes differ by {probe['nondeterminism']:.2g} relative)"
    ce_zero = probe["zero_grad_fraction"]
    m_zero = probe.get("margin_zero_grad_fraction", ce_zero)
    breakers = probe.get("gradient_breakers") or []
    if m_zero > ZERO_TOL or breakers:
        where = f"; breaking submodule: {', '.join(breakers)}" if breakers else ""
        kinds["non-differentiable"] = f"gradients masked: zero input gradients for {100 * m_zero:.0f}% of images" \
            f" (non-differentiable step{where})"
    elif ce_zero > ZERO_TOL:
        kinds["saturated"] = f"gradients masked: zero cross-entropy gradients for {100 * ce_zero:.0f}% of images " \
            "(saturated logits)"
    if not kinds and _large_eps_fails(probe):
        kinds["unexplained"] = f"PGD at eps=1 leaves {100 * probe['large_eps_accuracy']:.0f}% correct (should be ~0%)"
    return kinds


def adaptive_options(kinds: dict[str, str], probe: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``adaptive-pgd`` options suited to every kind, and the short names of the adaptations."""
    opts: dict[str, Any] = {"steps": ADAPT_STEPS}
    parts: list[str] = []
    randomized = "randomized" in kinds
    opts["eot_samples"] = ADAPT_EOT if randomized else 1
    if randomized:
        parts.append(f"EOT-{ADAPT_EOT}")
    if "saturated" in kinds or "unexplained" in kinds:
        opts["loss"] = "dlr" if probe.get("num_classes", 10) >= 3 else "margin"
        parts.append(opts["loss"].upper())
        if randomized:
            opts["eot_average"] = "logits"  # expected probabilities of saturated logits have no gradient
    if "non-differentiable" in kinds or "unexplained" in kinds:
        breakers = probe.get("gradient_breakers") or []
        opts["bpda"] = ",".join(breakers) if breakers else ("ops" if "non-differentiable" in kinds else "auto")
        parts.append(f"BPDA {', '.join(breakers)}" if breakers else "BPDA")
    else:
        opts["bpda"] = "none"
    return opts, parts


def adaptive_entries(probe: dict[str, Any] | None) -> list[SuiteEntry]:
    """The suite entry ``--adapt`` adds for the probe's masking kinds (none for an unmasked model)."""
    kinds = masking_kinds(probe)
    if not kinds or probe is None:
        return []
    opts, parts = adaptive_options(kinds, probe)
    return [SuiteEntry(f"Adaptive PGD-{ADAPT_STEPS} ({'; '.join(parts)})", "adaptive-pgd", opts)]


def adapted_large_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, entry: SuiteEntry,
                      batch_size: int) -> dict[str, Any]:
    """Accuracy of ``entry``'s adaptive attack (20 steps of 0.1, zero start) at Linf eps = 1 on images ``x``."""
    threat = ThreatModel("linf", 1.0, "1")
    opts = {**entry.options, "steps": 20, "step_size": 0.1, "init": "zero"}
    correct = 0
    for b in range(0, x.shape[0], batch_size):
        attack = build_attack(entry.attack, threat, opts, AttackContext(batch=b // batch_size))
        res = attack(model, x[b:b + batch_size], y[b:b + batch_size])
        correct += int(res.correct.sum())
    n = x.shape[0]
    return {"label": entry.label, "accuracy": correct / max(1, n), "n": n, "eps": 1.0, "steps": 20,
            "step_size": 0.1}
