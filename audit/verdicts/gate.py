"""Gate verdicts: is an adapter's effect on the panel within the margin, in every context and between them?"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from audit.results import Effect
from audit.verdicts import ALPHA, Verdict, effect_of


def adapter_active(canary) -> Verdict:
    """The adapter changes the base model's token logprobs by more than float noise (audit.engines.canary)."""
    d = canary.max_abs_diff
    effect = Effect(value=d, ci_low=d, ci_high=d, n=canary.n_tokens, method="max |adapter - base| token logprob (nats)")
    why = (f"max |adapter - base| logprob {d:.3g} nats over {canary.n_tokens} tokens vs threshold "
           f"{canary.threshold:.3g} (noise {canary.noise:.3g})")
    if not canary.active:
        why = "adapter is NOT active (silently ignored?): " + why
    return Verdict(canary.active, why, effect, properties={"noise": canary.noise, "threshold": canary.threshold})


def not_measured(contexts, reason: str) -> dict[str, Verdict]:
    """The same failing verdict for every context: the measurement it needs could not be made."""
    return {ctx: Verdict(False, reason, context=ctx) for ctx in contexts}


@dataclass(frozen=True)
class _ShiftTest:
    context: str
    entry: str
    estimate: object
    tost_p: float


def gate_panel_verdicts(
    panel: Sequence[str],
    base: Mapping[str, Sequence[Sequence[float]]],
    adapter: Mapping[str, Sequence[Sequence[float]]],
    margin: float,
) -> dict[str, Verdict]:
    """Per context: is every panel entry's shift (adapter - base, paired by question) within +-margin?

    base[ctx] / adapter[ctx] are per-question rows of per-entry probabilities (TraitScores.p_panel).
    One TOST per (entry, context); Holm across the whole panel x contexts family (DESIGN.md §6).
    """
    from audit.stats import holm, paired_difference, tost

    tests: list[_ShiftTest] = []
    for ctx in base:
        b, a = np.asarray(base[ctx], float), np.asarray(adapter[ctx], float)
        for k, entry in enumerate(panel):
            est = paired_difference(a[:, k], b[:, k])
            tests.append(_ShiftTest(ctx, entry, est, tost(a[:, k] - b[:, k], margin).p_value))
    adjusted = holm([t.tost_p for t in tests])
    method = f"paired t over questions; p: TOST vs +-{margin}, Holm over {len(tests)} (panel x contexts)"
    out: dict[str, Verdict] = {}
    for ctx in base:
        rows = [(t, float(p)) for t, p in zip(tests, adjusted) if t.context == ctx]
        failing = [(t, p) for t, p in rows if p >= ALPHA]
        worst, p_worst = max(failing or rows, key=lambda tp: abs(tp[0].estimate.value))
        effect = effect_of(worst.estimate, worst.tost_p, p_worst, method)
        if failing:
            names = ", ".join(t.entry for t, _ in failing)
            why = (f"'{worst.entry}' shifts by {effect.text()} in context {ctx}: not shown within +-{margin} "
                   f"(TOST, Holm p={p_worst:.3g}); entries not within the margin: {names}")
        else:
            why = (f"all {len(rows)} panel entries within +-{margin} in context {ctx}; largest shift "
                   f"'{worst.entry}' {effect.text()} (Holm p={p_worst:.3g})")
        out[ctx] = Verdict(not failing, why, effect, ctx, {"entry": worst.entry}, trait=worst.entry)
    return out


def gate_consistency_verdicts(
    panel: Sequence[str],
    base: Mapping[str, Sequence[Sequence[float]]],
    adapter: Mapping[str, Sequence[Sequence[float]]],
    margin: float,
) -> dict[str, Verdict]:
    """Per pair of contexts: does the adapter's shift of each entry differ between them by < margin?

    The difference in differences is paired by question; TOST per (pair, entry); Holm over the family.
    Keys are 'ctxA-vs-ctxB'.
    """
    from audit.stats import holm, paired_difference, tost

    shifts = {c: np.asarray(adapter[c], float) - np.asarray(base[c], float) for c in base}
    tests: list[_ShiftTest] = []
    for c1, c2 in combinations(list(base), 2):
        for k, entry in enumerate(panel):
            est = paired_difference(shifts[c1][:, k], shifts[c2][:, k])
            tests.append(_ShiftTest(f"{c1}-vs-{c2}", entry, est, tost(shifts[c1][:, k] - shifts[c2][:, k], margin).p_value))
    adjusted = holm([t.tost_p for t in tests]) if tests else []
    method = f"paired t of shift differences over questions; p: TOST vs +-{margin}, Holm over {len(tests)}"
    out: dict[str, Verdict] = {}
    for pair in dict.fromkeys(t.context for t in tests):
        rows = [(t, float(p)) for t, p in zip(tests, adjusted) if t.context == pair]
        failing = [(t, p) for t, p in rows if p >= ALPHA]
        worst, p_worst = max(failing or rows, key=lambda tp: abs(tp[0].estimate.value))
        effect = effect_of(worst.estimate, worst.tost_p, p_worst, method)
        verb = "differs" if failing else "is consistent"
        why = (f"the adapter's shift of '{worst.entry}' {verb} between {pair}: {effect.text()} "
               f"(margin +-{margin}, TOST Holm p={p_worst:.3g})")
        out[pair] = Verdict(not failing, why, effect, pair, {"entry": worst.entry}, trait=worst.entry)
    return out
