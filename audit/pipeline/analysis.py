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
        """Mean difference, cluster bootstrap CI: seed pairs, then questions within (DESIGN.md §6)."""
        from audit.stats import replicate_bootstrap_mean

        return replicate_bootstrap_mean(self.diffs, self.seed_pairs, self.questions, n_boot=2000, seed=0)

    def level(self, side: str):
        """Mean value of one side ("trait" or "control"), resampled like `estimate`."""
        from audit.stats import replicate_bootstrap_mean

        return replicate_bootstrap_mean(getattr(self, side), self.seed_pairs, self.questions, n_boot=1000, seed=0)

    def equivalence(self, margin: float):
        """TOST against +-margin with the same unit of replication as `estimate`: seed pairs when there
        are two or more (a t-test on their means, few df and so little power), else questions."""
        from audit.stats import tost

        clusters = self.seed_pairs if len(set(self.seed_pairs)) >= 2 else self.questions
        return tost(self.diffs, margin, clusters=clusters)

    def seed_means(self) -> dict[int, float]:
        d, s = np.asarray(self.diffs), np.asarray(self.seed_pairs)
        return {int(k): float(d[s == k].mean()) for k in np.unique(s)}


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
