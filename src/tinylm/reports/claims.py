"""The paper's claims 1-3 judged: the verdict rules ("shows", "not established", "does not show") that
gap_finding, size_finding and overlap_finding apply to the cells of tinylm.analysis.records; the report that shows
them is tinylm.reports.experiments.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from scipy import stats

from tinylm.analysis.overlap import LineFit
from tinylm.analysis.records import Cell
from tinylm.analysis.stats import MeanCI, mean_ci
from tinylm.reports.render import fmt_mean_ci

# Below this span of overlap (points) a gap-on-overlap fit across nested sizes is the size effect again.
MIN_OVERLAP_SPAN = 5.0
# Verdicts of the findings; the report's summary groups tasks by them.
SHOWS, UNCLEAR, NO, NA = "shows", "not established", "does not show", "no data"


def gap_finding(label: str, gap: MeanCI, confidence: float = 0.95) -> tuple[str, str]:
    """Claim 1 for one point: (verdict, sentence). Shows only when the gap's CI lies above 0."""
    pct = f"{confidence:.0%}"
    g = fmt_mean_ci(gap, signed=True, unit=" accuracy points")
    if not gap.has_ci:
        if gap.mean > 0:
            return UNCLEAR, (f"{label}: the gap is {g}; one seed gives no confidence interval, so the effect is "
                             "not established.")
        return NO, f"{label}: the effect does not show: the gap is {g}, not positive."
    if gap.low > 0:
        return SHOWS, f"{label}: pre-training helps: the gap is {g} and its {pct} CI excludes 0."
    if gap.high < 0:
        return NO, (f"{label}: the effect does not show: the gap is {g}; the from-scratch model is better "
                    f"(the {pct} CI lies below 0).")
    return NO, f"{label}: the effect does not show: the gap is {g} and its {pct} CI includes 0."


def size_finding(task: str, cells: Sequence[Cell], slopes: Mapping[int, float],
                 confidence: float = 0.95) -> tuple[str, str]:
    """Claim 2 for one task: one slope of gap on articles per pre-training seed (analysis.records.seed_slopes),
    tested against 0 over the seeds (one-sample t); shows when the mean slope is > 0 and the test is significant."""
    sizes = [c.articles for c in cells]
    if len(sizes) < 2:
        return NA, f"{task}: only one pre-training size ({sizes[0]:,} articles); no trend can be measured."
    means = [100 * c.gap.mean for c in cells]
    steps = "rises at every step" if all(b > a for a, b in itertools.pairwise(means)) else "does not rise at every step"
    head = (f"{task}: the mean gap goes from {means[0]:+.1f} points at {sizes[0]:,} articles to {means[-1]:+.1f} "
            f"at {sizes[-1]:,} and {steps}")
    per_1000 = [1e5 * v for v in slopes.values()]  # gap points per 1,000 articles
    if len(per_1000) < 2:
        return UNCLEAR, (f"{head}; {len(per_1000)} pre-training seed(s) carry a slope, and a trend needs two or "
                         "more to be tested, so growth with size is not established.")
    slope = mean_ci(per_1000, confidence)
    alpha = 1 - confidence
    # Every seed with the very same slope: no spread, so the t statistic is infinite (p = 0) unless the slope is 0.
    p = float(stats.ttest_1samp(per_1000, 0.0).pvalue) if slope.half_width > 0 else float(slope.mean == 0)
    trend = (f"per-seed slopes: {slope.mean:+.2f} points per 1,000 articles, {confidence:.0%} CI {slope.low:+.2f} to "
             f"{slope.high:+.2f} over {slope.n} pre-training seeds, t-test p = {p:.2g}")
    if slope.mean <= 0:
        return NO, f"{head} ({trend}). The effect does not show: the gap does not grow with pre-training size here."
    if p < alpha:
        return SHOWS, f"{head} ({trend}). The gap grows with pre-training size."
    return UNCLEAR, (f"{head} ({trend}). The upward trend is not statistically clear (p ≥ {alpha:.2g}), so growth "
                     "with size is not established by these runs.")


def overlap_finding(measure: str, fit: LineFit | None, n_points: int, confidence: float = 0.95,
                    span: float | None = None) -> tuple[str, str]:
    """Claim 3: shows when r >= 0.5 and the CI of r lies above 0; a low or negative r does not show. Whatever r is,
    a `span` (points of overlap between the points' extremes) below MIN_OVERLAP_SPAN gives "not established": such a
    fit cannot test the claim."""
    if n_points < 3:
        return NA, (f"Only {n_points} (task, size) point(s) carry {measure} overlap values; at least 3 are needed "
                    "to judge a correlation.")
    if fit is None:
        return NA, f"The {measure} overlap is the same at every point, so no relation to the gap can be measured."
    if math.isnan(fit.r):
        return NO, f"The gap is the same at every point, so the effect does not show (no correlation with {measure})."
    ci = f"{confidence:.0%} CI {fit.r_ci[0]:.2f} to {fit.r_ci[1]:.2f}" if fit.r_ci else "too few points for a CI"
    desc = f"r = {fit.r:.2f} ({ci}), slope {fit.slope:+.2f} gap points per overlap point, {fit.n} points"
    if span is not None and span < MIN_OVERLAP_SPAN:
        return UNCLEAR, (f"The {measure} overlap spans only {span:.2f} points across these points, and in nested "
                         "subsets it rises with the pre-training size, so this fit measures the size effect (claim 2) "
                         f"or nothing, not the overlap's ({desc}). Claim 3 is not tested here: it needs the overlap "
                         "varied at a fixed size.")
    if fit.r <= 0:
        return NO, f"The effect does not show: the gap does not grow with {measure} overlap ({desc})."
    established = fit.r_ci is not None and fit.r_ci[0] > 0
    if established and fit.r >= 0.5:
        return SHOWS, f"The gap grows with {measure} overlap ({desc})."
    if established:
        return NO, (f"The gap is only weakly correlated with {measure} overlap ({desc}); the near-linear growth the "
                    "paper reports does not show.")
    if fit.r < 0.5:
        return NO, f"The effect does not show: the correlation of the gap with {measure} overlap is low ({desc})."
    return UNCLEAR, (f"The gap is positively correlated with {measure} overlap ({desc}), but the CI of r includes 0 or "
                     "cannot be computed, so the effect is not established by these runs.")
