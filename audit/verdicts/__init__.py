"""Verdicts: measurements in, pass / fail / skip with the evidence out. Pure (numpy + audit.stats).

Two kinds, one module each: `audit.verdicts.claims` (the paper's claims) and `audit.verdicts.gate` (an adapter
against its base). Each function returns a `Verdict` whose `passed` is None when the claim's precondition is
absent (the check then skips with `explanation` as the measured reason). Nothing here knows about pytest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.results import Effect

ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check with its evidence."""

    passed: bool | None
    """True / False, or None when the precondition is absent (skip)."""
    explanation: str
    """What was measured and why the verdict follows (one or two sentences)."""
    effect: Effect | None = None
    """The headline number with its CI and n."""
    context: str | None = None
    """The chat context (or context pair, or grid cell) the verdict is about, if one."""
    properties: dict[str, float | int | str] = field(default_factory=dict)
    """Key numbers, mirrored into JUnit properties."""
    trait: str | None = None
    """The trait, panel entry or word the verdict is about, if one."""
    adapter: str | None = None
    """The gated adapter's name, for gate verdicts."""


def is_undecided(verdict: Verdict) -> bool:
    """A skip for want of power ("undecided at this power"), not for an absent precondition."""
    return verdict.passed is None and verdict.explanation.startswith("undecided")


def effect_of(estimate, p_value: float | None = None, p_adjusted: float | None = None, method: str | None = None) -> Effect:
    """An `audit.stats.Estimate` as a results Effect, with the check's own p-values and method if given."""
    e = Effect.from_estimate(estimate, p_adjusted=p_adjusted)
    update: dict[str, object] = {}
    if p_value is not None:
        update["p_value"] = p_value
    if method is not None:
        update["method"] = method
    return e.model_copy(update=update) if update else e
