"""The `Estimate` record: one number with its n, confidence interval and method (DESIGN.md §6)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    Every number the audit reports carries its n and a CI (DESIGN.md §6).
    """

    value: float
    """The point estimate (e.g. a mean or a mean paired difference)."""
    ci_low: float
    """Lower end of the confidence interval."""
    ci_high: float
    """Upper end of the confidence interval."""
    n: int
    """Number of observations (rows) behind the estimate."""
    p_value: float | None = None
    """Two-sided p-value against zero, when the method provides one."""
    method: str = ""
    """How the interval (and p-value) was obtained, human-readable, e.g. 'cluster bootstrap percentile 95%'."""
    n_clusters: int | None = None
    """Number of independent clusters (e.g. seed pairs) when the method resamples or averages clusters."""
    level: float = 0.95
    """Confidence level of [ci_low, ci_high]."""

    def __str__(self) -> str:
        clusters = f", {self.n_clusters} clusters" if self.n_clusters is not None else ""
        p = f", p={self.p_value:.3g}" if self.p_value is not None else ""
        return (
            f"{self.value:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}] "
            f"({self.level:.0%} CI, n={self.n}{clusters}{p})"
        )
