"""Certification: randomized smoothing (Cohen, Rosenfeld and Kolter 2019) and Finlay and Oberman's heuristic
bounds on the minimum adversarial distance (L-bound, ω-bound) with extreme-value (GEV) estimates of the Lipschitz
constant and the modulus of continuity. Plain functions on a model and tensors; the evaluation loop and the
result files are in :mod:`advbench.engine.certify`. See docs/certification.md."""

from __future__ import annotations

from advbench.certify.bounds import (
    BoundOptions,
    BoundStats,
    lbound_distances,
    lipschitz_estimate,
    loss_and_dual_grad,
    monotone_envelope,
    omega_certified,
    omega_distances,
    omega_estimates,
)
from advbench.certify.gev import GEVFit, fit_gev
from advbench.certify.smoothing import (
    ABSTAIN,
    SmoothingOptions,
    certified_accuracy,
    certify,
    cohen_radius,
    lower_confidence_bound,
    predict,
    sample_counts,
)

__all__ = ["ABSTAIN", "BoundOptions", "BoundStats", "GEVFit", "SmoothingOptions", "certified_accuracy", "certify",
           "cohen_radius", "fit_gev", "lbound_distances", "lipschitz_estimate", "loss_and_dual_grad",
           "lower_confidence_bound", "monotone_envelope", "omega_certified", "omega_distances", "omega_estimates",
           "predict", "sample_counts"]
