"""Claim verdicts: the four claims of Nief et al. 2026, decided from paired trait-minus-control cells."""

from __future__ import annotations

from typing import Mapping

from audit.pipeline.analysis import PairedCell
from audit.verdicts import ALPHA, Verdict, effect_of


def margin_caveat(margin: float, reference: float) -> str:
    """A warning when the equivalence margin is not smaller than the effect it should tell from zero.

    "Equivalent to 0 at +-margin" is informative only when the margin is below the effects the model
    shows; on a small model a default margin can exceed its whole transmission.
    """
    if reference == 0 or margin < abs(reference):
        return ""
    return (f" CAVEAT: the margin +-{margin} is {margin / abs(reference):.1f}x the transmission it is compared with "
            f"({reference:+.4f}), so equivalence at this margin cannot tell this model's effects from zero; "
            "rerun with a --margin below the effect size")


def transmits(estimate) -> bool:
    """Transmission shown: the 95% CI of student minus control lies above zero."""
    return estimate.ci_low > 0


def rank_inverted_u(cells: Mapping[int, PairedCell]) -> Verdict:
    """Two-lines test over log2(rank) of per-(rank, seed pair) mean transmission (DESIGN.md §6)."""
    from audit.stats import two_lines_test

    estimates = {r: cells[r].estimate() for r in sorted(cells)}
    peak = max(estimates, key=lambda r: estimates[r].value)
    peak_effect = effect_of(estimates[peak])
    if not any(transmits(e) for e in estimates.values()):
        return Verdict(None, f"no rank transmits: the largest transmission is r={peak} {peak_effect.text()} "
                             "(95% CI includes 0), so an inverted U is meaningless", peak_effect,
                       properties={"peak_rank": peak})
    if len(estimates) < 3:
        return Verdict(None, f"only {len(estimates)} ranks measured; the two-lines test needs >= 3", peak_effect)
    x, y = [], []
    for r, cell in cells.items():
        for value in cell.seed_means().values():
            x.append(r)
            y.append(value)
    two = two_lines_test(x, y, x_scale="log2")
    lines = two.lines
    detail = (f"two-lines test on log2(rank), breakpoint r={two.breakpoint_original:.3g}: slope before "
              f"{lines.slope1:+.4f} (p={lines.p1:.3g}), after {lines.slope2:+.4f} (p={lines.p2:.3g}); "
              f"peak r={peak} {peak_effect.text()}")
    passed = two.significant and two.shape == "inverted_u"
    why = ("inverted U: " if passed else "no inverted U shown: ") + detail
    if two.warnings:
        why += " (" + "; ".join(two.warnings) + ")"
    props = {"peak_rank": peak, "slope1": lines.slope1, "p1": lines.p1, "slope2": lines.slope2, "p2": lines.p2,
             "breakpoint_rank": two.breakpoint_original}
    return Verdict(passed, why, peak_effect.model_copy(update={"p_value": max(lines.p1, lines.p2)}), properties=props)


def full_ft_vanishes(full: PairedCell, lora: Mapping[int, PairedCell], margin: float) -> Verdict:
    """Full-FT transmission equivalent to zero (TOST) AND below the peak LoRA rank (paired test)."""
    from audit.stats import paired_difference

    estimates = {r: c.estimate() for r, c in lora.items()}
    peak = max(estimates, key=lambda r: estimates[r].value)
    if not transmits(estimates[peak]):
        full_estimate = full.estimate()
        if transmits(full_estimate):  # full FT transmitting is the opposite of the claim, whatever LoRA does
            effect = effect_of(full_estimate)
            return Verdict(False, f"full FT transmits {effect.text()} while no LoRA rank does (peak r={peak} "
                                  f"{effect_of(estimates[peak]).text()}): the opposite of 'vanishes under full finetuning'",
                           effect, properties={"peak_rank": peak})
        return Verdict(None, f"no LoRA rank transmits (peak r={peak} {effect_of(estimates[peak]).text()}), so "
                             "'full FT vanishes while LoRA transmits' cannot be tested")
    equivalence = full.equivalence(margin)
    full_effect = effect_of(full.estimate(), equivalence.p_value)
    peak_cell = lora[peak]
    # Pair by (seed pair, question): the same question under the same seeds.
    index = {(s, q): d for d, s, q in zip(peak_cell.diffs, peak_cell.seed_pairs, peak_cell.questions)}
    keys = [(s, q) for s, q in zip(full.seed_pairs, full.questions) if (s, q) in index]
    below = paired_difference([index[k] for k in keys], [d for d, s, q in zip(full.diffs, full.seed_pairs, full.questions)
                                                         if (s, q) in index], clusters=[q for _, q in keys])
    below_shown = below.value > 0 and below.p_value is not None and below.p_value < ALPHA
    passed = equivalence.equivalent and below_shown
    why = (f"full FT transmission {full_effect.text()}: {'equivalent' if equivalence.equivalent else 'not shown equivalent'} "
           f"to 0 at +-{margin} (TOST p={equivalence.p_value:.3g}); peak LoRA r={peak} minus full FT "
           f"{effect_of(below).text()} (paired p={below.p_value:.3g})") + margin_caveat(margin, estimates[peak].value)
    return Verdict(passed, why, full_effect, properties={"peak_rank": peak, "peak_minus_full": below.value,
                                                          "peak_minus_full_p": below.p_value or 1.0})


def system_prompt_verdicts(grid: Mapping[tuple[str, str], PairedCell], margin: float,
                           headline: tuple[str, str]) -> dict[str, Verdict]:
    """Train x eval context grid: 'matched' transmit, 'mismatched' equivalent to 0, and the headline cell."""
    from audit.stats import holm

    estimates = {k: c.estimate() for k, c in grid.items()}
    matched = {k: e for k, e in estimates.items() if k[0] == k[1]}
    mismatched = {k: e for k, e in estimates.items() if k[0] != k[1]}
    name = lambda k: f"train={k[0]} eval={k[1]}"  # noqa: E731
    out: dict[str, Verdict] = {}
    if not any(transmits(e) for e in matched.values()):
        best = max(matched, key=lambda k: matched[k].value)
        reason = (f"no matched cell transmits (best {name(best)} {effect_of(matched[best]).text()}), so context "
                  "dependence of transmission cannot be tested")
        return {key: Verdict(None, reason) for key in ("matched", "mismatched", "headline")}
    worst = min(matched, key=lambda k: matched[k].ci_low)
    ok = all(transmits(e) for e in matched.values())
    out["matched"] = Verdict(ok, f"{'all' if ok else 'not all'} matched cells transmit; weakest {name(worst)} "
                                 f"{effect_of(matched[worst]).text()}", effect_of(matched[worst]), worst[1])
    caveat = margin_caveat(margin, max(e.value for e in matched.values()))
    tests = {k: grid[k].equivalence(margin) for k in mismatched}
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()])))
    failing = [k for k in tests if adjusted[k] >= ALPHA]
    worst = max(failing or list(tests), key=lambda k: abs(mismatched[k].value))
    effect = effect_of(mismatched[worst], tests[worst].p_value, float(adjusted[worst]))
    out["mismatched"] = Verdict(
        not failing,
        f"{len(tests) - len(failing)}/{len(tests)} mismatched cells equivalent to 0 at +-{margin} (TOST, Holm); "
        f"worst {name(worst)} {effect.text()} (Holm p={adjusted[worst]:.3g})" + caveat, effect, worst[1])
    h = tests[headline]
    out["headline"] = Verdict(
        h.equivalent,
        f"{name(headline)}: {effect_of(mismatched[headline]).text()}, {'equivalent' if h.equivalent else 'not shown equivalent'} "
        f"to 0 at +-{margin} (TOST p={h.p_value:.3g})" + caveat, effect_of(mismatched[headline], h.p_value), headline[1])
    return out


def localisation_verdict(cells: Mapping[str, PairedCell], only: str, without: str, share: float,
                         margin: float) -> Verdict:
    """LoRA gated to `only` positions recovers >= `share` of the ungated effect; gated to all but them ~ 0.

    cells holds paired transmission cells for "everywhere", `only` and `without` gating conditions.
    """
    full = cells["everywhere"].estimate()
    if not transmits(full):
        return Verdict(None, f"the ungated student does not transmit ({effect_of(full).text()}), so there is "
                             "no effect to localise")
    part = cells[only].estimate()
    recovered = part.value / full.value
    rest = cells[without].equivalence(margin)
    passed = recovered >= share and rest.equivalent
    why = (f"'{only}' recovers {recovered:.0%} of the full effect {effect_of(full).text()} (needs {share:.0%}): "
           f"{effect_of(part).text()}; '{without}' {effect_of(cells[without].estimate()).text()} is "
           f"{'equivalent' if rest.equivalent else 'not shown equivalent'} to 0 at +-{margin} (TOST p={rest.p_value:.3g})"
           ) + margin_caveat(margin, full.value)
    return Verdict(passed, why, effect_of(part), properties={"recovered_share": recovered, "full_effect": full.value,
                                                           "rest_tost_p": rest.p_value})
