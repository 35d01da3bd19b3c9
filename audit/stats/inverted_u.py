"""Tests of a U or inverted-U relationship: Simonsohn's two-lines test (primary) and Lind-Mehlum (second opinion).

A significant negative x^2 term in a quadratic regression is NOT evidence of an inverted U: it is
significant for monotone concave curves such as log(x) (Simonsohn 2018; DESIGN.md §6). Exact
procedures: shared/notes/ecosystem-aesthetics.md §5.3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from audit.stats._inputs import StatsInputError, as_labels, as_vector
from audit.stats.smoothing import fit_cr_smooth

Shape = Literal["inverted_u", "u"]
XScale = Literal["linear", "log2", "log"]


def transform_x(x: np.ndarray, x_scale: XScale) -> np.ndarray:
    """x on the scale the test runs on; ranks 1..512 are tested as log2(rank)."""
    if x_scale == "linear":
        return x
    if x_scale not in ("log2", "log"):
        raise StatsInputError(f"x_scale must be 'linear', 'log2' or 'log', got {x_scale!r}")
    if np.any(x <= 0):
        raise StatsInputError(f"x_scale={x_scale!r} needs x > 0; use x_scale='linear' or shift x")
    return np.log2(x) if x_scale == "log2" else np.log(x)


def back_transform(value: float, x_scale: XScale) -> float:
    return {"linear": value, "log2": 2.0**value, "log": float(np.exp(value))}[x_scale]


def _xy(x, y, x_scale: XScale, min_unique: int) -> tuple[np.ndarray, np.ndarray]:
    xv = as_vector(x, "x", min_len=min_unique + 1)
    yv = as_vector(y, "y", min_len=min_unique + 1)
    if xv.size != yv.size:
        raise StatsInputError(f"x and y must have one value per observation, got {xv.size} and {yv.size}")
    xt = transform_x(xv, x_scale)
    if np.unique(xt).size < min_unique:
        raise StatsInputError(f"an inverted-U test needs >= {min_unique} distinct x values, got {np.unique(xt).size}")
    return xt, yv


def _quadratic_ols(x: np.ndarray, y: np.ndarray):
    import statsmodels.api as sm

    return sm.OLS(y, np.column_stack([np.ones_like(x), x, x * x]))


@dataclass(frozen=True)
class InterruptedSlopes:
    """The two slopes of an interrupted regression at breakpoint xc, each with a robust z test."""

    xc: float
    slope1: float
    z1: float
    p1: float
    slope2: float
    z2: float
    p2: float
    cov_type: str
    """'HC3', 'HC1' (HC3 undefined: a leverage-1 point) or 'cluster'; per line, joined by '/' if they differ."""


def interrupted_regression(x: np.ndarray, y: np.ndarray, xc: float, groups: np.ndarray | None) -> InterruptedSlopes:
    """Simonsohn's reg2: y ~ xlow + xhigh + high, once with xc in the low line, once in the high line.

    Slope 1 is xlow of the model with x <= xc low; slope 2 is xhigh of the model with x >= xc high.
    GLM-Gaussian = OLS, with HC3 SEs (HC1 when HC3 is undefined) and normal z tests, as
    lmtest::coeftest on a glm; with `groups`, cluster-robust SEs instead.
    """
    import statsmodels.api as sm

    out = []
    for low_side, target in ((x <= xc, "xlow"), (x < xc, "xhigh")):
        columns = {"const": np.ones_like(x), "xlow": np.where(low_side, x - xc, 0.0),
                   "xhigh": np.where(low_side, 0.0, x - xc), "high": (~low_side).astype(float)}
        other, other_rows = ("xhigh", ~low_side) if target == "xlow" else ("xlow", low_side)
        if np.unique(x[other_rows]).size < 2:
            # One x level on the other side: its slope is not identified (collinear with the
            # intercept or 'high'); R's glm drops such aliased columns too, and the fit and our slope are unchanged.
            del columns[other]
        design = np.column_stack(list(columns.values()))
        column = list(columns).index(target)
        model = sm.OLS(y, design)
        if groups is not None:
            fit, used = model.fit(cov_type="cluster", cov_kwds={"groups": groups}), "cluster"
        else:
            # HC3 divides by (1 - leverage)^2; R's sandwich gives NA at leverage 1, statsmodels
            # returns rounding noise, so detect it from the hat values.
            q, _ = np.linalg.qr(design)
            hc3_defined = float(np.max(np.sum(q * q, axis=1))) < 1.0 - 1e-8
            with np.errstate(divide="ignore", invalid="ignore"):
                fit = model.fit(cov_type="HC3") if hc3_defined else None
            if fit is not None and np.isfinite(fit.pvalues[column]):
                used = "HC3"
            else:
                fit, used = model.fit(cov_type="HC1"), "HC1"
        out.append((float(fit.params[column]), float(fit.tvalues[column]), float(fit.pvalues[column]), used))
    (b1, z1, p1, c1), (b2, z2, p2, c2) = out
    return InterruptedSlopes(float(xc), b1, z1, p1, b2, z2, p2, c1 if c1 == c2 else f"{c1}/{c2}")


@dataclass(frozen=True)
class TwoLinesResult:
    """Outcome of Simonsohn's two-lines test."""

    shape: Shape
    """Shape looked for, from the sign of the quadratic fit's slope at min(x) (> 0: inverted U)."""
    significant: bool
    """True iff slope1 * slope2 < 0 and both p < alpha: a U (or inverted U) of the declared shape."""
    breakpoint: float
    """Robin Hood breakpoint xc on the tested x scale."""
    breakpoint_original: float
    """xc mapped back to the original x (e.g. a rank, for x_scale='log2')."""
    lines: InterruptedSlopes
    """The two slopes with z and p at the breakpoint."""
    flat_region: tuple[float, float]
    """Range of x whose smooth is within 1 SE of the extreme fitted value."""
    n: int
    n_unique_x: int
    smooth_edf: float
    """Effective degrees of freedom of the GAM smooth (k = min(10, unique x))."""
    x_scale: XScale
    warnings: tuple[str, ...]
    """Caveats a report should show (e.g. a flat region with < 3 distinct x)."""


def two_lines_test(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    x_scale: XScale = "linear",
    clusters: Sequence[object] | np.ndarray | None = None,
    alpha: float = 0.05,
) -> TwoLinesResult:
    """Simonsohn's two-lines test of a U / inverted-U relationship between x and y.

    Source: Simonsohn (2018), "Two lines: A valid alternative to the invalid testing of U-shaped
    relationships with quadratic regressions", AMPPS 1(4): 538-555, doi:10.1177/2515245918805755;
    reference code urisohn/statuser R/twolines.R (= webstimate.org twolines 0.52). Procedure:
    1. smooth y ~ s(x, bs='cr', k=min(10, unique x)) with GCV (our numpy port, audit.stats.smoothing);
    2. shape from the quadratic regression's slope at min(x): > 0 -> look for an inverted U;
    3. within x strictly between its 10th and 90th percentiles, the flat region is where
       yhat + SE > max yhat (inverted U; yhat - SE < min yhat for a U);
    4. interrupted regression at the flat region's median, then the Robin Hood breakpoint
       xc = quantile(flat x, |z2| / (|z1| + |z2|)), and the final interrupted regression at xc;
    5. significant iff the slopes have opposite signs and both p < alpha (.05 in the paper).

    Assumes independent observations (one y per unit, e.g. per prompt, not per-x means), with
    heteroskedasticity handled by HC3. `clusters` (our extension) swaps HC3 for cluster-robust
    SEs, valid only with many clusters (>= ~20); with a few seed pairs, average within
    (cluster, x) cells first. `x_scale='log2'` tests on log2(x) (ranks 1..512).
    No covariates (the reference allows them; we have none).
    """
    xt, yv = _xy(x, y, x_scale, min_unique=3)
    groups = None if clusters is None else as_labels(clusters, "clusters", yv.size)
    notes: list[str] = []
    n_unique = int(np.unique(xt).size)
    smooth = fit_cr_smooth(xt, yv, min(10, n_unique))
    yhat, se = smooth.predict(xt)

    b = np.linalg.lstsq(np.column_stack([np.ones_like(xt), xt, xt * xt]), yv, rcond=None)[0]
    shape: Shape = "inverted_u" if b[1] + 2 * b[2] * xt.min() > 0 else "u"

    x10, x90 = np.quantile(xt, [0.1, 0.9])
    middle = (xt > x10) & (xt < x90)
    if not middle.any():
        raise StatsInputError("no x lies strictly between its 10th and 90th percentiles; use more distinct x values")
    xm, ym, sm_ = xt[middle], yhat[middle], se[middle]
    flat = ym + sm_ > ym.max() if shape == "inverted_u" else ym - sm_ < ym.min()
    if not flat.any():  # only when the SEs are exactly zero (a perfect fit)
        flat = ym == (ym.max() if shape == "inverted_u" else ym.min())
    xflat = xm[flat]
    if np.unique(xflat).size < 3:
        notes.append(f"flat region has {np.unique(xflat).size} distinct x values (< 3): breakpoint is coarse")

    mid = interrupted_regression(xt, yv, float(np.median(xflat)), groups)
    z1, z2 = abs(mid.z1), abs(mid.z2)
    share = 0.5 if z1 + z2 == 0 or not np.isfinite(z1 + z2) else z2 / (z1 + z2)
    xc = float(np.quantile(xflat, share))
    lines = interrupted_regression(xt, yv, xc, groups)
    if "HC1" in lines.cov_type:
        notes.append("HC3 undefined for a line (a leverage-1 point); used HC1 as the reference code does")
    significant = bool(lines.slope1 * lines.slope2 < 0 and lines.p1 < alpha and lines.p2 < alpha)
    return TwoLinesResult(
        shape=shape, significant=significant, breakpoint=xc, breakpoint_original=back_transform(xc, x_scale),
        lines=lines, flat_region=(float(xflat.min()), float(xflat.max())), n=int(yv.size),
        n_unique_x=n_unique, smooth_edf=smooth.edf, x_scale=x_scale, warnings=tuple(notes),
    )


@dataclass(frozen=True)
class LindMehlumResult:
    """Outcome of the Lind-Mehlum test on a quadratic fit over [x_low, x_high]."""

    shape: Shape
    """Shape tested, from the sign of the x^2 coefficient (< 0: inverted U)."""
    significant: bool
    """True iff both one-sided slope tests reject at alpha (intersection-union test)."""
    p_value: float
    """max of the two one-sided p-values."""
    slope_low: float
    t_low: float
    p_low: float
    slope_high: float
    t_high: float
    p_high: float
    interval: tuple[float, float]
    """[x_low, x_high] on the tested scale."""
    extremum: float
    """x* = -b1 / (2 b2) on the tested scale."""
    extremum_ci: tuple[float, float]
    """Fieller (1 - alpha) interval for x*; (-inf, inf) when b2 is not significantly non-zero."""
    df: int
    n: int
    x_scale: XScale
    message: str
    """'' or 'extremum outside interval: trivial failure to reject H0' (utest.R wording)."""


def fieller_interval(b1: float, b2: float, v11: float, v12: float, v22: float, crit: float) -> tuple[float, float]:
    """Fieller interval for x* = -b1/(2 b2): all t with (b1 + 2 b2 t)^2 <= crit^2 Var(b1 + 2 b2 t).

    Source: Fieller (1954), JRSS-B 16(2): 175-185; Lind & Mehlum (2010) §3.
    """
    qa = 4 * (b2 * b2 - crit * crit * v22)
    qb = 4 * (b1 * b2 - crit * crit * v12)
    qc = b1 * b1 - crit * crit * v11
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return (-np.inf, np.inf)  # unbounded set (or its complement): no finite interval
    root = np.sqrt(disc)
    return (float((-qb - root) / (2 * qa)), float((-qb + root) / (2 * qa)))


def lind_mehlum(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    interval: tuple[float, float] | None = None,
    x_scale: XScale = "linear",
    cov_type: Literal["nonrobust", "HC3"] = "nonrobust",
    clusters: Sequence[object] | np.ndarray | None = None,
    alpha: float = 0.05,
) -> LindMehlumResult:
    """Lind & Mehlum's test of a U / inverted U in y = b0 + b1 x + b2 x^2 over [x_low, x_high].

    Source: Lind & Mehlum (2010), "With or without U? The appropriate test for a U-shaped
    relationship", Oxf. Bull. Econ. Stat. 72(1): 109-118; Sasabuchi (1980) for the
    intersection-union test; reference code jotlind/utest. Unlike utest.R (which uses |t|) the
    one-sided tests are signed: for an inverted U, H1 is slope(x_low) > 0 and slope(x_high) < 0,
    each tested with a one-sided t (df = n - 3); p = max of the two. Assumes the quadratic is the
    right functional form on the interval (its weakness: prefer two_lines_test as the primary test).
    `interval` defaults to the observed [min x, max x] on the tested scale; fix it before seeing
    the data. `cov_type='HC3'` or `clusters` give robust slope SEs.
    """
    xt, yv = _xy(x, y, x_scale, min_unique=3)
    model = _quadratic_ols(xt, yv)
    if clusters is not None:
        fit = model.fit(cov_type="cluster", cov_kwds={"groups": as_labels(clusters, "clusters", yv.size)}, use_t=True)
    else:
        fit = model.fit(cov_type=cov_type, use_t=True) if cov_type != "nonrobust" else model.fit()
    b, v = np.asarray(fit.params), np.asarray(fit.cov_params())
    x_low, x_high = (float(xt.min()), float(xt.max())) if interval is None else map(float, interval)
    if not x_low < x_high:
        raise StatsInputError(f"interval must be (low, high) with low < high, got {interval!r}")
    df = int(fit.df_resid)

    def slope_t(at: float) -> tuple[float, float]:
        w = np.array([0.0, 1.0, 2.0 * at])
        return float(w @ b), float(w @ b) / float(np.sqrt(w @ v @ w))

    s_low, t_low = slope_t(x_low)
    s_high, t_high = slope_t(x_high)
    shape: Shape = "inverted_u" if b[2] < 0 else "u"
    sign = 1.0 if shape == "inverted_u" else -1.0  # inverted U: rising at x_low, falling at x_high
    p_low = float(sps.t.sf(sign * t_low, df))
    p_high = float(sps.t.sf(-sign * t_high, df))
    p_value = max(p_low, p_high)
    message = "extremum outside interval: trivial failure to reject H0" if s_low * s_high > 0 else ""
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    extremum = float(-b[1] / (2 * b[2])) if b[2] != 0 else float("nan")
    return LindMehlumResult(
        shape=shape, significant=bool(p_value < alpha and not message), p_value=p_value,
        slope_low=s_low, t_low=t_low, p_low=p_low, slope_high=s_high, t_high=t_high, p_high=p_high,
        interval=(x_low, x_high), extremum=extremum,
        extremum_ci=fieller_interval(b[1], b[2], v[1, 1], v[1, 2], v[2, 2], crit),
        df=df, n=int(yv.size), x_scale=x_scale, message=message,
    )
