"""Transmission: trait student minus its matched control student (same config and seeds), per question.

One pairing rule (`paired_cells`) serves the audit's claims and the pipeline's command line alike.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from audit.errors import SubauditError
from audit.pipeline.students import fifth_means, is_diverged


class AnalysisError(SubauditError):
    """Results cannot be paired (one line, naming the fix)."""


@dataclass(frozen=True)
class PairedCell:
    """Per (seed pair, question) rows of one student config: trait student minus control student."""

    diffs: tuple[float, ...]
    """Trait minus control value of each row."""
    questions: tuple[int, ...]
    """Cluster label of each row (the question index)."""
    seed_pairs: tuple[int, ...]
    """Seed-pair index of each row."""
    diverged_pairs: int = 0
    """Seed pairs left out because their trait or control student diverged (never counted as transmission)."""
    trait: tuple[float, ...] = ()
    """The trait student's value of each row (empty when the cell was built from differences alone)."""
    control: tuple[float, ...] = ()
    """The control student's value of each row (same)."""

    @property
    def measured(self) -> bool:
        """Whether any seed pair is left to measure (all may have diverged)."""
        return bool(self.diffs)

    @property
    def n_seed_pairs(self) -> int:
        return len(set(self.seed_pairs))

    def estimate(self):
        """Mean difference with a t interval at the unit of replication (DESIGN.md §6): over seed-pair means
        (k - 1 df) when there are two or more seed pairs; with one, over questions, which leaves the seed
        variance unmeasured (its decision is then undecided, `decision`)."""
        return _replicate_t(self.diffs, self.seed_pairs, self.questions)

    def level(self, side: str):
        """Mean value of one side ("trait" or "control"), with the interval of `estimate`."""
        return _replicate_t(getattr(self, side), self.seed_pairs, self.questions)

    def decision(self, rule: "EffectRule"):
        """Transmission decided on the seed-pair means against the smallest effect of interest that `rule` gives
        for this cell's control rate (audit.stats.decision)."""
        from audit.stats.decision import decide_effect

        return decide_effect(list(self.seed_means().values()), rule.smallest(self.control_rate), alpha=rule.alpha)

    @property
    def control_rate(self) -> float:
        """Mean value of the control students (0 when the cell was built from differences alone)."""
        return float(np.mean(self.control)) if self.control else 0.0

    def seed_means(self) -> dict[int, float]:
        d, s = np.asarray(self.diffs), np.asarray(self.seed_pairs)
        return {int(k): float(d[s == k].mean()) for k in np.unique(s)}


@dataclass(frozen=True)
class EffectRule:
    """The smallest effect of interest, declared before any student is scored: a shift of `relative` times the
    trait's rate in the control students, never below `floor` (audit.stats.decision.smallest_effect)."""

    relative: float
    """Multiple of the control rate (1.0: transmission must at least double the trait's rate)."""
    floor: float
    """Least smallest effect, in probability (a rate near 0 would otherwise make any noise interesting)."""
    alpha: float = 0.05
    """Level of each decision (two-sided t interval, TOST); below 0.05 at a look of a sequential design."""

    def smallest(self, control_rate: float) -> float:
        from audit.stats.decision import smallest_effect

        return smallest_effect(control_rate, self.relative, self.floor)


def _replicate_t(values, seed_pairs, questions):
    from audit.stats import paired_difference

    values = np.asarray(values, dtype=float)
    zeros = np.zeros_like(values)
    clusters = seed_pairs if len(set(seed_pairs)) >= 2 else questions
    return paired_difference(values, zeros, clusters=clusters)


def paired_cells(results: Sequence, statistic: str = "probability") -> dict[str, PairedCell]:
    """The one pairing rule: per student label, trait minus control `statistic` (audit.scoring.TraitScores.values:
    "probability" or "share"), paired by (dataset seed, training seed, question).

    A seed pair whose trait or control student diverged is left out and counted: a diverged student is reported
    as diverged, never as transmission. A student without its partner is an AnalysisError.
    """
    sides: dict[str, dict[tuple[int, int], dict[str, object]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        side = "control" if r.cell.teacher.kind == "control" else "trait"
        sides[r.cell.student.label][(r.cell.dataset_seed, r.cell.training_seed)][side] = r
    out = {}
    for label, by_seed in sides.items():
        rows: dict[str, list] = {"diffs": [], "questions": [], "seed_pairs": [], "trait": [], "control": []}
        diverged = 0
        for s, (seeds, pair) in enumerate(sorted(by_seed.items())):
            if set(pair) != {"trait", "control"}:
                missing = "control" if "trait" in pair else "trait"
                raise AnalysisError(f"{label} seeds {seeds} lacks its {missing} student; run the full grid")
            if any(is_diverged(pair[side].training) for side in ("trait", "control")):
                diverged += 1
                continue
            trait, control = pair["trait"].scores.values(statistic), pair["control"].scores.values(statistic)
            for q, (pt, pc) in enumerate(zip(trait, control)):
                for key, value in (("diffs", pt - pc), ("questions", q), ("seed_pairs", s), ("trait", pt), ("control", pc)):
                    rows[key].append(value)
        out[label] = PairedCell(tuple(rows["diffs"]), tuple(rows["questions"]), tuple(rows["seed_pairs"]), diverged,
                                tuple(rows["trait"]), tuple(rows["control"]))
    return out


def student_table(results: Sequence, statistic: str = "probability") -> str:
    """A Markdown table of every student's training diagnostics and its mean `statistic`, one row per cell.

    Loss: mean over the first and the last fifth of the steps (as `divergence` judges it); KL: per completion
    token on held-out teacher completions, before -> after training; "-" where not recorded.
    """
    def number(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"| student | steps | loss first fifth -> last fifth | held-out KL before -> after | max grad norm "
             f"| padding | train s | diverged | mean {statistic} |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t = r.training
        losses = t.get("losses")
        loss = "{:.3f} -> {:.3f}".format(*fifth_means(losses)) if losses else "-"
        kl = f"{number(t.get('heldout_kl_before'), '.4f')} -> {number(t.get('heldout_kl_after'), '.4f')}"
        values = [v for v in r.scores.values(statistic) if v == v]  # NaN: undefined share
        mean = sum(values) / len(values) if values else None
        lines.append(f"| {r.cell.label} | {t.get('steps', '-')} | {loss} | {kl} | {number(t.get('grad_norm_max'), '.2f')} "
                     f"| {number(t.get('padding_share'), '.1%')} | {number(t.get('seconds'), '.0f')} "
                     f"| {'yes' if is_diverged(t) else 'no'} | {number(mean, '.4f')} |")
    return "\n".join(lines)
