"""Three-outcome decisions on replicate means: effect, no effect of interest, undecided with what would decide it."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from audit.stats._inputs import StatsInputError
from audit.stats.decision import (
    MAX_REPLICATES,
    decide_effect,
    minimum_detectable_effect,
    replicates_needed,
    smallest_effect,
)


def test_a_clear_effect_an_equivalent_null_and_an_undecided_pair():
    effect = decide_effect([0.50, 0.55, 0.53], smallest=0.02)
    assert effect.outcome == "effect" and effect.estimate.ci_low > 0 and effect.n_replicates == 3
    null = decide_effect([0.001, -0.002, 0.0005, 0.0, -0.001], smallest=0.02)
    assert null.outcome == "no effect" and null.equivalence.equivalent
    wide = decide_effect([0.001, 0.02], smallest=0.02)  # two seed pairs: a t interval with 1 df
    assert wide.outcome == "undecided" and wide.replicates_needed > 2
    assert "undecided at this power" in wide.describe() and "seed pairs would decide it" in wide.describe()


def test_significant_but_smaller_than_the_smallest_effect_is_no_effect_of_interest():
    tiny = decide_effect([0.0010, 0.0011, 0.0009, 0.0010], smallest=0.01)
    assert tiny.estimate.ci_low > 0 and tiny.outcome == "no effect"


def test_a_significantly_negative_effect_is_no_positive_effect():
    assert decide_effect([-0.3, -0.31, -0.29], smallest=0.01).outcome == "no effect"


def test_one_replicate_is_undecided_and_says_two_are_needed():
    one = decide_effect([0.4], smallest=0.01)
    assert one.outcome == "undecided" and one.replicates_needed is None and math.isinf(one.mde)
    assert "at least 2 seed pairs" in one.describe()


def test_interval_and_p_are_the_one_sample_t_test_on_the_replicate_means():
    values = np.array([0.03, 0.05, 0.02, 0.06])
    d = decide_effect(values, smallest=0.01)
    test = sps.ttest_1samp(values, 0.0)
    ci = test.confidence_interval(0.95)
    assert d.estimate.p_value == pytest.approx(test.pvalue)
    assert (d.estimate.ci_low, d.estimate.ci_high) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize("k", [4, 6, 10])
def test_the_minimum_detectable_effect_has_about_the_stated_power(k):
    """At the MDE, the exact (noncentral t) power of the two-sided test is close to 80%."""
    sd = 0.1
    mde = minimum_detectable_effect(sd, k)
    df, crit = k - 1, sps.t.ppf(0.975, k - 1)
    power = sps.nct.sf(crit, df, mde / (sd / math.sqrt(k)))
    assert 0.75 < power < 0.85


def test_replicates_needed_is_the_first_count_whose_mde_reaches_the_effect():
    k = replicates_needed(0.1, 0.1)
    assert minimum_detectable_effect(0.1, k) <= 0.1 < minimum_detectable_effect(0.1, k - 1)
    assert replicates_needed(1.0, 0.001) == MAX_REPLICATES + 1
    assert replicates_needed(math.inf, 0.1) is None


def test_the_smallest_effect_scales_with_the_base_rate_above_a_floor():
    assert smallest_effect(0.006, relative=1.0, floor=0.01) == 0.01
    assert smallest_effect(0.30, relative=1.0, floor=0.01) == pytest.approx(0.30)
    with pytest.raises(StatsInputError):
        smallest_effect(0.1, relative=0.0, floor=0.01)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=8), st.floats(1e-3, 0.5))
def test_every_outcome_is_earned_by_its_interval(values, smallest):
    d = decide_effect(values, smallest)
    if d.outcome == "effect":
        assert d.estimate.ci_low > 0 and not d.equivalence.equivalent
    elif d.outcome == "no effect":
        assert d.equivalence.equivalent or d.estimate.ci_high < 0
    else:
        assert len(values) < 2 or (not d.equivalence.equivalent and d.estimate.ci_low <= 0 <= d.estimate.ci_high)
