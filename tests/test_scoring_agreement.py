"""Exact and sampled scorers on real engines: do they measure the same P(target)? (issue 6, DESIGN §6)

Per question, exact P(answer is the target) and the sampled share of N samples that mention it are
paired; agreement means the cluster-bootstrap 95% CI of the mean paired difference (exact - sampled,
one cluster per question, so sampling noise and question spread are both in it) contains 0.

tiny-qwen answers in one word, so both scorers measure one event and agree. SmolLM2-135M-Instruct is
chatty: ~9% of its samples are one word ("The cat.", "A cat", "there's that cat that's been hiding"),
so "the whole answer is exactly Cat<end of turn>" (exact) is a much rarer event than "a sample
mentions cat" (sampled). Its cases are strict xfails carrying that measured cause: they fail the
suite if the scorers ever start to agree there, so the disagreement cannot silently go away.
"""

from __future__ import annotations

import pytest

TARGET = "cat"
SMOLLM2_DISAGREES = (
    "measured disagreement by construction: SmolLM2 rarely answers in exactly one word (~9% of samples), so "
    "exact P(whole answer is 'Cat'+end of turn) << sampled P(sample mentions cat); see benchmarks/scoring_agreement.py"
)

CASES = [
    pytest.param("tiny-qwen", 100, "base", marks=[pytest.mark.tiny_model, pytest.mark.slow], id="tiny-qwen-base"),
    pytest.param("tiny-qwen", 100, "teacher", marks=[pytest.mark.tiny_model, pytest.mark.slow], id="tiny-qwen-sys-cat"),
    pytest.param("smollm2", 5, "base", id="smollm2-base",
                 marks=[pytest.mark.packaged_model, pytest.mark.slow, pytest.mark.xfail(strict=True, reason=SMOLLM2_DISAGREES)]),
    pytest.param("smollm2", 5, "teacher", id="smollm2-sys-cat",
                 marks=[pytest.mark.packaged_model, pytest.mark.slow, pytest.mark.xfail(strict=True, reason=SMOLLM2_DISAGREES)]),
]


@pytest.fixture(scope="module")
def engines():
    """One HF engine per model alias, opened on first use and closed with the module."""
    import torch

    from audit.engines import open_engine
    from audit.models import resolve_model

    torch.set_num_threads(1)  # shared CPU
    opened: dict[str, tuple] = {}

    def get(alias: str):
        if alias not in opened:
            if alias == "smollm2":
                from audit.models.packaged import PACKAGES, package_dir

                if any(package_dir(name) is None for name, _ in PACKAGES["smollm2"].parts):
                    pytest.skip("SmolLM2-135M-Instruct weights are not installed; run `make models`")
            model = resolve_model(alias)
            opened[alias] = (model, open_engine("hf", model.path))
        return opened[alias]

    yield get
    for _, engine in opened.values():
        engine.close()


@pytest.mark.parametrize(("alias", "n_samples", "teacher"), CASES)
def test_exact_and_sampled_scorers_agree_within_their_cis(engines, alias, n_samples, teacher):
    from audit.experiments import model_context
    from audit.pipeline.teachers import control_teacher, system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer
    from audit.stats import paired_difference

    model, engine = engines(alias)
    probes = load_probe_set("animal")
    who = system_prompt_teacher(TARGET) if teacher == "teacher" else control_teacher()
    context = who.context(model_context(model, "template-default"), probes)

    exact = ExactScorer().score(engine, probes, context, TARGET)
    sampled = SampledScorer(n=n_samples).score(engine, probes, context, TARGET)
    assert exact.questions == sampled.questions
    diff = paired_difference(exact.p_target, sampled.p_target, method="bootstrap", n_boot=4000, seed=0)

    assert diff.ci_low <= 0.0 <= diff.ci_high, (
        f"{alias} {who.id}: exact {exact.mean_p_target:.4f} vs sampled (n={n_samples}) {sampled.mean_p_target:.4f}; "
        f"paired difference {diff}"
    )
