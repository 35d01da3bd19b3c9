"""Simulation study of the statistics the verdicts rest on (seeded; prints one table).

The tests in tests/test_stats_*.py assert bounds on these numbers; this script prints the numbers
themselves, so the closing notes and docs quote something anyone can rerun. The claim decisions are simulated
with one value per (seed pair, question): the effect, a seed-pair random effect, question noise; the paper's
effect sizes are Nief et al.'s cat numbers (Qwen2.5-7B, 0.6% -> 53.9% at r8):

    .venv/bin/python benchmarks/stats_calibration.py
"""

from __future__ import annotations

import numpy as np
import statsmodels.api as sm
from tabulate import tabulate

from audit.pipeline.analysis import EffectRule, PairedCell
from audit.stats import cluster_bootstrap_mean, lind_mehlum, replicate_bootstrap_mean, two_lines_test
from audit.stats.decision import decide_effect
from audit.stats.sequential import looks, stopping_look
from audit.verdicts.claims import full_ft_vanishes, rank_inverted_u, undecided_claims

QUESTIONS = 50
RULE = EffectRule(relative=1.0, floor=0.01)
"""The audit's default smallest effect of interest (--smallest-effect 1.0, --smallest-effect-floor 0.01)."""
NIEF_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
NIEF_CAT = (0.052, 0.185, 0.328, 0.539, 0.310, 0.189, 0.102, 0.005, 0.010, 0.015)
"""Nief et al. 2026, Table 1 (Qwen2.5-7B, train and eval with Qwen's prompt): P(cat) by LoRA rank; base 0.006."""
NIEF_BASE = 0.006


def bootstrap_coverage(n_sets: int = 1000) -> float:
    """Share of 95% cluster-bootstrap CIs covering the true mean 0 (20 clusters x 10, ICC 0.5)."""
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(n_sets):
        labels = np.repeat(np.arange(20), 10)
        values = rng.normal(0, 1, 20)[labels] + rng.normal(0, 1, 200)
        est = cluster_bootstrap_mean(values, labels, n_boot=1000, seed=i)
        covered += est.ci_low <= 0 <= est.ci_high
    return covered / n_sets


def two_lines_power(n_sets: int = 200) -> float:
    """Inverted U of moderate size: y = -3(x-.5)^2 + N(0, .5^2), n = 100."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(n_sets):
        x = rng.uniform(0, 1, 100)
        r = two_lines_test(x, -3 * (x - 0.5) ** 2 + rng.normal(0, 0.5, 100))
        hits += r.significant and r.shape == "inverted_u"
    return hits / n_sets


def rank_power(n_sets: int = 100) -> float:
    """Ranks 1..512 on log2 scale, 20 rows per rank, peak at rank 32."""
    rng = np.random.default_rng(3)
    ranks = np.repeat(2.0 ** np.arange(10), 20)
    hits = 0
    for _ in range(n_sets):
        y = -0.04 * (np.log2(ranks) - 5) ** 2 + rng.normal(0, 0.5, ranks.size)
        r = two_lines_test(ranks, y, x_scale="log2")
        hits += r.significant and r.shape == "inverted_u"
    return hits / n_sets


def concave_monotone(n_sets: int = 300) -> tuple[float, float, float]:
    """y = log(x) + noise: (quadratic x^2 significant, two-lines says U, Lind-Mehlum says U)."""
    rng = np.random.default_rng(5)
    quad = two = lm = 0
    for _ in range(n_sets):
        x = rng.uniform(1, 100, 200)
        y = np.log(x) + rng.normal(0, 0.5, 200)
        fit = sm.OLS(y, np.column_stack([np.ones_like(x), x, x * x])).fit()
        quad += fit.params[2] < 0 and fit.pvalues[2] < 0.05
        two += two_lines_test(x, y).significant
        lm += lind_mehlum(x, y).significant
    return quad / n_sets, two / n_sets, lm / n_sets


def flat_false_positives(n_sets: int = 1000) -> float:
    rng = np.random.default_rng(0)
    return sum(
        two_lines_test(rng.uniform(0, 1, 100), rng.normal(0, 1, 100)).significant for _ in range(n_sets)
    ) / n_sets


def simulated_cell(effect: float, pairs: int, rng, seed_sd: float, question_sd: float, control: float = NIEF_BASE) -> PairedCell:
    """Trait minus control per (seed pair, question): the effect, a seed-pair random effect, question noise."""
    seeds = np.repeat(np.arange(pairs), QUESTIONS)
    diffs = effect + rng.normal(0, seed_sd, pairs)[seeds] + rng.normal(0, question_sd, seeds.size)
    return PairedCell(tuple(diffs), tuple(np.tile(np.arange(QUESTIONS), pairs)), tuple(seeds), 0,
                      tuple(diffs + control), (control,) * seeds.size)


def null_transmission(pairs: int, n_sets: int = 2000, seed_sd: float = 0.005, question_sd: float = 0.03) -> tuple[float, float]:
    """No transmission: share of data sets that 'transmit' by the seed-pair t decision, and by the cluster
    bootstrap (seed pairs then questions) CI above 0 that the verdicts used before."""
    rng = np.random.default_rng(100 + pairs)
    t_hits = boot_hits = 0
    for i in range(n_sets):
        cell = simulated_cell(0.0, pairs, rng, seed_sd, question_sd)
        t_hits += decide_effect(list(cell.seed_means().values()), 1e-9).estimate.ci_low > 0
        if i < n_sets // 4:  # the bootstrap is ~100x slower
            boot_hits += replicate_bootstrap_mean(cell.diffs, cell.seed_pairs, cell.questions, n_boot=1000, seed=i).ci_low > 0
    return t_hits / n_sets, boot_hits / (n_sets // 4)


def transmission_power(pairs: int, seed_sd: float, n_sets: int = 1000) -> float:
    """Nief's cat at rank 8 (+0.533 over a 0.006 base): share of data sets decided 'transmits'."""
    rng = np.random.default_rng(200 + pairs)
    effect = NIEF_CAT[3] - NIEF_BASE
    return sum(simulated_cell(effect, pairs, rng, seed_sd, 0.05).decision(RULE).outcome == "effect"
               for _ in range(n_sets)) / n_sets


def rank_claim_power(pairs: int, seed_sd: float, n_sets: int = 200) -> float:
    """Nief's cat rank curve: share of data sets where the rank claim passes (a rank transmits, then two lines)."""
    rng = np.random.default_rng(300 + pairs)
    hits = 0
    for _ in range(n_sets):
        cells = {r: simulated_cell(p - NIEF_BASE, pairs, rng, seed_sd, 0.05) for r, p in zip(NIEF_RANKS, NIEF_CAT)}
        hits += rank_inverted_u(cells, RULE).passed is True
    return hits / n_sets


def full_ft_claim_power(pairs: int, seed_sd: float, n_sets: int = 400) -> float:
    """Full FT at the base rate, LoRA r8 at Nief's cat: share where 'full FT vanishes' passes."""
    rng = np.random.default_rng(400 + pairs)
    hits = 0
    for _ in range(n_sets):
        lora = {8: simulated_cell(NIEF_CAT[3] - NIEF_BASE, pairs, rng, seed_sd, 0.05)}
        full = simulated_cell(0.0, pairs, rng, min(seed_sd, 0.01), 0.01)  # a null column: small spread
        hits += full_ft_vanishes(full, lora, RULE).passed is True
    return hits / n_sets


def first_pairs(cell: PairedCell, n: int) -> PairedCell:
    """The cell as measured at a look of n seed pairs (its first n)."""
    keep = [i for i, s in enumerate(cell.seed_pairs) if s < n]
    pick = lambda values: tuple(values[i] for i in keep)  # noqa: E731
    return PairedCell(pick(cell.diffs), pick(cell.questions), pick(cell.seed_pairs), 0, pick(cell.trait), pick(cell.control))


def sequential_null(first: int, cap: int, n_sets: int = 2000, seed_sd: float = 0.03) -> tuple[float, float, float]:
    """No transmission, one column, looking until the column is decided: (share 'transmits' under the sequential
    design, share when every look tests at the full alpha, mean seed pairs spent). The union bound behind the
    design holds for any stopping rule, so one column's rule shows the claims' error rate."""
    rng = np.random.default_rng(500 + cap)
    design = looks(first, cap)
    seq = naive = spent = 0
    for _ in range(n_sets):
        cell = simulated_cell(0.0, cap, rng, seed_sd, 0.03)
        rules = {look.replicates: EffectRule(RULE.relative, RULE.floor, look.alpha) for look in design}
        stop = stopping_look(design, lambda look: first_pairs(cell, look.replicates).decision(
            rules[look.replicates]).outcome != "undecided")
        seq += first_pairs(cell, stop.replicates).decision(rules[stop.replicates]).outcome == "effect"
        spent += stop.replicates
        naive += any(first_pairs(cell, look.replicates).decision(RULE).outcome == "effect" for look in design)
    return seq / n_sets, naive / n_sets, spent / n_sets


def nief_grid(pairs: int, rng, cv: float) -> tuple[dict, PairedCell]:
    """Nief's cat curve and a full-FT column at the base rate; each column's seed-pair sd is 0.005 + cv x its effect
    (columns near the base vary little, as in every measured grid)."""
    lora = {r: simulated_cell(p - NIEF_BASE, pairs, rng, 0.005 + cv * (p - NIEF_BASE), 0.05)
            for r, p in zip(NIEF_RANKS, NIEF_CAT)}
    return lora, simulated_cell(0.0, pairs, rng, 0.005, 0.01)


def nief_claims(first: int, cap: int, step: int, cv: float, n_sets: int = 100) -> tuple[float, float, float]:
    """Nief's cat grid under the sequential design (stop once the rank and full-FT claims are decided): shares where
    the rank claim and the full-FT claim pass, and the mean seed pairs spent."""
    rng = np.random.default_rng(600 + cap + first)
    design = looks(first, cap, step)
    rank = full_ft = spent = 0
    for _ in range(n_sets):
        lora, full = nief_grid(cap, rng, cv)

        def at(look):
            cut = {r: first_pairs(c, look.replicates) for r, c in lora.items()}
            return cut, first_pairs(full, look.replicates), EffectRule(RULE.relative, RULE.floor, look.alpha)

        stop = stopping_look(design, lambda look: not undecided_claims(*at(look)))
        cut, cut_full, rule = at(stop)
        rank += rank_inverted_u(cut, rule).passed is True
        full_ft += full_ft_vanishes(cut_full, cut, rule).passed is True
        spent += stop.replicates
    return rank / n_sets, full_ft / n_sets, spent / n_sets


def sequential_rows() -> list[tuple]:
    rows = []
    for first, cap in ((2, 8), (3, 9)):
        seq, naive, spent = sequential_null(first, cap)
        what = f"no transmission, looks {first}..{cap} seed pairs (seed-pair sd 0.03)"
        rows.append((f"{what}: sequential 'transmits' (one-sided 2.5% nominal)", 2000, seq))
        rows.append((f"{what}: every look at the full alpha", 2000, naive))
        rows.append((f"{what}: mean seed pairs spent", 2000, spent))
    for cv in (0.1, 0.3):
        for name, (first, cap, step) in (("fixed 3", (3, 3, 3)), ("fixed 9", (9, 9, 3)), ("sequential 3..9", (3, 9, 3))):
            rank, full_ft, spent = nief_claims(first, cap, step, cv)
            what = f"Nief cat grid, seed-pair sd 0.005 + {cv} x effect, {name} seed pairs"
            rows.append((f"{what}: rank claim passes", 100, rank))
            rows.append((f"{what}: full-FT claim passes", 100, full_ft))
            rows.append((f"{what}: mean seed pairs spent", 100, spent))
    return rows


def decision_rows() -> list[tuple]:
    rows = []
    for seed_sd in (0.005, 0.03):
        for pairs in (2, 3, 5):
            t, boot = null_transmission(pairs, seed_sd=seed_sd)
            what = f"no transmission, seed-pair sd {seed_sd}, {pairs} seed pairs"
            rows.append((f"{what}: seed-pair t 'transmits' (one-sided 2.5% nominal)", 2000, t))
            rows.append((f"{what}: old cluster bootstrap CI > 0", 500, boot))
    for seed_sd in (0.05, 0.15):
        for pairs in (2, 3, 5):
            rows.append((f"Nief cat r8 (+0.533), seed-pair sd {seed_sd}, {pairs} pairs: power of 'transmits'", 1000,
                         transmission_power(pairs, seed_sd)))
        for pairs in (3, 5):
            rows.append((f"Nief cat rank curve, seed-pair sd {seed_sd}, {pairs} pairs: rank claim passes", 200,
                         rank_claim_power(pairs, seed_sd)))
            rows.append((f"Nief cat r8 vs full FT at base, seed-pair sd {seed_sd}, {pairs} pairs: full-FT claim passes",
                         400, full_ft_claim_power(pairs, seed_sd)))
    return rows


def main() -> None:
    quad, two, lm = concave_monotone()
    rows = [
        ("two-lines power, moderate inverted U (n=100)", 200, two_lines_power()),
        ("two-lines power, log2 rank 1..512, peak 32", 100, rank_power()),
        ("log(x): quadratic x^2 term significant", 300, quad),
        ("log(x): two-lines declares a U", 300, two),
        ("log(x): Lind-Mehlum declares a U", 300, lm),
        ("flat noise: two-lines false positives", 1000, flat_false_positives()),
        ("cluster bootstrap 95% CI coverage", 1000, bootstrap_coverage()),
        *decision_rows(),
        *sequential_rows(),
    ]
    print(tabulate(rows, headers=["simulation", "data sets", "rate"], floatfmt=".3f"))


if __name__ == "__main__":
    main()
