"""Penalised cubic regression spline with GCV-chosen smoothing: the GAM smooth of the two-lines test.

We implement mgcv's `s(x, bs="cr", k)` directly (numpy), because statsmodels' GLMGam has no
GCV smoothing-parameter selection for this basis and no fitted-value SEs in its simple API.
Source: Wood (2017), *Generalized Additive Models: An Introduction with R*, 2nd ed., §5.3.1
(cubic regression spline parametrised by its values at the knots; penalty = integral of f''^2),
§6.2 (GCV), §6.10 (Bayesian covariance Vp used for the SEs of fitted values, as
mgcv::predict.gam(se.fit=TRUE)); knot placement follows mgcv's place.knots (evenly spaced through
the sorted unique x). Like mgcv, the intercept is in the null space of the penalty, so
intercept + sum-to-zero smooth and this unconstrained basis give the same fit and SEs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from audit.stats._inputs import StatsInputError


def place_knots(x: np.ndarray, k: int) -> np.ndarray:
    """k knots evenly spaced through the sorted unique values of x (mgcv place.knots)."""
    ux = np.unique(x)
    if k > ux.size:
        raise StatsInputError(f"k={k} knots need at least {k} distinct x values, got {ux.size}")
    if k == ux.size:
        return ux
    pos = np.linspace(0.0, ux.size - 1, k)
    low = np.floor(pos).astype(int).clip(max=ux.size - 2)
    frac = pos - low
    return ux[low] * (1.0 - frac) + ux[low + 1] * frac


def cr_basis(x: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix (n x k) and penalty matrix S (k x k) of a natural cubic spline in knot-value form."""
    k = knots.size
    h = np.diff(knots)
    d = np.zeros((k - 2, k))
    b = np.zeros((k - 2, k - 2))
    for i in range(k - 2):
        d[i, i], d[i, i + 1], d[i, i + 2] = 1 / h[i], -1 / h[i] - 1 / h[i + 1], 1 / h[i + 1]
        b[i, i] = (h[i] + h[i + 1]) / 3
        if i < k - 3:
            b[i, i + 1] = b[i + 1, i] = h[i + 1] / 6
    inner = np.linalg.solve(b, d) if k > 2 else np.zeros((0, k))
    second = np.vstack([np.zeros(k), inner, np.zeros(k)])  # f'' at knots; natural ends
    penalty = d.T @ inner
    j = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, k - 2)
    left, right, hj = knots[j], knots[j + 1], h[j]
    a_minus, a_plus = (right - x) / hj, (x - left) / hj
    c_minus = ((right - x) ** 3 / hj - hj * (right - x)) / 6
    c_plus = ((x - left) ** 3 / hj - hj * (x - left)) / 6
    design = c_minus[:, None] * second[j] + c_plus[:, None] * second[j + 1]
    rows = np.arange(x.size)
    design[rows, j] += a_minus
    design[rows, j + 1] += a_plus
    return design, penalty


@dataclass(frozen=True)
class CubicSplineSmooth:
    """A fitted penalised cubic regression spline y ~ s(x, bs='cr', k)."""

    knots: np.ndarray
    """Knot positions (k of them)."""
    coef: np.ndarray
    """Spline values at the knots (the basis is in knot-value form)."""
    cov: np.ndarray
    """Bayesian posterior covariance of coef (mgcv's Vp): scale * (X'X + lambda S)^-1."""
    smoothing: float
    """GCV-chosen smoothing parameter lambda."""
    edf: float
    """Effective degrees of freedom, tr of the hat matrix (2 = straight line, k = interpolating spline)."""
    scale: float
    """Residual variance estimate RSS / (n - edf)."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fitted values and their standard errors at x (inside the knot range)."""
        design, _ = cr_basis(np.asarray(x, dtype=float), self.knots)
        fit = design @ self.coef
        se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", design, self.cov, design), 0.0, None))
        return fit, se


def fit_cr_smooth(x: np.ndarray, y: np.ndarray, k: int) -> CubicSplineSmooth:
    """Fit y ~ s(x, bs='cr', k) by penalised least squares, lambda minimising GCV = n RSS / (n - edf)^2.

    Assumes Gaussian errors with constant variance (mgcv's default family), k >= 3, n > k.
    """
    if k < 3:
        raise StatsInputError(f"a cubic regression spline needs k >= 3 (>= 3 distinct x values), got k={k}")
    if x.size <= k:
        raise StatsInputError(f"smoothing with k={k} needs more than {k} observations, got {x.size}")
    knots = place_knots(x, k)
    design, penalty = cr_basis(x, knots)
    q, r = np.linalg.qr(design)
    if np.min(np.abs(np.diag(r))) < 1e-10 * np.max(np.abs(np.diag(r))):
        raise StatsInputError("spline design is singular; x needs observations spread over its range")
    r_inv = np.linalg.inv(r)
    eig, u = np.linalg.eigh(r_inv.T @ penalty @ r_inv)
    eig = np.clip(eig, 0.0, None)
    z = u.T @ (q.T @ y)
    n = y.size
    base_rss = float(y @ y - z @ z)  # part of y outside the column space of the design

    def shrink(log_lam: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(log_lam) * eig)

    def gcv(log_lam: float) -> float:
        keep = shrink(log_lam)
        rss = base_rss + float(np.sum(((1.0 - keep) * z) ** 2))
        return n * rss / (n - keep.sum()) ** 2

    # lambda is scale-free after the rotation (eig ~ O(1)); search a wide log grid, then refine.
    scale_ref = np.log(1.0 / max(eig.max(), 1e-300))
    grid = scale_ref + np.linspace(-20.0, 25.0, 91)
    best = grid[int(np.argmin([gcv(g) for g in grid]))]
    opt = minimize_scalar(gcv, bounds=(best - 0.5, best + 0.5), method="bounded")
    log_lam = float(opt.x) if opt.fun <= gcv(best) else float(best)
    keep = shrink(log_lam)
    edf = float(keep.sum())
    rss = base_rss + float(np.sum(((1.0 - keep) * z) ** 2))
    scale = rss / (n - edf)
    to_coef = r_inv @ u
    coef = to_coef @ (keep * z)
    cov = scale * (to_coef * keep) @ to_coef.T
    return CubicSplineSmooth(knots, coef, cov, float(np.exp(log_lam)), edf, scale)
