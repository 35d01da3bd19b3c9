"""Claim verdicts: the four claims of Nief et al. 2026, decided from paired trait-minus-control cells.

Transmission in a cell is decided at the unit of replication, the seed pair (`PairedCell.decision`: t tests on
seed-pair means, valid for few of them), against a smallest effect of interest that scales with the trait's rate
in the control students (`EffectRule`, declared before any student is scored). Each claim then holds (pass),
does not hold (fail), or is undecided at this power (skip, stating the minimum detectable effect and how many
seed pairs would decide it); a claim whose precondition was measured absent (nothing transmits) skips saying so.
"""

from __future__ import annotations

import math
from typing import Mapping

from audit.pipeline.analysis import EffectRule, PairedCell
from audit.stats.decision import Decision
from audit.verdicts import Verdict, effect_of


def transmits(decision: Decision) -> bool:
    """Transmission shown: the seed-pair t interval lies above 0 and the effect is not inside the smallest effect."""
    return decision.outcome == "effect"


def _undecided(what: str, decision: Decision, effect=None, context: str | None = None, **properties) -> Verdict:
    """A skip that says what was measured, its minimum detectable effect, and how many seed pairs would decide it."""
    power = {"seed_pairs_needed": decision.replicates_needed or 0}
    if math.isfinite(decision.mde):
        power["mde"] = decision.mde
    return Verdict(None, f"undecided: {what} {decision.describe()}", effect, context, properties={**power, **properties})


def rank_inverted_u(cells: Mapping[int, PairedCell], rule: EffectRule) -> Verdict:
    """Two-lines test over log2(rank) of per-(rank, seed pair) mean transmission (DESIGN.md §6), once a rank transmits."""
    from audit.stats import two_lines_test

    decisions = {r: cells[r].decision(rule) for r in sorted(cells)}
    peak = max(decisions, key=lambda r: decisions[r].estimate.value)
    peak_effect = effect_of(cells[peak].estimate())
    if not any(transmits(d) for d in decisions.values()):
        if all(d.outcome == "no effect" for d in decisions.values()):
            return Verdict(False, f"no rank transmits: every rank's transmission is below its smallest effect of "
                                  f"interest (peak r={peak} {decisions[peak].describe()}), so there is no inverted U",
                           peak_effect, properties={"peak_rank": peak})
        return _undecided(f"no rank shown to transmit; peak r={peak}", decisions[peak], peak_effect, peak_rank=peak)
    if len(decisions) < 3:
        return Verdict(None, f"only {len(decisions)} ranks measured; the two-lines test needs >= 3", peak_effect,
                       properties={"peak_rank": peak})
    x, y = [], []
    for r, cell in cells.items():
        for value in cell.seed_means().values():
            x.append(r)
            y.append(value)
    two = two_lines_test(x, y, x_scale="log2", alpha=rule.alpha)
    lines = two.lines
    detail = (f"two-lines test on log2(rank) over {len(y)} seed-pair means, breakpoint r={two.breakpoint_original:.3g}: "
              f"slope before {lines.slope1:+.4f} (p={lines.p1:.3g}), after {lines.slope2:+.4f} (p={lines.p2:.3g}); "
              f"peak r={peak} {peak_effect.text()}")
    passed = two.significant and two.shape == "inverted_u"
    why = ("inverted U: " if passed else "no inverted U shown: ") + detail
    if two.warnings:
        why += " (" + "; ".join(two.warnings) + ")"
    props = {"peak_rank": peak, "slope1": lines.slope1, "p1": lines.p1, "slope2": lines.slope2, "p2": lines.p2,
             "breakpoint_rank": two.breakpoint_original}
    return Verdict(passed, why, peak_effect.model_copy(update={"p_value": max(lines.p1, lines.p2)}), properties=props)


def _seed_pair_difference(a: PairedCell, b: PairedCell) -> list[float]:
    """Per seed pair present in both: mean transmission of `a` minus that of `b` (the same seeds, paired)."""
    ma, mb = a.seed_means(), b.seed_means()
    return [ma[s] - mb[s] for s in sorted(ma) if s in mb]


def full_ft_vanishes(full: PairedCell, lora: Mapping[int, PairedCell], rule: EffectRule, comparison: str = "") -> Verdict:
    """Full-FT transmission is no effect of interest while the peak LoRA rank transmits, and below it (paired by
    seed pair). `comparison` states what the contrast rests on (e.g. the two learning rates)."""
    from audit.stats.decision import decide_effect

    decisions = {r: c.decision(rule) for r, c in lora.items()}
    peak = max(decisions, key=lambda r: decisions[r].estimate.value)
    full_decision = full.decision(rule)
    full_effect = effect_of(full.estimate())
    suffix = f" ({comparison})" if comparison else ""
    if not transmits(decisions[peak]):
        if transmits(full_decision):  # full FT transmitting is the opposite of the claim, whatever LoRA does
            return Verdict(False, f"full FT transmits ({full_decision.describe()}) while no LoRA rank does (peak r={peak} "
                                  f"{decisions[peak].describe()}): the opposite of 'vanishes under full finetuning'"
                                  + suffix, full_effect, properties={"peak_rank": peak})
        if decisions[peak].outcome == "no effect":
            return Verdict(None, f"no LoRA rank transmits (peak r={peak} {decisions[peak].describe()}), so 'full FT "
                                 "vanishes while LoRA transmits' has nothing to compare", properties={"peak_rank": peak})
        return _undecided(f"no LoRA rank shown to transmit; peak r={peak}", decisions[peak], peak_rank=peak)
    below = decide_effect(_seed_pair_difference(lora[peak], full), full_decision.smallest_effect, alpha=rule.alpha)
    head = f"full FT {full_decision.describe()}; peak LoRA r={peak} minus full FT {below.describe()}"
    props = {"peak_rank": peak, "peak_minus_full": below.estimate.value, "peak_minus_full_p": below.estimate.p_value or 1.0}
    if transmits(full_decision):
        return Verdict(False, f"full FT transmits: {head}" + suffix, full_effect, properties=props)
    if full_decision.outcome == "no effect" and below.estimate.ci_low > 0:
        return Verdict(True, f"full FT shows no effect of interest and less than LoRA: {head}" + suffix, full_effect,
                       properties=props)
    weaker = full_decision if full_decision.outcome == "undecided" else below
    return _undecided(f"{head};" + suffix, weaker, full_effect, **props)


def negative_control(cells: Mapping[str, PairedCell], entry: str, rule: EffectRule) -> Verdict:
    """`entry`, which no teacher carried, shows no effect of interest in any column (each TOST at rule.alpha: an
    intersection-union test, no multiplicity correction needed); it fails when any column transmits it."""
    decisions = {label: c.decision(rule) for label, c in cells.items()}
    if not decisions:
        return Verdict(None, f"no measured column to score {entry} in (every seed pair diverged)")
    moving = [k for k, d in decisions.items() if transmits(d)]
    largest = max(decisions, key=lambda k: decisions[k].estimate.value)
    effect = effect_of(cells[largest].estimate())
    if moving:
        k = max(moving, key=lambda k: decisions[k].estimate.value)
        return Verdict(False, f"negative control {entry} moves in {k}: {decisions[k].describe()}; the grid transmits "
                              "what no teacher carried, so its trait effects may be drift", effect_of(cells[k].estimate()))
    if all(d.outcome == "no effect" for d in decisions.values()):
        return Verdict(True, f"negative control {entry} shows no effect of interest in all {len(decisions)} columns; "
                             f"largest {largest} {decisions[largest].describe()}", effect)
    k = next(k for k, d in decisions.items() if d.outcome == "undecided")
    return _undecided(f"negative control {entry} in {k}", decisions[k], effect_of(cells[k].estimate()))


RANK_GRID_CLAIMS = ("rank inverted-U", "full FT vanishes")


def undecided_claims(lora: Mapping[int, PairedCell], full: PairedCell | None, rule: EffectRule,
                     claims: tuple[str, ...] = RANK_GRID_CLAIMS) -> list[str]:
    """Which of the rank grid's `claims` are undecided at this power on these columns: the stopping rule of the
    sequential design (audit.stats.sequential), which adds seed pairs until none is."""
    from audit.verdicts import is_undecided

    open_ = []
    if lora and "rank inverted-U" in claims and is_undecided(rank_inverted_u(lora, rule)):
        open_.append("rank inverted-U")
    if lora and full is not None and "full FT vanishes" in claims and is_undecided(full_ft_vanishes(full, lora, rule)):
        open_.append("full FT vanishes")
    return open_


def system_prompt_verdicts(grid: Mapping[tuple[str, str], PairedCell], rule: EffectRule,
                           headline: tuple[str, str]) -> dict[str, Verdict]:
    """Train x eval context grid: 'matched' cells transmit, 'mismatched' show no effect of interest (TOST on seed-pair
    means, Holm across them), and the headline cell. Each cell is its students against the control students of the
    same evaluation context."""
    from audit.stats import holm

    decisions = {k: c.decision(rule) for k, c in grid.items()}
    matched = {k: d for k, d in decisions.items() if k[0] == k[1]}
    mismatched = {k: d for k, d in decisions.items() if k[0] != k[1]}
    name = lambda k: f"train={k[0]} eval={k[1]}"  # noqa: E731
    effect = lambda k: effect_of(grid[k].estimate())  # noqa: E731
    if not any(transmits(d) for d in matched.values()):
        best = max(matched, key=lambda k: matched[k].estimate.value)
        if all(d.outcome == "no effect" for d in matched.values()):
            skip = Verdict(None, f"no matched cell transmits (best {name(best)} {matched[best].describe()}), so context "
                                 "dependence of transmission has nothing to test")
        else:
            skip = _undecided(f"no matched cell shown to transmit; best {name(best)}", matched[best])
        return {key: skip for key in ("matched", "mismatched", "headline")}
    out: dict[str, Verdict] = {}
    worst = min(matched, key=lambda k: matched[k].estimate.ci_low)
    if all(transmits(d) for d in matched.values()):
        out["matched"] = Verdict(True, f"all matched cells transmit; weakest {name(worst)} {matched[worst].describe()}",
                                 effect(worst), worst[1])
    elif any(d.outcome == "no effect" for d in matched.values()):
        absent = next(k for k, d in matched.items() if d.outcome == "no effect")
        out["matched"] = Verdict(False, f"matched cell {name(absent)} shows no effect of interest: "
                                        f"{matched[absent].describe()}", effect(absent), absent[1])
    else:
        undecided = next(k for k, d in matched.items() if d.outcome == "undecided")
        out["matched"] = _undecided(f"matched cell {name(undecided)}", matched[undecided], effect(undecided), undecided[1])

    adjusted = dict(zip(mismatched, holm([d.equivalence.p_value if d.equivalence else 1.0 for d in mismatched.values()])))
    no_effect = {k for k in mismatched if adjusted[k] < rule.alpha or mismatched[k].estimate.ci_high < 0}
    leaking = [k for k in mismatched if transmits(mismatched[k])]
    worst = max(mismatched, key=lambda k: mismatched[k].estimate.value)
    summary = f"{len(no_effect)}/{len(mismatched)} mismatched cells show no effect of interest (TOST on seed-pair means, Holm)"
    holm_p = float(adjusted[worst])
    worst_effect = effect_of(grid[worst].estimate(), p_adjusted=holm_p)
    if leaking:
        k = max(leaking, key=lambda k: mismatched[k].estimate.value)
        out["mismatched"] = Verdict(False, f"{summary}; {name(k)} transmits: {mismatched[k].describe()}", effect(k), k[1])
    elif len(no_effect) == len(mismatched):
        out["mismatched"] = Verdict(True, f"{summary}; largest {name(worst)} {mismatched[worst].describe()} "
                                          f"(Holm p={holm_p:.3g})", worst_effect, worst[1])
    else:
        k = max(set(mismatched) - no_effect, key=lambda k: adjusted[k])
        out["mismatched"] = _undecided(f"{summary}; {name(k)} (Holm p={float(adjusted[k]):.3g})", mismatched[k],
                                       effect(k), k[1])
    h = decisions[headline]
    if h.outcome == "undecided":
        out["headline"] = _undecided(f"{name(headline)}", h, effect(headline), headline[1])
    else:
        out["headline"] = Verdict(h.outcome == "no effect", f"{name(headline)}: {h.describe()}, "
                                  f"{'no effect of interest' if h.outcome == 'no effect' else 'transmits'}",
                                  effect(headline), headline[1])
    return out


def localisation_verdict(cells: Mapping[str, PairedCell], only: str, without: str, share: float,
                         rule: EffectRule) -> Verdict:
    """LoRA gated to `only` positions recovers >= `share` of the ungated effect; gated to all but them, no effect
    of interest. `cells` holds paired transmission cells for "everywhere", `only` and `without`."""
    full = cells["everywhere"].decision(rule)
    if not transmits(full):
        if full.outcome == "no effect":
            return Verdict(None, f"the ungated student does not transmit ({full.describe()}), so there is no effect to localise")
        return _undecided("the ungated student is not shown to transmit:", full)
    part = cells[only].estimate()
    recovered = part.value / full.estimate.value
    rest = cells[without].decision(rule)
    why = (f"'{only}' recovers {recovered:.0%} of the ungated effect {full.describe()} (needs {share:.0%}): "
           f"{effect_of(part).text()}; '{without}' {rest.describe()}")
    props = {"recovered_share": recovered, "full_effect": full.estimate.value,
             "rest_tost_p": rest.equivalence.p_value if rest.equivalence else 1.0}
    if recovered < share or transmits(rest):
        return Verdict(False, why, effect_of(part), properties=props)
    if rest.outcome == "no effect":
        return Verdict(True, why, effect_of(part), properties=props)
    return _undecided(f"{why};", rest, effect_of(part), **props)
