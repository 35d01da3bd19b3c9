"""Two-lines and Lind-Mehlum on synthetic curves with known truth (seeded simulations), and the GAM smooth."""

import numpy as np
import pytest
import statsmodels.api as sm

from audit.stats import StatsInputError, lind_mehlum, two_lines_test
from audit.stats.inverted_u import interrupted_regression
from audit.stats.smoothing import cr_basis, fit_cr_smooth, place_knots


def inverted_u(rng, n=100, size=0.75):
    # Peak-to-end drop = `size`, noise SD 0.5.
    x = rng.uniform(0, 1, n)
    return x, -4 * size * (x - 0.5) ** 2 + rng.normal(0, 0.5, n)


def test_two_lines_detects_moderate_inverted_u():
    # Measured power: 0.875 (200 data sets, n = 100, drop of 1.5 noise SDs from peak to ends).
    rng = np.random.default_rng(1)
    results = [two_lines_test(*inverted_u(rng)) for _ in range(200)]
    power = np.mean([r.significant and r.shape == "inverted_u" for r in results])
    assert power >= 0.75
    assert abs(np.median([r.breakpoint for r in results]) - 0.5) < 0.1


def test_two_lines_detects_u_shape_too():
    rng = np.random.default_rng(2)
    x, y = inverted_u(rng, n=200, size=1.0)
    res = two_lines_test(x, -y)
    assert res.shape == "u" and res.significant and res.lines.slope1 < 0 < res.lines.slope2


def test_two_lines_rejects_log_curve_where_quadratic_term_is_significant():
    # y = log(x) is monotone: a significant negative x^2 term is not an inverted U (Simonsohn 2018).
    # Measured (these 300): x^2 significant in 100%, two-lines false inverted U 1.3%, Lind-Mehlum 79%.
    rng = np.random.default_rng(5)
    quad_sig = false_u = 0
    reps = 300
    for _ in range(reps):
        x = rng.uniform(1, 100, 200)
        y = np.log(x) + rng.normal(0, 0.5, 200)
        fit = sm.OLS(y, np.column_stack([np.ones_like(x), x, x * x])).fit()
        quad_sig += fit.params[2] < 0 and fit.pvalues[2] < 0.05
        false_u += two_lines_test(x, y).significant
    assert quad_sig / reps >= 0.95
    assert false_u / reps <= 0.05


def test_two_lines_false_positive_rate_on_flat_noise():
    # 1,000 flat data sets; allowed: 5% + 3 binomial SDs (0.071). Measured: 0.7%.
    rng = np.random.default_rng(0)
    hits = sum(two_lines_test(rng.uniform(0, 1, 100), rng.normal(0, 1, 100)).significant for _ in range(1000))
    assert hits / 1000 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)


def test_two_lines_on_log2_rank_finds_the_peak_rank():
    # Ranks 1..512 tested as log2(rank), 20 prompts per rank, peak at rank 32. Measured power 1.00.
    rng = np.random.default_rng(3)
    ranks = np.repeat(2.0 ** np.arange(10), 20)
    hits, peaks = 0, []
    for _ in range(100):
        y = -0.04 * (np.log2(ranks) - 5) ** 2 + rng.normal(0, 0.5, ranks.size)
        res = two_lines_test(ranks, y, x_scale="log2")
        hits += res.significant and res.shape == "inverted_u"
        peaks.append(res.breakpoint_original)
    assert hits >= 90
    assert 8 <= np.median(peaks) <= 128
    assert res.x_scale == "log2" and res.n_unique_x == 10 and res.breakpoint_original == 2.0**res.breakpoint


def test_interrupted_regression_recovers_exact_slopes_of_a_broken_line():
    x = np.linspace(0, 10, 41)
    y = np.where(x <= 6, 2.0 * x, 12.0 - 0.5 * (x - 6)) + np.random.default_rng(4).normal(0, 1e-3, x.size)
    lines = interrupted_regression(x, y, 6.0, None)
    assert lines.slope1 == pytest.approx(2.0, abs=1e-3) and lines.slope2 == pytest.approx(-0.5, abs=1e-3)
    assert lines.cov_type == "HC3"


def test_two_lines_with_three_x_levels_uses_identified_slopes_only(recwarn):
    # 3 levels (e.g. 3 ranks): each line has one level beyond the breakpoint; slopes = mean differences.
    x = np.repeat([1.0, 2.0, 3.0], 4)
    y = np.array([0.0, 1.0, 0.0])[(x - 1).astype(int)] + np.tile([-0.1, 0.1, -0.05, 0.05], 3)
    lines = interrupted_regression(x, y, 2.0, None)
    assert lines.slope1 == pytest.approx(1.0) and lines.slope2 == pytest.approx(-1.0)
    assert np.isfinite([lines.p1, lines.p2]).all() and not recwarn.list


def test_interrupted_regression_falls_back_to_hc1_when_hc3_is_undefined():
    # Two points above xc fit 'high' and 'xhigh' exactly: leverage 1, HC3 divides by zero.
    x = np.arange(10.0)
    y = np.random.default_rng(6).normal(0, 1, 10)
    lines = interrupted_regression(x, y, 7.5, None)
    assert lines.cov_type == "HC1" and np.isfinite(lines.p1)


def test_two_lines_with_clusters_uses_cluster_robust_errors():
    rng = np.random.default_rng(8)
    x, y = inverted_u(rng, n=200, size=1.0)
    res = two_lines_test(x, y, clusters=np.arange(200) % 25)
    assert res.lines.cov_type == "cluster" and res.significant


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0], {}, "one value per observation"),
        ([1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], {}, "distinct x"),
        ([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], {"x_scale": "log2"}, "x > 0"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, np.inf, 4.0], {}, "NaN or inf"),
    ],
)
def test_inverted_u_tests_reject_bad_input(x, y, kwargs, match):
    with pytest.raises(StatsInputError, match=match):
        two_lines_test(x, y, **kwargs)
    with pytest.raises(StatsInputError, match=match):
        lind_mehlum(x, y, **kwargs)


def test_lind_mehlum_on_a_true_quadratic_inverted_u():
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 1, 300)
    y = -3 * (x - 0.4) ** 2 + rng.normal(0, 0.3, 300)
    res = lind_mehlum(x, y)
    assert res.shape == "inverted_u" and res.significant and res.p_value == max(res.p_low, res.p_high)
    assert res.slope_low > 0 > res.slope_high
    assert res.extremum_ci[0] < 0.4 < res.extremum_ci[1]
    assert res.extremum_ci[0] < res.extremum < res.extremum_ci[1]


def test_lind_mehlum_is_trivially_not_significant_when_extremum_is_outside_interval():
    x = np.linspace(0, 1, 100)
    y = x - 0.1 * x**2 + np.random.default_rng(10).normal(0, 0.05, 100)
    res = lind_mehlum(x, y)
    assert not res.significant and "outside interval" in res.message


def test_lind_mehlum_one_sided_tests_are_signed():
    # A clear U tested as a U rejects; the same slopes never support an inverted U.
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, 200)
    y = x**2 + rng.normal(0, 0.2, 200)
    res = lind_mehlum(x, y)
    assert res.shape == "u" and res.significant and res.t_low < 0 < res.t_high


def test_smooth_knots_basis_and_penalty_follow_mgcv_cr():
    np.testing.assert_allclose(place_knots(np.arange(11.0), 6), [0, 2, 4, 6, 8, 10])
    knots = np.array([0.0, 0.3, 0.5, 0.9, 1.0])
    design, penalty = cr_basis(knots, knots)
    np.testing.assert_allclose(design, np.eye(5), atol=1e-12)  # values at knots parametrisation
    np.testing.assert_allclose(penalty @ (2 * knots + 1), 0, atol=1e-10)  # lines are unpenalised
    assert np.allclose(penalty, penalty.T)


def test_smooth_recovers_a_curve_and_shrinks_a_line_to_two_edf():
    rng = np.random.default_rng(12)
    x = rng.uniform(0, 1, 300)
    truth = np.sin(2 * np.pi * x)
    wiggly = fit_cr_smooth(x, truth + rng.normal(0, 0.3, 300), 10)
    fit, se = wiggly.predict(x)
    assert np.sqrt(np.mean((fit - truth) ** 2)) < 0.08 and 4 < wiggly.edf < 10
    assert 0.85 <= np.mean(np.abs(fit - truth) < 2 * se) <= 1.0  # Bayesian bands roughly cover
    # GCV sometimes keeps a little wiggle on a straight line (Wood 2017 §6.2), so ask for "nearly".
    line = fit_cr_smooth(x, 2 * x + rng.normal(0, 0.3, 300), 10)
    assert 2.0 - 1e-6 <= line.edf < 3.5
    exact = fit_cr_smooth(x, 2 * x + 1, 10).predict(x)[0]
    np.testing.assert_allclose(exact, 2 * x + 1, atol=1e-8)
