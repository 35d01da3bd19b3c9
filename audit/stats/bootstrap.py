"""Cluster bootstrap of a mean, with optional two-level (cluster, then sub-cluster) resampling.

Source: Davison & Hinkley (1997), *Bootstrap Methods and their Application*, §3.8 (hierarchical data);
Field & Welsh (2007), "Bootstrapping clustered data", JRSS-B 69(3): 369-390; and, for evals,
Miller (2024), "Adding Error Bars to Evals", arXiv:2411.00640 (cluster the items that share context).
"""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from audit.stats._inputs import StatsInputError, as_labels, as_vector, check_level
from audit.stats.estimates import Estimate


def bootstrap_means(
    values: np.ndarray,
    clusters: np.ndarray | None,
    inner: np.ndarray | None,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`n_boot` bootstrap replicates of the overall row mean (clusters/inner are integer codes or None)."""
    if clusters is None:
        clusters = np.arange(values.size)
    n_outer = int(clusters.max()) + 1
    if inner is None:
        # Multinomial counts per cluster = sampling clusters with replacement; the mean of the
        # resampled rows is sum(counts * cluster sums) / sum(counts * cluster sizes).
        sums = np.bincount(clusters, weights=values, minlength=n_outer)
        sizes = np.bincount(clusters, minlength=n_outer).astype(float)
        counts = rng.multinomial(n_outer, np.full(n_outer, 1.0 / n_outer), size=n_boot)
        return (counts @ sums) / (counts @ sizes)
    # Two levels: every time an outer cluster is drawn, its inner clusters are resampled afresh.
    counts = rng.multinomial(n_outer, np.full(n_outer, 1.0 / n_outer), size=n_boot)
    boot_sum = np.zeros(n_boot)
    boot_size = np.zeros(n_boot)
    for c in range(n_outer):
        rows = clusters == c
        _, inner_codes = np.unique(inner[rows], return_inverse=True)
        n_inner = int(inner_codes.max()) + 1
        sums = np.bincount(inner_codes, weights=values[rows], minlength=n_inner)
        sizes = np.bincount(inner_codes, minlength=n_inner).astype(float)
        draws = int(counts[:, c].sum())
        if draws == 0:
            continue
        inner_counts = rng.multinomial(n_inner, np.full(n_inner, 1.0 / n_inner), size=draws)
        owner = np.repeat(np.arange(n_boot), counts[:, c])
        np.add.at(boot_sum, owner, inner_counts @ sums)
        np.add.at(boot_size, owner, inner_counts @ sizes)
    return boot_sum / boot_size


def expansion(n_clusters: int) -> float:
    """Factor turning a normal quantile into Hesterberg's expanded one: sqrt(C/(C-1)) * t_{C-1} / z."""
    return float(np.sqrt(n_clusters / (n_clusters - 1)))


def percentile_interval(replicates: np.ndarray, level: float, n_clusters: int) -> tuple[float, float]:
    """Expanded percentile bootstrap interval (Hesterberg 2015, The American Statistician 69(4): 371-386, §5.3).

    The plain percentile interval under-covers with few clusters C (it is too narrow by about
    sqrt((C-1)/C) and uses z instead of t). The expanded interval takes the percentiles at tail
    alpha'/2 = Phi(-sqrt(C/(C-1)) * t_{1-alpha/2, C-1}), which fixes both for a mean.
    """
    crit = expansion(n_clusters) * float(sps.t.ppf(0.5 + level / 2, n_clusters - 1))
    tail = float(sps.norm.sf(crit))
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def percentile_p_value(replicates: np.ndarray, n_clusters: int) -> float:
    """Two-sided p-value against 0 that inverts `percentile_interval`: p < alpha iff the CI excludes 0.

    The smaller bootstrap tail mass at 0, p* = min(P*(θ* <= 0), P*(θ* >= 0)) (floored at
    1/n_boot: a bootstrap cannot show smaller), is mapped through the same expansion. Agreement
    with the CI is exact up to the quantile interpolation of one resample.
    """
    n = replicates.size
    tail = max(1, min(np.count_nonzero(replicates <= 0.0), np.count_nonzero(replicates >= 0.0))) / n
    t_stat = float(sps.norm.isf(min(tail, 0.5))) / expansion(n_clusters)
    return float(min(1.0, 2.0 * sps.t.sf(t_stat, n_clusters - 1)))


def cluster_bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | None,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    inner: Sequence[object] | np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """Mean of `values` with a cluster-bootstrap percentile CI.

    Assumes clusters are independent and identically distributed draws (e.g. seed pairs, the unit
    of replication in DESIGN.md §6); rows within a cluster may be arbitrarily correlated.
    `clusters=None` treats every row as its own cluster (the ordinary bootstrap).

    `inner` (optional) labels sub-clusters nested in clusters (e.g. questions within a seed pair):
    then each drawn cluster also has its sub-clusters resampled with replacement (two-level
    bootstrap). Davison & Hinkley (1997, §3.8) show this over-states the variance a little
    (conservative) when clusters are few; resampling the outer level only (the default) is the
    recommended choice when outer clusters are many enough (>= ~10).

    The point estimate is the plain mean of all rows (cluster means weighted by cluster size).
    The CI is Hesterberg's expanded percentile interval (see `percentile_interval`), so it keeps
    near-nominal coverage down to ~10 clusters; with < 5 clusters it is close to the bootstrap
    range and wide, as it should be. The p-value (against 0) inverts the same interval.
    """
    vals = as_vector(values, "values", min_len=2)
    if n_boot < 100:
        raise StatsInputError(f"n_boot={n_boot} is too small for a percentile CI; use at least 1000")
    check_level(level)
    codes = None if clusters is None else as_labels(clusters, "clusters", vals.size)
    inner_codes = None
    if inner is not None:
        if codes is None:
            raise StatsInputError("inner sub-clusters need outer clusters; pass clusters= as well")
        inner_codes = as_labels(inner, "inner", vals.size)
    n_clusters = vals.size if codes is None else int(codes.max()) + 1
    if n_clusters < 2:
        raise StatsInputError("cluster bootstrap needs at least 2 clusters; pass clusters=None or collect more seeds")
    reps = bootstrap_means(vals, codes, inner_codes, n_boot, np.random.default_rng(seed))
    low, high = percentile_interval(reps, level, n_clusters)
    scheme = "bootstrap" if codes is None else ("two-level cluster bootstrap" if inner is not None else "cluster bootstrap")
    return Estimate(
        value=float(vals.mean()),
        ci_low=low,
        ci_high=high,
        n=int(vals.size),
        p_value=percentile_p_value(reps, n_clusters),
        method=f"{scheme} expanded percentile, {n_boot} resamples, seed {seed}",
        n_clusters=None if codes is None else n_clusters,
        level=level,
    )


def replicate_bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    replicates: Sequence[object],
    questions: Sequence[object],
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Mean over (replicate, question) rows with the CI DESIGN.md §6 asks for.

    The replicate (seed pair) is the unit of replication: with two or more, seed pairs are resampled
    and questions within each (two-level). With a single seed pair the seed-to-seed variance cannot
    be estimated, so questions are the clusters and the method string says so.
    """
    replicates = [repr(r) for r in replicates]  # labels may be tuples such as (dataset seed, training seed)
    if len(set(replicates)) >= 2:
        return cluster_bootstrap_mean(values, replicates, n_boot=n_boot, seed=seed, inner=questions)
    est = cluster_bootstrap_mean(values, questions, n_boot=n_boot, seed=seed)
    return replace(est, method=est.method + " (one seed pair: questions only, seed variance not estimable)")
