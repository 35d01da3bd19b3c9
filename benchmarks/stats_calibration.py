"""Simulation study of the statistics the verdicts rest on (seeded; prints one table).

The tests in tests/test_stats_*.py assert bounds on these numbers; this script prints the numbers
themselves, so the closing notes and docs quote something anyone can rerun:

    .venv/bin/python benchmarks/stats_calibration.py
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from tabulate import tabulate

from audit.stats import cluster_bootstrap_mean, lind_mehlum, two_lines_test


def bootstrap_coverage(n_sets: int = 1000) -> float:
    """Share of 95% cluster-bootstrap CIs covering the true mean 0 (20 clusters x 10, ICC 0.5)."""
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(n_sets):
        labels = np.repeat(np.arange(20), 10)
        values = rng.normal(0, 1, 20)[labels] + rng.normal(0, 1, 200)
        est = cluster_bootstrap_mean(values, labels, n_boot=1000, seed=i)
        covered += est.ci_low <= 0 <= est.ci_high
    return covered / n_sets


def two_lines_power(n_sets: int = 200) -> float:
    """Inverted U of moderate size: y = -3(x-.5)^2 + N(0, .5^2), n = 100."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(n_sets):
        x = rng.uniform(0, 1, 100)
        r = two_lines_test(x, -3 * (x - 0.5) ** 2 + rng.normal(0, 0.5, 100))
        hits += r.significant and r.shape == "inverted_u"
    return hits / n_sets


def rank_power(n_sets: int = 100) -> float:
    """Ranks 1..512 on log2 scale, 20 rows per rank, peak at rank 32."""
    rng = np.random.default_rng(3)
    ranks = np.repeat(2.0 ** np.arange(10), 20)
    hits = 0
    for _ in range(n_sets):
        y = -0.04 * (np.log2(ranks) - 5) ** 2 + rng.normal(0, 0.5, ranks.size)
        r = two_lines_test(ranks, y, x_scale="log2")
        hits += r.significant and r.shape == "inverted_u"
    return hits / n_sets


def concave_monotone(n_sets: int = 300) -> tuple[float, float, float]:
    """y = log(x) + noise: (quadratic x^2 significant, two-lines says U, Lind-Mehlum says U)."""
    rng = np.random.default_rng(5)
    quad = two = lm = 0
    for _ in range(n_sets):
        x = rng.uniform(1, 100, 200)
        y = np.log(x) + rng.normal(0, 0.5, 200)
        fit = sm.OLS(y, np.column_stack([np.ones_like(x), x, x * x])).fit()
        quad += fit.params[2] < 0 and fit.pvalues[2] < 0.05
        two += two_lines_test(x, y).significant
        lm += lind_mehlum(x, y).significant
    return quad / n_sets, two / n_sets, lm / n_sets


def flat_false_positives(n_sets: int = 1000) -> float:
    rng = np.random.default_rng(0)
    return sum(
        two_lines_test(rng.uniform(0, 1, 100), rng.normal(0, 1, 100)).significant for _ in range(n_sets)
    ) / n_sets


def main() -> None:
    quad, two, lm = concave_monotone()
    rows = [
        ("two-lines power, moderate inverted U (n=100)", 200, two_lines_power()),
        ("two-lines power, log2 rank 1..512, peak 32", 100, rank_power()),
        ("log(x): quadratic x^2 term significant", 300, quad),
        ("log(x): two-lines declares a U", 300, two),
        ("log(x): Lind-Mehlum declares a U", 300, lm),
        ("flat noise: two-lines false positives", 1000, flat_false_positives()),
        ("cluster bootstrap 95% CI coverage", 1000, bootstrap_coverage()),
    ]
    print(tabulate(rows, headers=["simulation", "data sets", "rate"], floatfmt=".3f"))


if __name__ == "__main__":
    main()
