"""Three-outcome decisions at the unit of replication: an effect, no effect of interest, or undecided at this
power (with the minimum detectable effect and the replicates that would decide it).

The data are one value per independent replicate (a seed pair's mean over questions: questions share a
student, so they are not independent replicates, DESIGN.md §6). With k replicates the tests are one-sample t
tests with k - 1 df, exact under normality of the replicate means for any k >= 2, so valid for few clusters,
unlike a cluster bootstrap over 2-3 clusters, whose percentile interval cannot be wider than the replicate
means' range.

Sources: the four outcomes of a significance test combined with an equivalence test against a smallest effect
of interest (Lakens, Scheel & Isager 2018, "Equivalence testing for psychological research: a tutorial",
AMPPS 1(2):259-269); TOST (audit.stats.equivalence); the minimum detectable effect of a t test,
(t_{1-alpha/2, df} + t_{power, df}) * se (the normal-approximation power formula with t quantiles; Cohen 1988 §2.3,
Julious 2004 "Sample sizes for clinical trials with normal data", Stat. Med. 23:1921).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from audit.stats._inputs import StatsInputError, as_vector
from audit.stats.equivalence import EquivalenceResult, tost
from audit.stats.estimates import Estimate

Outcome = Literal["effect", "no effect", "undecided"]
MAX_REPLICATES = 100
"""Beyond this many replicates "how many would decide it" is reported as "more than 100"."""


@dataclass(frozen=True)
class Decision:
    """Whether replicate means show a positive effect, no effect of interest, or neither at this power."""

    outcome: Outcome
    """effect: the t interval lies above 0 and the TOST does not put the effect inside the smallest effect;
    no effect: the TOST puts it inside +-smallest_effect (or it is significantly negative); undecided: neither."""
    estimate: Estimate
    """Mean of the replicate means with its (1 - alpha) t interval and two-sided p (k - 1 df)."""
    equivalence: EquivalenceResult | None
    """TOST against +-smallest_effect on the replicate means (None with fewer than 2 replicates)."""
    smallest_effect: float
    """The smallest effect of interest, declared before the data (its rule: `smallest_effect`)."""
    mde: float
    """Minimum detectable effect at this number of replicates and their spread (power `power`); inf below 2."""
    replicates_needed: int | None
    """Fewest replicates whose MDE is at most `smallest_effect` at the measured spread (None: spread unknown,
    fewer than 2 replicates; MAX_REPLICATES + 1: more than MAX_REPLICATES)."""
    power: float
    alpha: float

    @property
    def n_replicates(self) -> int:
        return self.estimate.n

    def describe(self) -> str:
        """What was measured and, when undecided, what would decide it."""
        e = self.estimate
        ci = f"[{e.ci_low:+.4f}, {e.ci_high:+.4f}]" if math.isfinite(e.ci_low) else "(no interval)"
        if math.isfinite(e.ci_low) and abs(self.alpha - 0.05) > 1e-12:  # a look of a sequential design
            ci += f" ({1 - self.alpha:.1%} interval)"
        text = (f"{e.value:+.4f} {ci} over {self.n_replicates} seed pair(s); smallest effect of interest "
                f"{self.smallest_effect:.4f}")
        if self.outcome != "undecided":
            return text
        need = ("at least 2 seed pairs to estimate their spread" if self.replicates_needed is None else
                f"more than {MAX_REPLICATES} seed pairs" if self.replicates_needed > MAX_REPLICATES else
                f"about {self.replicates_needed} seed pairs")
        mde = "undefined" if not math.isfinite(self.mde) else f"{self.mde:.4f}"
        return f"{text}; undecided at this power: minimum detectable effect {mde} ({self.power:.0%} power); {need} would decide it"


def smallest_effect(base_rate: float, relative: float, floor: float) -> float:
    """The smallest effect of interest of a trait whose base rate is `base_rate`: a shift of `relative` times
    that rate, and never less than `floor` (a rate near 0 would otherwise make any noise interesting)."""
    if relative <= 0 or floor <= 0:
        raise StatsInputError(f"relative and floor must be > 0, got {relative} and {floor}")
    return max(floor, relative * max(base_rate, 0.0))


def _t_sum(df: int, alpha: float, power: float) -> float:
    return float(sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df))


def minimum_detectable_effect(sd: float, k: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The effect a two-sided one-sample t test on k replicates of spread `sd` detects with `power`."""
    if k < 2:
        return math.inf
    return _t_sum(k - 1, alpha, power) * sd / math.sqrt(k)


def replicates_needed(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Fewest replicates (>= 2) whose minimum detectable effect at spread `sd` is at most `effect`."""
    if not math.isfinite(sd):
        return None
    for k in range(2, MAX_REPLICATES + 1):
        if minimum_detectable_effect(sd, k, alpha, power) <= effect:
            return k
    return MAX_REPLICATES + 1


def decide_effect(replicate_means: Sequence[float] | np.ndarray, smallest: float, alpha: float = 0.05,
                  power: float = 0.8) -> Decision:
    """Decide a positive effect from one value per independent replicate (e.g. trait minus control per seed pair)."""
    values = as_vector(replicate_means, "replicate_means", min_len=1)
    if smallest <= 0:
        raise StatsInputError(f"the smallest effect of interest must be > 0, got {smallest}")
    k = int(values.size)
    mean = float(values.mean())
    if k < 2:
        estimate = Estimate(mean, -math.inf, math.inf, k, None, "one seed pair: no interval", k, 1 - alpha)
        return Decision("undecided", estimate, None, smallest, math.inf, None, power, alpha)
    sd = float(values.std(ddof=1))
    se = sd / math.sqrt(k)
    half = float(sps.t.ppf(1 - alpha / 2, k - 1)) * se
    p = float(sps.ttest_1samp(values, 0.0).pvalue) if se > 0 else (1.0 if mean == 0 else 0.0)
    estimate = Estimate(mean, mean - half, mean + half, k, p, f"t on {k} seed-pair means, df={k - 1}", k, 1 - alpha)
    equivalence = tost(values, smallest, alpha=alpha)
    if equivalence.equivalent or estimate.ci_high < 0:
        outcome: Outcome = "no effect"
    elif estimate.ci_low > 0:
        outcome = "effect"
    else:
        outcome = "undecided"
    return Decision(outcome, estimate, equivalence, smallest, minimum_detectable_effect(sd, k, alpha, power),
                    replicates_needed(sd, smallest, alpha, power), power, alpha)
