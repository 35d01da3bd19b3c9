"""TOST equivalence test ("no effect" within a declared margin, DESIGN.md §6).

Source: Schuirmann (1987), "A comparison of the two one-sided tests procedure and the power
approach for assessing the equivalence of average bioavailability", J. Pharmacokinet. Biopharm.
15(6): 657-680; Lakens (2017), "Equivalence tests", Soc. Psychol. Personal. Sci. 8(4): 355-362.
Agrees with statsmodels.stats.weightstats.ttost_paired (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from audit.stats._inputs import StatsInputError, as_labels, as_vector, cluster_means


@dataclass(frozen=True)
class EquivalenceResult:
    """Outcome of a TOST equivalence test of a mean difference against [margin_low, margin_high]."""

    estimate: float
    """Mean difference (mean of cluster means when clusters are given)."""
    margin_low: float
    """Lower equivalence bound (declared before looking at the data)."""
    margin_high: float
    """Upper equivalence bound."""
    p_lower: float
    """One-sided p of H0: mean <= margin_low."""
    p_upper: float
    """One-sided p of H0: mean >= margin_high."""
    p_value: float
    """Overall TOST p = max(p_lower, p_upper)."""
    ci_low: float
    """Lower end of the (1 - 2*alpha) t interval; equivalence iff the whole interval is inside the margins."""
    ci_high: float
    """Upper end of the (1 - 2*alpha) t interval."""
    ci_level: float
    """1 - 2*alpha, e.g. 0.90 for alpha = 0.05."""
    alpha: float
    """Level of each one-sided test."""
    n: int
    """Number of rows."""
    n_clusters: int | None
    """Number of clusters averaged before testing, if clusters were given."""
    df: int
    """Degrees of freedom of the t tests."""
    equivalent: bool
    """True iff p_value < alpha (both one-sided nulls rejected)."""


def tost(
    diff_values: Sequence[float] | np.ndarray,
    margin: float | tuple[float, float],
    clusters: Sequence[object] | np.ndarray | None = None,
    alpha: float = 0.05,
) -> EquivalenceResult:
    """Two one-sided t tests that the mean of `diff_values` lies inside the equivalence margin.

    `diff_values` are paired differences (e.g. adapter - base per prompt). `margin` is either
    delta > 0 (bounds [-delta, +delta]) or a (low, high) pair with low < high; declare it before
    seeing the data. With `clusters`, differences are first averaged within clusters and the t
    tests use the C cluster means (C-1 df), which assumes clusters are independent. Assumes the
    (cluster) means are roughly normal. "p > 0.05" in an ordinary test is not evidence of no
    effect; this is (Lakens 2017).
    """
    diffs = as_vector(diff_values, "diff_values", min_len=2)
    if not 0.0 < alpha < 0.5:
        raise StatsInputError(f"alpha must be in (0, 0.5) for TOST, got {alpha}")
    low, high = (-float(margin), float(margin)) if np.isscalar(margin) else map(float, margin)  # type: ignore[arg-type]
    if not low < high:
        raise StatsInputError(f"margin must be delta > 0 or (low, high) with low < high, got {margin!r}")
    n_clusters = None
    sample = diffs
    if clusters is not None:
        codes = as_labels(clusters, "clusters", diffs.size)
        n_clusters = int(codes.max()) + 1
        if n_clusters < 2:
            raise StatsInputError("TOST with clusters needs at least 2 clusters; pass clusters=None or add seeds")
        sample = cluster_means(diffs, codes)
    mean = float(sample.mean())
    se = float(sample.std(ddof=1) / np.sqrt(sample.size))
    df = sample.size - 1
    if se == 0.0:
        inside = low < mean < high
        p_lower = p_upper = 0.0 if inside else 1.0
    else:
        p_lower = float(sps.t.sf((mean - low) / se, df))
        p_upper = float(sps.t.cdf((mean - high) / se, df))
    half = float(sps.t.ppf(1.0 - alpha, df)) * se
    p_value = max(p_lower, p_upper)
    return EquivalenceResult(
        estimate=mean, margin_low=low, margin_high=high, p_lower=p_lower, p_upper=p_upper,
        p_value=p_value, ci_low=mean - half, ci_high=mean + half, ci_level=1.0 - 2.0 * alpha,
        alpha=alpha, n=int(diffs.size), n_clusters=n_clusters, df=df, equivalent=p_value < alpha,
    )
