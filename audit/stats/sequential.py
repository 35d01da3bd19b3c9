"""Seed pairs added until the claims are decided: a group-sequential design with alpha spending.

The grid is measured at a few looks (the starting seed pairs, then doubling, up to a cap). Each look may decide
a column (effect / no effect) or ask for more seed pairs. Testing at every look at the full alpha would inflate
the error rate (about 2x at three looks); instead the error rate is spent across the looks by a spending function
(Lan & DeMets 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70:659), here the Pocock
type, alpha * ln(1 + (e - 1) t) at information fraction t = seed pairs / cap (Lan & DeMets' approximation of
Pocock's constant boundaries, which spends more early than O'Brien-Fleming's and so suits a few looks on t tests
with 1-7 df). Each look tests at the alpha spent since the previous one; by the union bound the chance of an
error at any look is at most alpha, whatever the stopping rule, so the design stays valid for t tests with few
df, where exact group-sequential boundaries (which assume known variance) do not apply. The price is some
conservatism; `benchmarks/stats_calibration.py` measures the error rate and the seed pairs spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from audit.stats._inputs import StatsInputError


@dataclass(frozen=True)
class Look:
    """One analysis of the sequential design."""

    replicates: int
    """Seed pairs measured at this look."""
    alpha: float
    """The level this look tests at: the alpha spent since the previous look."""
    spent: float
    """Alpha spent up to and including this look."""


def pocock_spending(t: float, alpha: float) -> float:
    """Alpha spent by information fraction t in [0, 1] (Lan-DeMets Pocock type)."""
    return alpha * math.log(1 + (math.e - 1) * min(max(t, 0.0), 1.0))


def looks(first: int, cap: int, step: int = 1, alpha: float = 0.05) -> list[Look]:
    """The looks of a design starting at `first` replicates, doubling (in multiples of `step`) up to `cap`.
    With first >= cap it is one look at the full alpha (a fixed design)."""
    if first < 1 or step < 1 or cap < 1:
        raise StatsInputError(f"first, step and cap must be >= 1, got {first}, {step}, {cap}")
    sizes = [first]
    while sizes[-1] < cap:
        sizes.append(min(cap, -(-2 * sizes[-1] // step) * step))
    if len(sizes) == 1:
        return [Look(first, alpha, alpha)]
    out, spent = [], 0.0
    for n in sizes:
        total = pocock_spending(n / sizes[-1], alpha)
        out.append(Look(n, total - spent, total))
        spent = total
    return out


def stopping_look(design: Sequence[Look], decided: Callable[[Look], bool]) -> Look:
    """The first look at which `decided(look)` holds (its data measured up to that look), else the last look."""
    for look in design:
        if decided(look):
            return look
    return design[-1]
