"""Transmission: trait student minus its matched control student (same config and seeds), per question."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from audit.pipeline.students import fifth_means, is_diverged


class AnalysisError(Exception):
    """Results cannot be paired (one line, naming the fix)."""


@dataclass(frozen=True)
class Transmission:
    """Paired effect of one student config, over seed pairs and questions."""

    student: str
    """Student label (e.g. 'lora-r4')."""
    estimate: object
    """audit.stats.Estimate of mean P(target) (trait student - control student)."""
    trait_mean: float
    control_mean: float
    n_seed_pairs: int
    diverged: int
    """Students (trait or control) flagged as diverged in this config."""


def transmission(results: Sequence, statistic: str = "probability", n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Transmission]:
    """Per student config: cluster-bootstrap CI of the paired per-question difference of `statistic`
    (audit.scoring.TraitScores.values: "probability" or "share").

    Rows are (seed pair, question); the seed pair is the unit of replication (DESIGN §6), see
    `audit.stats.replicate_bootstrap_mean`.
    """
    from audit.stats import replicate_bootstrap_mean

    pairs: dict[str, dict[tuple, dict[str, object]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        side = "control" if r.cell.teacher.kind == "control" else "trait"
        pairs[r.cell.student.label][(r.cell.dataset_seed, r.cell.training_seed)][side] = r
    out = {}
    for label, by_seed in pairs.items():
        diffs, seed_pairs, questions, trait_vals, control_vals, diverged = [], [], [], [], [], 0
        for seeds, sides in sorted(by_seed.items()):
            if set(sides) != {"trait", "control"}:
                raise AnalysisError(f"{label} seeds {seeds} lacks its {'control' if 'trait' in sides else 'trait'} student; run the full grid")
            t, c = sides["trait"], sides["control"]
            diverged += is_diverged(t.training) + is_diverged(c.training)
            for q, (pt, pc) in enumerate(zip(t.scores.values(statistic), c.scores.values(statistic))):
                diffs.append(pt - pc)
                seed_pairs.append(seeds)
                questions.append(q)
                trait_vals.append(pt)
                control_vals.append(pc)
        estimate = replicate_bootstrap_mean(diffs, seed_pairs, questions, n_boot=n_boot, seed=seed)
        out[label] = Transmission(label, estimate, sum(trait_vals) / len(trait_vals),
                                  sum(control_vals) / len(control_vals), len(by_seed), diverged)
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
