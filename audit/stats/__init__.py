"""Statistics the audit's verdicts rest on (DESIGN.md §6): pure functions on numpy/scipy/statsmodels.

Every function's docstring states its assumptions and cites its source.
"""

from audit.stats._inputs import StatsInputError
from audit.stats.bootstrap import cluster_bootstrap_mean, replicate_bootstrap_mean
from audit.stats.equivalence import EquivalenceResult, tost
from audit.stats.estimates import Estimate
from audit.stats.inverted_u import (
    InterruptedSlopes,
    LindMehlumResult,
    TwoLinesResult,
    lind_mehlum,
    two_lines_test,
)
from audit.stats.multiplicity import benjamini_hochberg, holm
from audit.stats.paired import paired_difference

__all__ = [
    "Estimate",
    "EquivalenceResult",
    "InterruptedSlopes",
    "LindMehlumResult",
    "StatsInputError",
    "TwoLinesResult",
    "benjamini_hochberg",
    "cluster_bootstrap_mean",
    "holm",
    "lind_mehlum",
    "paired_difference",
    "replicate_bootstrap_mean",
    "tost",
    "two_lines_test",
]
