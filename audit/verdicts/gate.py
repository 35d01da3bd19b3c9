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
    reference: str | None = None,
) -> dict[str, Verdict]:
    """Per pair of contexts: does the adapter's shift of each entry differ between them by < margin?

    Pairs: every context with `reference`, or every pair when it is None. The difference in differences is
    paired by question; TOST per (pair, entry); Holm over the family. Keys are 'ctxA-vs-ctxB'.
    """
    from audit.stats import holm, paired_difference, tost

    shifts = {c: np.asarray(adapter[c], float) - np.asarray(base[c], float) for c in base}
    pairs = combinations(list(base), 2) if reference is None else [(c, reference) for c in base if c != reference]
    tests: list[_ShiftTest] = []
    for c1, c2 in pairs:
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


# ------------------------------------------------------------------------------ open vocabulary

OPEN_VOCABULARY_CANDIDATES = 10
"""Words tested per context: the largest gains on the selection half of the questions."""


@dataclass(frozen=True)
class WordShift:
    """One word's gain in the answer slot: adapter minus base probability, paired by question."""

    word: str
    estimate: object
    """audit.stats.Estimate over the test half of the questions."""
    p_adjusted: float
    """One-sided p of 'gain > margin', Holm-adjusted over the candidates of this context."""


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) of two next-token word distributions; the mass neither
    lists (beyond the top tokens) is one shared 'other' outcome."""
    words = set(p) | set(q)
    a = np.array([p.get(w, 0.0) for w in words] + [max(0.0, 1.0 - sum(p.values()))])
    b = np.array([q.get(w, 0.0) for w in words] + [max(0.0, 1.0 - sum(q.values()))])
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        keep = x > 0
        return float(np.sum(x[keep] * np.log(x[keep] / m[keep])))

    return (kl(a) + kl(b)) / 2


def open_vocabulary_verdict(base: Sequence[Mapping[str, float]], adapter: Sequence[Mapping[str, float]],
                            margin: float, context: str) -> tuple[Verdict, list[WordShift]]:
    """Does any word, named or not, gain more than `margin` in the answer slot of this context?

    base[q] / adapter[q]: per question, P(the answer's first word) over the top next tokens. Candidates are
    the words with the largest mean gain on the even-numbered questions; each is then tested on the odd ones
    (one-sided paired t against +margin, Holm over the candidates), so choosing the candidates does not bias
    their test. Words outside the top tokens count as probability 0 there.
    """
    from scipy import stats as sps

    from audit.stats import holm, paired_difference

    n = len(base)
    select, test = range(0, n, 2), range(1, n, 2)
    if len(test) < 3:
        return Verdict(None, f"{n} questions: the open-vocabulary test needs at least 6 (half to choose words, "
                             "half to test them)", context=context), []
    words = sorted({w for d in (*base, *adapter) for w in d})
    gain = lambda q, w: adapter[q].get(w, 0.0) - base[q].get(w, 0.0)  # noqa: E731
    chosen = sorted(words, key=lambda w: -sum(gain(q, w) for q in select))[:OPEN_VOCABULARY_CANDIDATES]
    estimates, p_raw = [], []
    for word in chosen:
        a = [adapter[q].get(word, 0.0) for q in test]
        b = [base[q].get(word, 0.0) for q in test]
        est = paired_difference(a, b)
        diffs = np.subtract(a, b)
        se = diffs.std(ddof=1) / np.sqrt(len(diffs))
        excess = diffs.mean() - margin
        p_raw.append(float(sps.t.sf(excess / se, len(diffs) - 1)) if se > 0 else float(excess <= 0))
        estimates.append(est)
    adjusted = holm(p_raw)
    shifts = [WordShift(w, e, float(p)) for w, e, p in zip(chosen, estimates, adjusted)]
    divergence = paired_difference([js_divergence(b, a) for b, a in zip(base, adapter)], [0.0] * n)
    jsd = f"{divergence.value:.3f} [{divergence.ci_low:.3f}, {divergence.ci_high:.3f}] n={n}"
    top = max(shifts, key=lambda s: s.estimate.value)
    failing = [s for s in shifts if s.p_adjusted < ALPHA]
    worst = min(failing, key=lambda s: s.p_adjusted) if failing else top
    method = (f"paired t over {len(test)} held-out questions; candidates chosen on {len(select)} others; "
              f"one-sided p vs +{margin}, Holm over {len(shifts)}")
    effect = effect_of(worst.estimate, p_adjusted=worst.p_adjusted, method=method)
    if failing:
        why = (f"'{worst.word}' gains {effect.text()} in the answer slot of context {context}: more than +{margin} "
               f"(Holm p={worst.p_adjusted:.3g}); words shown to gain beyond the margin: "
               f"{', '.join(s.word for s in failing)}; mean JS divergence base vs adapter {jsd} nats")
    else:
        why = (f"no word shown to gain more than +{margin} in context {context}; largest gain '{top.word}' "
               f"{effect_of(top.estimate).text()} (Holm p={top.p_adjusted:.3g}); mean JS divergence base vs adapter "
               f"{jsd} nats")
    verdict = Verdict(not failing, why, effect, context, {"word": worst.word, "js_divergence": divergence.value},
                      trait=worst.word)
    return verdict, shifts
