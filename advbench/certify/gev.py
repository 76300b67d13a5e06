"""Extreme-value estimates (Weng et al. 2018, as Finlay and Oberman use them): fit a generalized extreme value
distribution to batch maxima by maximum likelihood (:data:`scipy.stats.genextreme`) and read the estimate as its
1 − p quantile (p = 0.001, the paper's "threshold")."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from advbench.errors import UserError


@dataclass
class GEVFit:
    """A GEV fit of ``n`` batch maxima: scipy's shape ``c`` (c > 0: bounded upper tail, the reverse Weibull of
    CLEVER; c < 0: heavy Fréchet tail), ``loc`` and ``scale``; ``p`` and the estimate, the 1 − p quantile; the
    largest sample ``sample_max`` beside it. ``degenerate`` when all samples are equal (the estimate is that
    value)."""

    c: float
    loc: float
    scale: float
    n: int
    p: float
    estimate: float
    sample_max: float
    degenerate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_gev(samples: Any, p: float = 0.001) -> GEVFit:
    """Maximum-likelihood GEV fit of ``samples`` (batch maxima) and its 1 − ``p`` quantile."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise UserError(f"a GEV fit needs at least 2 finite batch maxima, got {x.size}; raise --batches")
    if not 0 < p < 1:
        raise UserError(f"the GEV threshold p must be in (0, 1), got {p}")
    top = float(x.max())
    if float(x.min()) == top:  # no spread: the distribution is a point mass
        return GEVFit(0.0, top, 0.0, int(x.size), p, top, top, degenerate=True)
    from scipy import stats  # here, not at import: scipy.stats costs a command about 0.6 s of start-up

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        c, loc, scale = stats.genextreme.fit(x)
    estimate = float(stats.genextreme.ppf(1 - p, c, loc=loc, scale=scale))
    if not math.isfinite(estimate):
        estimate = top
    return GEVFit(float(c), float(loc), float(scale), int(x.size), p, estimate, top)
