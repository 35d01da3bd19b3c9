"""Input checks shared by the statistics functions (private)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audit.errors import SubauditError


class StatsInputError(SubauditError, ValueError):
    """Bad input to a statistics function; the message is one line naming the fix."""


def as_vector(values: Sequence[float] | np.ndarray, name: str, *, min_len: int = 1) -> np.ndarray:
    """1-D float array of finite values, at least `min_len` long."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D, got shape {arr.shape}; flatten it or pass one value per row")
    if not np.all(np.isfinite(arr)):
        raise StatsInputError(f"{name} contains NaN or inf; drop or impute those rows first")
    if arr.size < min_len:
        raise StatsInputError(f"{name} needs at least {min_len} values, got {arr.size}; collect more data")
    return arr


def as_labels(labels: Sequence[object] | np.ndarray, name: str, n: int) -> np.ndarray:
    """Integer codes 0..C-1 for cluster labels of any hashable type, checked to have length `n`."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size != n:
        raise StatsInputError(f"{name} must be 1-D with one label per value ({n}), got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1)


def check_level(level: float, name: str = "level") -> None:
    if not 0.0 < level < 1.0:
        raise StatsInputError(f"{name} must be in (0, 1), got {level}; e.g. 0.95")


def cluster_means(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Mean of `values` within each cluster code (equal weight per row inside a cluster)."""
    sums = np.bincount(codes, weights=values)
    sizes = np.bincount(codes)
    return sums / sizes
