"""TOST, Holm and Benjamini-Hochberg against statsmodels, scipy and the papers' worked examples."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from audit.stats import StatsInputError, benjamini_hochberg, holm, tost

# Benjamini & Hochberg (1995), §4: 15 p-values from a trial; at q = .05, BH rejects the 4 smallest
# while the Bonferroni-type procedures reject 3.
BH_1995 = [0.0201, 0.0001, 0.0004, 0.0019, 0.0095, 0.0278, 0.0298, 0.0344, 0.0459,
           0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.0000]


def test_tost_matches_statsmodels_ttost_paired():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 35)
    b = a + rng.normal(0.05, 0.4, 35)
    res = tost(a - b, (-0.2, 0.25))
    p, lower, upper = ttost_paired(a, b, -0.2, 0.25)
    assert res.p_lower == pytest.approx(lower[1]) and res.p_upper == pytest.approx(upper[1])
    assert res.p_value == pytest.approx(p) and res.df == 34


def test_tost_hand_computed_example():
    # diffs mean 0.1, sd 0.5 (n = 25, se = 0.1), margin 0.4: t_low = 5, t_high = -3 with 24 df.
    base = np.r_[np.ones(12), -np.ones(12), 0.0]
    diffs = 0.1 + base * 0.5 / base.std(ddof=1)
    res = tost(diffs, 0.4)
    assert res.p_lower == pytest.approx(sps.t.sf(5.0, 24))
    assert res.p_upper == pytest.approx(sps.t.cdf(-3.0, 24))
    assert res.equivalent and res.ci_level == pytest.approx(0.90)
    assert (res.ci_low, res.ci_high) == pytest.approx((0.1 - sps.t.ppf(0.95, 24) * 0.1, 0.1 + sps.t.ppf(0.95, 24) * 0.1))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(-0.6, 0.6), st.floats(0.05, 0.8))
def test_tost_equivalent_iff_ci_inside_margin(seed, shift, margin):
    diffs = np.random.default_rng(seed).normal(shift, 1.0, 30)
    res = tost(diffs, margin)
    assert res.equivalent == (-margin < res.ci_low and res.ci_high < margin)
    assert res.p_value == max(res.p_lower, res.p_upper)


def test_tost_does_not_call_a_noisy_null_result_equivalent():
    # p > .05 in an ordinary t test is not evidence of no effect.
    diffs = np.random.default_rng(4).normal(0.0, 1.0, 8)
    assert sps.ttest_1samp(diffs, 0).pvalue > 0.05
    assert not tost(diffs, 0.2).equivalent


def test_tost_with_clusters_uses_cluster_means():
    labels = np.repeat(np.arange(5), 4)
    diffs = np.random.default_rng(5).normal(0, 0.1, 20)
    res = tost(diffs, 0.5, clusters=labels)
    means = np.bincount(labels, weights=diffs) / 4
    assert res.n_clusters == 5 and res.df == 4 and res.estimate == pytest.approx(means.mean())


@pytest.mark.parametrize("margin", [0.0, -0.1, (0.2, 0.1)])
def test_tost_rejects_bad_margin(margin):
    with pytest.raises(StatsInputError, match="margin"):
        tost([0.1, 0.2, 0.3], margin)


def test_bh_reproduces_benjamini_hochberg_1995_example():
    adjusted = benjamini_hochberg(BH_1995)
    rejected = sorted(np.asarray(BH_1995)[adjusted <= 0.05])
    assert rejected == [0.0001, 0.0004, 0.0019, 0.0095]
    assert np.sum(holm(BH_1995) <= 0.05) == 3


def test_holm_reproduces_textbook_example():
    # Holm (1979) step-down with 4 tests at .05: thresholds .0125, .0167, .025, .05.
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert list(holm(p) <= 0.05) == [True, False, False, True]


def holm_by_definition(p):
    # Holm (1979): the i-th smallest is rejected at level a iff p_(j) <= a / (m - j + 1) for all j <= i.
    p = np.asarray(p)
    m, order = p.size, np.argsort(p, kind="stable")
    steps = np.array([min(1.0, max((m - j) * p[order[j]] for j in range(i + 1))) for i in range(m)])
    out = np.empty(m)
    out[order] = steps
    return out


@pytest.mark.parametrize("seed", range(5))
def test_adjustments_match_statsmodels_multipletests(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 0.2, 12) ** 2, 3)  # rounding makes ties
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_adjustments_match_definitions_and_are_ordered(pvals):
    h, bh = holm(pvals), benjamini_hochberg(pvals)
    np.testing.assert_allclose(h, holm_by_definition(pvals))
    np.testing.assert_allclose(bh, sps.false_discovery_control(pvals, method="bh"), atol=1e-12)
    p = np.asarray(pvals)
    assert np.all(h >= p - 1e-12) and np.all(bh >= p - 1e-12) and np.all(h <= 1) and np.all(h >= bh - 1e-12)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(bh[order]) >= -1e-12) and np.all(np.diff(h[order]) >= -1e-12)


def test_adjustments_handle_empty_and_reject_bad_pvalues():
    assert holm([]).size == 0 and benjamini_hochberg([]).size == 0
    with pytest.raises(StatsInputError, match=r"\[0, 1\]"):
        holm([0.1, 1.2])
    with pytest.raises(StatsInputError, match=r"\[0, 1\]"):
        benjamini_hochberg([np.nan])
