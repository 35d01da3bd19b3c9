"""FakeEngine and the request records: scripted, deterministic, recording."""

import pytest
from hypothesis import given, strategies as st

from audit.engines import (
    Completion,
    Engine,
    EngineError,
    FakeEngine,
    GenerateRequest,
    LoraGate,
    ScoreRequest,
)
from audit.engines.fake import fake_tokens


def test_fake_engine_satisfies_protocol():
    assert isinstance(FakeEngine(), Engine)


def test_default_outputs_are_deterministic_and_depend_on_adapter():
    reqs = [ScoreRequest("p", ("a b", "c")), ScoreRequest("p", ("a b", "c"), adapter="/lora")]
    first, second = FakeEngine().score(reqs), FakeEngine().score(reqs)
    assert first == second
    assert first[0].totals != first[1].totals
    assert len(first[0].token_logprobs[0]) == 2
    assert first[0].totals[0] == pytest.approx(sum(first[0].token_logprobs[0]))


def test_default_generate_greedy_repeats_and_sampled_varies_with_seed():
    eng = FakeEngine()
    greedy = eng.generate([GenerateRequest("p", n=3, temperature=0)])[0]
    assert len({c.text for c in greedy.completions}) == 1
    a = eng.generate([GenerateRequest("p", n=3, seed=1)])[0]
    b = eng.generate([GenerateRequest("p", n=3, seed=2)])[0]
    assert len({c.text for c in a.completions}) == 3
    assert a.completions != b.completions


def test_scripted_generate_callable_cycles_to_n_and_records():
    eng = FakeEngine(generate_fn=lambda r: ["cat", "dog"])
    req = GenerateRequest("hi", n=3, context_id="ctx")
    (res,) = eng.generate([req])
    assert [c.text for c in res.completions] == ["cat", "dog", "cat"]
    assert res.request is req
    assert eng.generate_requests == [req]


def test_scripted_generate_dict_prefers_adapter_key():
    eng = FakeEngine(generate_fn={("hi", "/a"): "adapter says", "hi": "base says"})
    out = eng.generate([GenerateRequest("hi"), GenerateRequest("hi", adapter="/a")])
    assert [r.completions[0].text for r in out] == ["base says", "adapter says"]


def test_scripted_generate_dict_missing_prompt_is_one_line_error():
    with pytest.raises(EngineError, match="no scripted completion") as err:
        FakeEngine(generate_fn={"x": "y"}).generate([GenerateRequest("other")])
    assert "\n" not in str(err.value)


def test_scripted_completion_objects_pass_through():
    c = Completion("x", (1,), None, "stop")
    (res,) = FakeEngine(generate_fn=lambda r: c).generate([GenerateRequest("p", n=2)])
    assert res.completions == (c, c)


def test_max_tokens_truncates_and_sets_finish_reason():
    eng = FakeEngine(generate_fn=lambda r: "1 2 3 4 5")
    (res,) = eng.generate([GenerateRequest("p", max_tokens=2, logprobs=True)])
    c = res.completions[0]
    assert c.text == "1 2" and c.finish_reason == "length"
    assert len(c.token_ids) == 2 and len(c.logprobs) == 2


def test_generate_logprobs_come_from_score_fn():
    eng = FakeEngine(generate_fn=lambda r: "a b", score_fn=lambda r, c: [-0.5] * len(fake_tokens(c)))
    (res,) = eng.generate([GenerateRequest("p", logprobs=True)])
    assert res.completions[0].logprobs == (-0.5, -0.5)
    assert res.completions[0].finish_reason == "stop"


def test_scripted_score_dict_keys_and_scalar_values():
    eng = FakeEngine(score_fn={(" cat"): -1.0, ("p", " dog"): [-0.25, -0.5], ("p", " owl", "/a"): -3.0})
    (res,) = eng.score([ScoreRequest("p", (" cat", " dog"))])
    assert res.token_logprobs == ((-1.0,), (-0.25, -0.5))
    assert res.totals == (-1.0, -0.75)
    (res,) = eng.score([ScoreRequest("p", (" owl",), adapter="/a")])
    assert res.totals == (-3.0,)
    with pytest.raises(EngineError, match="no scripted score"):
        eng.score([ScoreRequest("p", (" owl",))])


def test_context_manager_closes_and_closed_engine_refuses():
    with FakeEngine() as eng:
        pass
    assert eng.closed
    with pytest.raises(EngineError, match="closed"):
        eng.score([ScoreRequest("p", ("x",))])


@pytest.mark.parametrize(
    "make",
    [
        lambda: GenerateRequest("p", n=0),
        lambda: GenerateRequest("p", temperature=-1),
        lambda: GenerateRequest("p", max_tokens=0),
        lambda: GenerateRequest("p", gate=LoraGate(frozenset({1}))),
        lambda: ScoreRequest("p", ()),
        lambda: ScoreRequest("p", ("",)),
        lambda: ScoreRequest("p", ("x",), gate=LoraGate(frozenset())),
        lambda: LoraGate(frozenset({-1})),
        lambda: LoraGate(frozenset(), generated="maybe"),
    ],
)
def test_bad_requests_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


@given(st.frozensets(st.integers(0, 40)), st.integers(0, 40), st.booleans())
def test_gate_prompt_mask_matches_positions(positions, n, invert):
    mask = LoraGate(positions, invert=invert).prompt_mask(n)
    assert len(mask) == n
    assert all(mask[i] == ((i in positions) != invert) for i in range(n))


@given(st.text(min_size=1))
def test_fake_tokens_concatenate_back(text):
    assert "".join(fake_tokens(text)) == text.rstrip() or not text.strip()
