"""Exact and sampled scorers on real engines: are they equivalent within a declared margin? (issue 6, DESIGN §6)

Per question, the exact and the sampled value of one statistic (audit.scoring) are paired, and agreement is
an equivalence test (TOST, audit.stats.tost; one row per question, so sampling noise and question spread are
both in its t interval) of the mean paired difference exact - sampled against +-MARGIN. A CI that merely
covers 0 is not agreement: the noisier the sampled side, the wider its CI and the easier it covers 0. Under
TOST noise widens the 90% interval until it no longer fits inside the margin, so noisy data fails.

- MARGIN = 0.02 in probability, taken from the audit, not fitted to these data: its own default equivalence margin
  (`--margin 0.02`, README), the largest shift of P(trait) it calls "no effect". Scorers that the audit
  treats as interchangeable must disagree by less than that, or a "no effect" verdict could depend on which
  scorer was used. Each check is a level-0.05 TOST (90% interval inside the margin) with no multiplicity
  adjustment: the suite claims that *every* case is equivalent, an intersection-union test, whose
  family-wise level is the per-check level (Berger 1982). Where a case's sample size cannot reach
  equivalence, it is a strict xfail with the measured numbers; the margin is not widened for it.
- tiny-qwen answers in one word, so the reference protocol's events coincide (exact: the whole answer is
  the target; sampled: a sample mentions it) and both statistics are equivalent, at TINY_SAMPLES per question.
- SmolLM2-135M-Instruct is chatty: few of its samples are a lone word ("The cat.", "there's that cat that's
  been hiding"). Under the reference protocol neither statistic agrees, and these cases are strict xfails
  carrying the measured numbers: they fail the suite if the scorers ever become equivalent there, so the
  cause cannot silently go away. Summing the exact scorer over the answer formats "X", "X.", "The X.",
  "A X." narrowed but did not close it (exact share 0.62 [0.58, 0.66], paired CI [-0.25, -0.01]).
- With the answer prefilled ("My favorite animal is the", `prefill=True`) both scorers read one slot. On
  SmolLM2 the probability is equivalent, base and with the cat system prompt; the share is a ratio over the
  few samples that fill the slot with a panel entry, too noisy at 100 samples per question for the 0.02
  margin (strict xfails, SMOLLM2_PREFILLED_SHARE). Numbers: benchmarks/scoring_agreement.py [--prefill].
"""

from __future__ import annotations

import pytest

TARGET = "cat"
SMOLLM2_SAMPLES = {"base": 30, "teacher": 10}
"""Samples per question: only 5% of base samples name a panel entry, so the base share needs 30 to mean anything."""
SMOLLM2_DISAGREES = (
    "measured disagreement by construction: SmolLM2 rarely answers with a lone word, so exact P(whole answer is "
    "'Cat'+end of turn) << sampled P(sample mentions cat); see benchmarks/scoring_agreement.py"
)
SMOLLM2_PROBABILITY_DISAGREES = {
    "base": f"{SMOLLM2_DISAGREES}; measured (n=30/question, 50 questions): exact 0.0007 vs sampled 0.0233, exact - "
            "sampled -0.023, 90% CI [-0.030, -0.015], not inside +-0.02 (a 30x ratio, small only because P is)",
    "teacher": f"{SMOLLM2_DISAGREES}; measured (n=10/question, 50 questions): exact 0.0074 vs sampled 0.114, exact - "
               "sampled -0.107, 90% CI [-0.129, -0.084], not inside +-0.02",
}
SMOLLM2_SHARE_DISAGREES = {
    "base": "measured (n=30/question, 36 questions with a panel mention): exact share 0.23 [0.18, 0.28] (one-word "
            "answers) vs sampled 0.46 [0.32, 0.60] (panel mentions, mostly sentences); exact - sampled -0.23, "
            "90% CI [-0.35, -0.11], not inside +-0.02",
    "teacher": "measured (n=10/question, 42 questions with a panel mention): exact share 0.51 [0.46, 0.55] (one-word "
               "answers) vs sampled 0.76 [0.64, 0.87] (panel mentions, mostly sentences); exact - sampled -0.25, "
               "90% CI [-0.35, -0.15], not inside +-0.02",
}
SMOLLM2_PREFILLED_SHARE = {
    "base": "cannot reach equivalence at n=100/question: the share is P(cat | the slot names a panel entry) over ~8.3 "
            "slot hits per question, so the 90% interval's half-width alone is 0.046, wider than the 0.02 margin "
            "whatever the difference. Measured: exact 0.338 vs sampled 0.268, exact - sampled +0.070, 90% CI "
            "[+0.024, +0.116] (sampling seed 0); seed 1: 0.336 vs 0.358, -0.022 [-0.068, +0.025]. The probability "
            "is equivalent at this n",
    "teacher": "cannot reach equivalence at n=100/question: ~37 slot hits per question give the share a 90% "
               "half-width of 0.018, leaving 0.002 of the 0.02 margin for the difference. Measured: exact 0.756 vs "
               "sampled 0.741, exact - sampled +0.014, 90% CI [-0.004, +0.032] (sampling seed 0); seed 1: 0.756 vs "
               "0.765, -0.009 [-0.028, +0.010]. Reaching the margin needs ~4x the samples; the probability is "
               "equivalent at this n",
}
SMOLLM2_PREFILLED_SAMPLES = 100
"""The reference's N: at 30 per question only ~2.5 samples per question fill the slot with a panel entry (base),
too few for a per-question share."""
MARGIN = 0.02
"""Equivalence margin on exact - sampled, in probability: the audit's default `--margin` (module docstring)."""
ALPHA = 0.05
"""Level of each one-sided test: equivalence iff the 90% t interval of the mean difference is inside +-MARGIN."""
TINY_SAMPLES = 400
"""Samples per question on tiny-qwen: enough resolution for the margin. With the cat prompt (P(cat) ~ 0.72) the
sampled mean's binomial SE over 50 questions is 0.0064 at 100 samples, a 90% half-width of 0.011 that leaves
0.009 of the 0.02 margin: measured at 100, the 90% interval reached 0.023-0.026 (sampling seeds 0 and 2), not
equivalent although the scorers agree. At 400 (seeds 0-4) the widest reach was 0.011 (teacher probability),
0.007 on the base; 400 samples x 50 questions cost ~10 s per context on tiny-qwen."""
TINY = [pytest.mark.tiny_model, pytest.mark.slow]
SMOLLM2 = [pytest.mark.packaged_model, pytest.mark.slow]

CASES = [
    pytest.param("tiny-qwen", TINY_SAMPLES, False, teacher, statistic, marks=TINY,
                 id=f"tiny-qwen-{teacher}-{statistic}")
    for teacher in ("base", "teacher") for statistic in ("probability", "share")
] + [
    pytest.param("smollm2", SMOLLM2_SAMPLES[teacher], False, teacher, statistic, id=f"smollm2-{teacher}-{statistic}",
                 marks=[*SMOLLM2, pytest.mark.xfail(strict=True, reason=reason)])
    for teacher in ("base", "teacher")
    for statistic, reason in (("probability", SMOLLM2_PROBABILITY_DISAGREES[teacher]),
                              ("share", SMOLLM2_SHARE_DISAGREES[teacher]))
] + [
    pytest.param("smollm2", SMOLLM2_PREFILLED_SAMPLES, True, teacher, "probability", marks=SMOLLM2,
                 id=f"smollm2-prefilled-{teacher}-probability")
    for teacher in ("base", "teacher")
] + [
    pytest.param("smollm2", SMOLLM2_PREFILLED_SAMPLES, True, teacher, "share", id=f"smollm2-prefilled-{teacher}-share",
                 marks=[*SMOLLM2, pytest.mark.xfail(strict=True, reason=SMOLLM2_PREFILLED_SHARE[teacher])])
    for teacher in ("base", "teacher")
]


@pytest.fixture(scope="module")
def scored():
    """(exact, sampled) TraitScores per (model alias, teacher, samples, prefill), computed once for both statistics."""
    import torch

    from audit.engines import open_engine
    from audit.models import resolve_model
    from audit.pipeline.teachers import control_teacher, system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer

    torch.set_num_threads(1)  # shared CPU
    probes = load_probe_set("animal")
    engines: dict[str, tuple] = {}
    scores: dict[tuple, tuple] = {}

    def get(alias: str, teacher: str, n_samples: int, prefill: bool):
        if alias not in engines:
            if alias == "smollm2":
                from audit.models.packaged import PACKAGES, package_dir

                if any(package_dir(name) is None for name, _ in PACKAGES["smollm2"].parts):
                    pytest.skip("SmolLM2-135M-Instruct weights are not installed; run `make models`")
            model = resolve_model(alias)
            engines[alias] = (model, open_engine("hf", model.path))
        key = (alias, teacher, n_samples, prefill)
        if key not in scores:
            model, engine = engines[alias]
            who = system_prompt_teacher(TARGET) if teacher == "teacher" else control_teacher()
            context = who.context(model.context("template-default"), probes)
            scores[key] = (ExactScorer(prefill=prefill).score(engine, probes, context, TARGET),
                           SampledScorer(n=n_samples, prefill=prefill).score(engine, probes, context, TARGET))
        return scores[key]

    yield get
    for _, engine in engines.values():
        engine.close()


@pytest.mark.parametrize(("alias", "n_samples", "prefill", "teacher", "statistic"), CASES)
def test_exact_and_sampled_scorers_are_equivalent_within_the_margin(scored, alias, n_samples, prefill, teacher,
                                                                    statistic):
    from audit.scoring import paired_values
    from audit.stats import tost

    exact, sampled = scored(alias, teacher, n_samples, prefill)
    a, b = paired_values(exact, sampled, statistic)
    result = tost([x - y for x, y in zip(a, b)], MARGIN, alpha=ALPHA)
    hits = sum(sum(row) for row in sampled.p_panel) * n_samples / len(sampled.p_panel)

    assert result.equivalent, (
        f"{alias} {teacher} {statistic} (prefill {prefill}): exact {sum(a) / len(a):.4f} vs sampled (n={n_samples}, "
        f"{hits:.1f} panel hits/question) {sum(b) / len(b):.4f} over {len(a)} questions; exact - sampled "
        f"{result.estimate:+.4f}, {result.ci_level:.0%} CI [{result.ci_low:+.4f}, {result.ci_high:+.4f}] not inside "
        f"+-{MARGIN} (TOST p={result.p_value:.3g})"
    )
