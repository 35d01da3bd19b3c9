"""Paired differences (a - b on the same prompts / seeds) with a CI and a paired test.

Sources: Student's paired t-test (scipy.stats.ttest_rel / ttest_1samp); cluster-level paired t on
cluster means (Donner & Klar 2000, *Design and Analysis of Cluster Randomization Trials*, §6.2);
paired bootstrap (Efron & Tibshirani 1993, §16.4; Miller 2024, arXiv:2411.00640, "paired differences").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats as sps

from audit.stats._inputs import StatsInputError, as_labels, as_vector, check_level, cluster_means
from audit.stats.bootstrap import bootstrap_means, percentile_interval, percentile_p_value
from audit.stats.estimates import Estimate


def t_interval(sample: np.ndarray) -> tuple[float, float, int, float]:
    """(mean, se, df, two-sided p against 0) for a one-sample t on `sample`."""
    mean = float(sample.mean())
    se = float(sample.std(ddof=1) / np.sqrt(sample.size))
    df = sample.size - 1
    p = float(sps.ttest_1samp(sample, 0.0).pvalue) if se > 0 else (1.0 if mean == 0 else 0.0)
    return mean, se, df, p


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | None = None,
    *,
    method: Literal["t", "bootstrap"] = "t",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Mean of the paired differences a - b with a CI and a two-sided paired test against 0.

    Row i of `a` and `b` must be the same unit measured twice (same prompt, same seeds; e.g.
    student vs control of the same seed pair, DESIGN.md §6).

    method="t": paired t-test. Assumes the differences (or, with `clusters`, the per-cluster mean
    differences) are independent and roughly normal. With clusters the test is a one-sample t on
    cluster means with C-1 df, and the estimate is the mean of cluster means (equal weight per
    cluster; identical to the row mean for balanced designs).

    method="bootstrap": (cluster) bootstrap of the mean difference with an expanded percentile CI
    (Hesterberg 2015); the p-value inverts that interval (see `bootstrap.percentile_p_value`). Assumes clusters
    (or rows) are i.i.d.; makes no normality assumption.
    """
    av = as_vector(a, "a", min_len=2)
    bv = as_vector(b, "b", min_len=2)
    if av.size != bv.size:
        raise StatsInputError(f"a and b must be paired row by row, got {av.size} and {bv.size} values")
    check_level(level)
    diff = av - bv
    codes = None if clusters is None else as_labels(clusters, "clusters", diff.size)
    n_clusters = None if codes is None else int(codes.max()) + 1
    if n_clusters is not None and n_clusters < 2:
        raise StatsInputError("a paired test needs at least 2 clusters; pass clusters=None or add seeds")
    if method == "t":
        sample = diff if codes is None else cluster_means(diff, codes)
        mean, se, df, p = t_interval(sample)
        half = float(sps.t.ppf(0.5 + level / 2, df)) * se
        unit = "rows" if codes is None else "cluster means"
        return Estimate(mean, mean - half, mean + half, int(diff.size), p,
                        f"paired t on {unit}, df={df}", n_clusters, level)
    if method == "bootstrap":
        if n_boot < 100:
            raise StatsInputError(f"n_boot={n_boot} is too small for a percentile CI; use at least 1000")
        reps = bootstrap_means(diff, codes, None, n_boot, np.random.default_rng(seed))
        units = diff.size if n_clusters is None else n_clusters
        low, high = percentile_interval(reps, level, units)
        scheme = "paired bootstrap" if codes is None else "paired cluster bootstrap"
        return Estimate(float(diff.mean()), low, high, int(diff.size), percentile_p_value(reps, units),
                        f"{scheme} expanded percentile, {n_boot} resamples, seed {seed}", n_clusters, level)
    raise StatsInputError(f"method must be 't' or 'bootstrap', got {method!r}")
