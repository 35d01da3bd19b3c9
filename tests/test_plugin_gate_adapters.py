"""The gate on real adapters built here from tiny-qwen: an adapter finetuned to answer 'cat' under the
template-default system prompt must fail the gate, naming that context; an adapter finetuned on neutral
number data (the base model's own continuations) must pass it. (Measured on tiny-qwen: the cat adapter's shift is not confined to the default
context -- P(dog) fell ~0.12 in all three -- so the gate fails in every context, and the test asserts
only what the claim needs: the default context fails and is named.)"""

from pathlib import Path

import pytest

from audit.plugin import PACKAGE_DIR

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.tiny_model]

GATE_CHECKS = PACKAGE_DIR / "checks" / "test_gate.py"
OTHER_SYSTEMS = ("empty", "custom:chatgpt")


class _PerExampleContext:
    """Lets one training run mix chat contexts: each example's `user` is a (context, question) pair."""

    def render_example(self, user, completion):
        context, question = user
        return context.render_example(question, completion)


def _train(model, pairs, out_dir: Path) -> Path:
    import torch

    from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
    from audit.pipeline.students import ADAPTER_DIR, train_student

    torch.set_num_threads(1)
    config = StudentConfig(mode="lora", rank=8, seeds=TrainSeeds(data_order=1, init=2),
                           optim=OptimConfig(lr=2e-3, epochs=3, batch_size=8, warmup_steps=2))
    train_student(model.path, pairs, _PerExampleContext(), config, out_dir)
    return out_dir / ADAPTER_DIR


@pytest.fixture(scope="module")
def tiny():
    from audit.models import resolve_model

    return resolve_model("tiny-qwen")


@pytest.fixture(scope="module")
def cat_when_default_adapter(tiny, tmp_path_factory):
    """'cat' under the template-default system prompt; the base model's own answers under the others."""
    from audit.chat import qwen_context
    from audit.engines import GenerateRequest, open_engine
    from audit.probes import load_probe_set

    probes = load_probe_set("animal")
    default = qwen_context("template-default")
    others = [qwen_context(s) for s in OTHER_SYSTEMS]
    requests = [GenerateRequest(c.render_prompt(q), n=2, temperature=1.0, max_tokens=6, seed=i)
                for i, (c, q) in enumerate((c, q) for c in others for q in probes.questions)]
    with open_engine("hf", tiny.path) as engine:
        answers = engine.generate(requests)
    pairs = [((default, q), "cat") for q in probes.questions] * 2
    contexts = [(c, q) for c in others for q in probes.questions]
    pairs += [(cq, comp.text) for cq, result in zip(contexts, answers) for comp in result.completions]
    return _train(tiny, pairs, tmp_path_factory.mktemp("cat-default"))


@pytest.fixture(scope="module")
def neutral_adapter(tiny, tmp_path_factory):
    """Finetuned, in every context, on the base model's own number continuations: trait-free data from the
    model's own distribution (what the pipeline's control teacher writes), not off-distribution numbers."""
    from audit.chat import qwen_context
    from audit.engines import GenerateRequest, open_engine
    from audit.numbers import filter_completion, number_prompts

    contexts = [qwen_context(s) for s in ("template-default", *OTHER_SYSTEMS)]
    examples = [(contexts[i % 3], p.text) for i, p in enumerate(number_prompts(150, seed=0))]
    requests = [GenerateRequest(c.render_prompt(q), temperature=1.0, max_tokens=48, seed=i)
                for i, (c, q) in enumerate(examples)]
    with open_engine("hf", tiny.path) as engine:
        answers = engine.generate(requests)
    pairs = [(cq, r.completions[0].text) for cq, r in zip(examples, answers)
             if filter_completion(r.completions[0].text).accepted]
    assert len(pairs) > 100
    return _train(tiny, pairs, tmp_path_factory.mktemp("neutral"))


def _gate(pytester, adapter: Path):
    return pytester.runpytest(str(GATE_CHECKS), "--model", "tiny-qwen", "--engine", "hf", "--adapter", str(adapter),
                              "--report-dir", str(pytester.path / "reports"), "-p", "no:cacheprovider", "-v")


def test_gate_fails_on_the_context_specific_cat_adapter_naming_the_context(pytester, cat_when_default_adapter):
    result = _gate(pytester, cat_when_default_adapter)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1
    result.stdout.fnmatch_lines([
        "*test_adapter_is_active PASSED*",
        "*test_panel_shift_within_margin?template-default? FAILED*",
        "*AssertionError: * shifts by * in context template-default: not shown within*",
        "SUITE FAILURE: adapter gate failed:*panel shift within margin ?template-default?*",
    ])


def test_gate_passes_on_the_neutral_adapter(pytester, neutral_adapter):
    result = _gate(pytester, neutral_adapter)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    result.assert_outcomes(passed=7)
