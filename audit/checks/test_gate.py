"""Gate checks of one adapter against its base (`--adapter DIR`, DESIGN §1).

1. the adapter is active (a canary catching silently ignored LoRA);
2. in every context of the context set, no panel entry's probability shifts beyond the margin
   (TOST per entry and context, Holm across panel x contexts);
3. the adapter's effect is consistent across contexts (shift differences within the margin).
A failing gate names the panel entry (trait), the context and the effect with its CI.
"""

from itertools import combinations

import pytest

GATE_SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""System-prompt modes of the gate's context set: the template's default, none, another identity."""

pytestmark = pytest.mark.gate


@pytest.fixture(scope="session")
def gate_contexts(audit_session):
    from audit.chat import qwen_context

    if audit_session.engine_kind == "fake":
        return {system: qwen_context(system) for system in GATE_SYSTEMS}
    from audit.experiments import model_context

    model = audit_session.resolve_model()
    return {system: model_context(model, system) for system in GATE_SYSTEMS}


@pytest.fixture(scope="session")
def canary(audit_session, audit_engine):
    from audit.engines import adapter_is_active

    adapter = audit_session.config.adapter
    if audit_session.engine_kind != "fake":
        from audit.engines.adapters import validate_adapter

        validate_adapter(adapter, audit_session.resolve_model(), max_rank=None)
    return adapter_is_active(audit_engine, str(adapter))


def test_adapter_is_active(canary, audit_record):
    """The adapter changes the base model's token logprobs by more than float noise."""
    from audit.results import Effect

    d = canary.max_abs_diff
    effect = Effect(value=d, ci_low=d, ci_high=d, n=canary.n_tokens, method="max |adapter - base| token logprob (nats)")
    why = (f"max |adapter - base| logprob {d:.3g} nats over {canary.n_tokens} tokens vs threshold "
           f"{canary.threshold:.3g} (noise {canary.noise:.3g})")
    audit_record(name="adapter is active", effect=effect, explanation=why,
                 properties={"noise": canary.noise, "threshold": canary.threshold})
    assert canary.active, "adapter is NOT active (silently ignored?): " + why


@pytest.fixture(scope="session")
def panel_scores(audit_session, audit_engine, gate_contexts, canary):
    """Per context: (base rows, adapter rows) of per-question panel probabilities (exact scorer)."""
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer

    if not canary.active:
        pytest.fail("adapter is not active (canary failed): panel measurements would be meaningless")
    probes = load_probe_set(audit_session.config.probe_set)
    scorer, adapter = ExactScorer(), str(audit_session.config.adapter)
    base, shifted = {}, {}
    for system, context in gate_contexts.items():
        base[system] = scorer.score(audit_engine, probes, context, probes.names[0]).p_panel
        shifted[system] = scorer.score(audit_engine, probes, context, probes.names[0], adapter=adapter).p_panel
    _record_samples(audit_session, audit_engine, gate_contexts["template-default"], probes.questions[:3], adapter)
    return probes.names, base, shifted


def _record_samples(audit_session, engine, context, questions, adapter):
    """A few greedy answers of base and adapter, shown verbatim (escaped) in the report."""
    from audit.engines import GenerateRequest
    from audit.results import Sample

    for source in (None, adapter):
        requests = [GenerateRequest(context.render_prompt(q), adapter=source, temperature=0.0, max_tokens=16)
                    for q in questions]
        for q, result in zip(questions, engine.generate(requests)):
            audit_session.collector.samples.append(Sample(context=context.system, question=q,
                                                          answer=result.completions[0].text,
                                                          source="adapter" if source else "base"))


@pytest.fixture(scope="session")
def panel_verdicts(panel_scores, audit_config):
    from audit.verdicts import gate_panel_verdicts

    return gate_panel_verdicts(*panel_scores, audit_config.margin)


@pytest.fixture(scope="session")
def consistency_verdicts(panel_scores, audit_config):
    from audit.verdicts import gate_consistency_verdicts

    return gate_consistency_verdicts(*panel_scores, audit_config.margin)


def _conclude(record, verdict, name):
    record(name=name, trait=verdict.properties.get("entry"), context=verdict.context, effect=verdict.effect,
           explanation=verdict.explanation, properties=verdict.properties)
    assert verdict.passed, verdict.explanation


@pytest.mark.parametrize("system", GATE_SYSTEMS)
def test_panel_shift_within_margin(panel_verdicts, audit_record, system):
    """No panel entry's P shifts beyond the margin in this context (equivalence, Holm-adjusted)."""
    _conclude(audit_record, panel_verdicts[system], "panel shift within margin")


@pytest.mark.parametrize("pair", [f"{a}-vs-{b}" for a, b in combinations(GATE_SYSTEMS, 2)])
def test_context_consistency(consistency_verdicts, audit_record, pair):
    """The adapter's shift of each panel entry is the same (within the margin) in both contexts."""
    _conclude(audit_record, consistency_verdicts[pair], "context consistency")
