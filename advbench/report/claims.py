"""Check a paper's headline claims (:class:`~advbench.papers.recipes.Claim`) on a measured paper grid.

Every accuracy (or error) cell is a proportion measured on ``n`` test images, so its noise level is the binomial
standard error ``sqrt(p (1 - p) / n)`` (in points: times 100). With several seeds the cell is their mean, and its
standard error is the larger of the pooled binomial one and the seeds' sample std / sqrt(seeds). A Sum column
(SAT's Clean + Adv) adds a clean and a robust accuracy measured on the same first images: an image robust under
attack is also classified correctly clean (the attack starts from it), so the two indicators covary by
``p_adv (1 - p_clean)`` per shared image, which the variance of the sum includes. Two rows are separate models, so
the standard error of a difference of two cells is ``sqrt(se_a**2 + se_b**2)``.

A claim *agrees* when every difference it states has the paper's sign and is larger than :data:`Z` standard
errors, *disagrees* when one has the opposite sign by more than :data:`Z` standard errors, and is *within noise*
otherwise; it is *not measured* when a cell it needs is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from advbench.papers.recipes import Claim, ColumnRecipe

if TYPE_CHECKING:
    from advbench.report.paper_grids import PaperGrid

#: a difference counts when it is larger than Z standard errors (two-sided 95%): scipy.stats.norm.ppf(0.975), written
#: out (tested) so that a report does not import scipy.stats (about 0.6 s)
Z = 1.959963984540054
VERDICTS = ("agrees", "disagrees", "within noise", "not measured")


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim: ``difference`` (points, positive = the paper's direction) and its standard error
    ``se`` for the comparison that decides it (the closest competitor of a max/min claim)."""

    claim: Claim
    verdict: str
    detail: str
    difference: float | None = None
    se: float | None = None

    def line(self) -> str:
        return f"{self.verdict}: {self.claim.text} — {self.detail}"


def _binomial_var(p: float, n: int) -> float:
    p = min(max(p, 0.0), 1.0)
    return p * (1.0 - p) / n


def _seed_se(values: list[float]) -> float:
    """Standard error of the mean over seeds from their sample std (0 with one seed), in points."""
    k = len(values)
    if k < 2:
        return 0.0
    mean = sum(values) / k
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1)) / math.sqrt(k)


def _pooled(grid: PaperGrid, row: str, col: str) -> tuple[float, int] | None:
    """(proportion, images) of a cell measured on counted images, pooled over seeds; None when not counted."""
    values, counts = grid.values.get((row, col), []), grid.counts.get((row, col), [])
    if not values or len(counts) != len(values) or min(counts) <= 0:
        return None
    return sum(values) / len(values) / 100.0, sum(counts)


def cell_se(grid: PaperGrid, row: str, col: str) -> float | None:
    """The standard error (points) of one measured cell; None when the cell is empty or its noise is unknown (a
    measurement or a statistic, not a proportion of counted images)."""
    values = grid.values.get((row, col), [])
    if not values:
        return None
    spec = grid.recipe.columns.get(col) if grid.recipe else None
    if isinstance(spec, ColumnRecipe) and spec.transform == "sum":
        var = _sum_var(grid, row, spec)
    else:
        pooled = _pooled(grid, row, col)
        var = None if pooled is None else _binomial_var(*pooled)
    if var is None:
        return None
    return max(100.0 * math.sqrt(var), _seed_se(values))


def _sum_var(grid: PaperGrid, row: str, spec: ColumnRecipe) -> float | None:
    """Variance (proportion units) of a sum of accuracy columns, with the clean/robust covariance of shared images;
    two parts that are both attacks get the Cauchy-Schwarz bound (the largest covariance they can have)."""
    assert grid.recipe is not None
    parts = []
    for col in spec.parts:
        pooled = _pooled(grid, row, col)
        part = grid.recipe.columns.get(col)
        if pooled is None or not isinstance(part, ColumnRecipe):
            return None
        parts.append((pooled[0], pooled[1], part.attack == "Clean" and part.transform == "acc"))
    var = sum(_binomial_var(p, n) for p, n, _ in parts)
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            (pi, ni, ci), (pj, nj, cj) = parts[i], parts[j]
            if ci != cj:  # one clean, one robust accuracy: cov of the indicators = p_robust (1 - p_clean)
                p_clean, p_robust = (pi, pj) if ci else (pj, pi)
                var += 2.0 * p_robust * (1.0 - p_clean) / max(ni, nj)
            else:
                var += 2.0 * math.sqrt(_binomial_var(pi, ni) * _binomial_var(pj, nj))
    return var


def _compare(grid: PaperGrid, a: str, b: str, col: str, sign: float) -> tuple[float, float | None]:
    """(signed difference a - b in points, its standard error) of two measured cells."""
    ma, mb = grid.mean_std(a, col)[0], grid.mean_std(b, col)[0]
    assert ma is not None and mb is not None
    sa, sb = cell_se(grid, a, col), cell_se(grid, b, col)
    se = None if sa is None or sb is None else math.sqrt(sa ** 2 + sb ** 2)
    return sign * (ma - mb), se


def _verdict(diff: float, se: float | None) -> str:
    if se is None or se == 0.0:  # noise unknown (or none): the sign decides
        return "agrees" if diff > 0 else ("disagrees" if diff < 0 else "within noise")
    if diff > Z * se:
        return "agrees"
    if diff < -Z * se:
        return "disagrees"
    return "within noise"


def _pm(diff: float, se: float | None) -> str:
    diff = diff + 0.0 if round(diff, 2) != 0 else 0.0  # no "-0.00"
    return f"{diff:+.2f}" + (f" ± {se:.2f} (SE)" if se is not None else " (noise unknown)")


def evaluate_claim(grid: PaperGrid, claim: Claim) -> ClaimResult:
    """The verdict on ``claim`` from the measured cells of ``grid``."""
    col, row = claim.column, claim.row
    measured = {r for r in grid.layout.rows if grid.mean_std(r, col)[0] is not None}
    if row not in measured:
        return ClaimResult(claim, "not measured", f"no measured value for {row!r} in column {col!r}")
    if claim.kind in ("greater", "less"):
        other = claim.other
        assert other is not None
        if other not in measured:
            return ClaimResult(claim, "not measured", f"no measured value for {other!r} in column {col!r}")
        diff, se = _compare(grid, row, other, col, 1.0 if claim.kind == "greater" else -1.0)
        m, o = grid.mean_std(row, col)[0], grid.mean_std(other, col)[0]
        detail = (f"{col}: {row} {m:.2f} vs {other} {o:.2f}, difference in the paper's direction {_pm(diff, se)}")
        return ClaimResult(claim, _verdict(diff, se), detail, diff, se)
    sign = 1.0 if claim.kind == "max" else -1.0
    pool = [r for r in (claim.among or grid.layout.rows) if r != row]
    rivals = [r for r in pool if r in measured]
    missing = [r for r in pool if r not in measured]
    if not rivals:
        return ClaimResult(claim, "not measured", f"no other row measured in column {col!r}")
    compared = [(r, *_compare(grid, row, r, col, sign)) for r in rivals]
    verdicts = [_verdict(d, s) for _, d, s in compared]
    verdict = ("disagrees" if "disagrees" in verdicts else "agrees" if all(v == "agrees" for v in verdicts)
               else "within noise")

    def z(item: tuple[str, float, float | None]) -> float:
        d, s = item[1], item[2]
        return d / s if s else (math.copysign(math.inf, d) if d else 0.0)

    closest = min(compared, key=z)  # the comparison nearest to (or furthest past) contradicting the claim
    m = grid.mean_std(row, col)[0]
    word = "highest" if sign > 0 else "lowest"
    best = (max if sign > 0 else min)([row, *rivals], key=lambda r: grid.mean_std(r, col)[0] or 0.0)
    detail = (f"{col}: {row} {m:.2f}; closest rival {closest[0]} {grid.mean_std(closest[0], col)[0]:.2f}, margin in "
              f"the paper's direction {_pm(closest[1], closest[2])}; {word} measured: {best}")
    if missing:
        detail += f"; not measured: {', '.join(missing)}"
    return ClaimResult(claim, verdict, detail, closest[1], closest[2])


def evaluate_claims(grid: PaperGrid) -> list[ClaimResult]:
    """The verdict on every claim of the grid's recipe (none without a recipe or claims)."""
    if grid.recipe is None:
        return []
    return [evaluate_claim(grid, c) for c in grid.recipe.claims]


def claims_text(results: list[ClaimResult]) -> list[str]:
    """The lines ``report --grid --paper`` prints under the grid (empty when the table states no claim)."""
    if not results:
        return []
    head = (f"Claims (the paper's headline orderings; noise: standard error sqrt(p(1-p)/n) of each cell from its n "
            f"test images, combined for a difference; 'within noise' = within {Z:.2f} SE):")
    return [head, *(f"- {r.line()}" for r in results)]
