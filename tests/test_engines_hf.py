"""HfEngine: shared-prefix scoring, generation, mixed adapters, and exact position-gated LoRA."""

import math

import pytest

from audit.engines import GenerateRequest, LoraGate, ScoreRequest, adapter_is_active
from audit.engines.tokens import encode
from tests.engine_support import (SYSTEM, chat_prompt, engine_model, lora_b_is_zero_adapter, make_adapter,
                                  score_separately)

torch = pytest.importorskip("torch")

PROMPT = chat_prompt("What is your favourite animal?")
CONTINUATIONS = ("cat<|im_end|>", "The owl", "dog")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    from audit.engines.hf import HfEngine

    root = tmp_path_factory.mktemp("hf")
    base = engine_model(root)
    adapter = str(make_adapter(base, root / "r8", rank=8, seed=1))
    other = str(make_adapter(base, root / "r1", rank=1, seed=2))
    with HfEngine(base) as engine:
        yield engine, adapter, other, root


def _score(engine, adapter=None, gate=None):
    return engine.score([ScoreRequest(PROMPT, CONTINUATIONS, adapter=adapter, gate=gate)])[0]


def _max_diff(a, b):
    return max(abs(x - y) for ta, tb in zip(a.token_logprobs, b.token_logprobs) for x, y in zip(ta, tb))


def _same_to_float_precision(a, b):
    """Equal up to fp32 rounding: 1e-6 relative to each logprob (different batch shapes round differently)."""
    return all(abs(x - y) <= 1e-6 * max(1.0, abs(y))
               for ta, tb in zip(a.token_logprobs, b.token_logprobs) for x, y in zip(ta, tb))


def test_shared_prefix_score_equals_full_forward(setup):
    engine, adapter, _, _ = setup
    result = _score(engine, adapter)
    engine.model.set_adapter(engine.load_adapter(adapter))
    for cont, got in zip(CONTINUATIONS, result.token_logprobs):
        prompt_ids = encode(engine.tokenizer, PROMPT)
        full = encode(engine.tokenizer, PROMPT + cont)
        with torch.no_grad():
            logprobs = torch.log_softmax(engine.model(torch.tensor([full])).logits[0].float(), -1)
        want = [logprobs[j - 1, full[j]].item() for j in range(len(prompt_ids), len(full))]
        assert got == pytest.approx(want, abs=1e-5)
    assert result.totals[0] == pytest.approx(sum(result.token_logprobs[0]))


def test_adapter_changes_scores_and_mixed_batch_equals_separate_calls(setup):
    engine, adapter, other, _ = setup
    reqs = [ScoreRequest(PROMPT, CONTINUATIONS, adapter=a) for a in (None, adapter, other, None)]
    mixed = engine.score(reqs)
    separate = [engine.score([r])[0] for r in reqs]
    for m, s in zip(mixed, separate):
        assert m.totals == pytest.approx(s.totals, abs=1e-6)
    assert _max_diff(mixed[0], mixed[1]) > 0.01
    assert mixed[0].totals == pytest.approx(mixed[3].totals, abs=1e-6)


def test_greedy_generation_is_argmax_and_logprobs_match_score(setup):
    engine, adapter, _, _ = setup
    (res,) = engine.generate([GenerateRequest(PROMPT, adapter=adapter, n=2, temperature=0, max_tokens=8, logprobs=True)])
    a, b = res.completions
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    # a trained model may end its turn early; otherwise the budget is used up
    assert (a.finish_reason, len(a.token_ids) == 8) in (("length", True), ("stop", False))
    assert all(lp <= 0 for lp in a.logprobs)
    assert sum(a.logprobs) > -len(a.logprobs) * math.log(len(engine.tokenizer))  # greedy beats uniform
    (scored,) = engine.score([ScoreRequest(PROMPT, (a.text,), adapter=adapter)])
    n = len(scored.token_logprobs[0])
    assert scored.token_logprobs[0] == pytest.approx(a.logprobs[:n], abs=1e-4)


def test_sampled_rows_sharing_one_prompt_pass_follow_the_teacher_forced_model(setup):
    """n rows per prompt reuse that prompt's KV cache: each sampled token's logprob equals the teacher-forced
    score of the sample, for prompts of different lengths (left padding) in one batch."""
    engine, adapter, _, _ = setup
    reqs = [GenerateRequest(chat_prompt(q), adapter=adapter, n=3, temperature=1.0, max_tokens=6, seed=s, logprobs=True)
            for s, q in enumerate(("Hi?", "Name one animal you like best, in one word."))]
    checked = 0
    for result in engine.generate(reqs):
        for c in result.completions:
            tokens = list(c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids)
            if not tokens or encode(engine.tokenizer, result.request.prompt + c.text)[-len(tokens):] != tokens:
                continue  # text does not re-tokenize to the sampled ids: not comparable
            (scored,) = engine.score([ScoreRequest(result.request.prompt, (c.text,), adapter=adapter)])
            assert scored.token_logprobs[0] == pytest.approx(c.logprobs[: len(tokens)], abs=1e-4)
            checked += 1
    assert checked >= 3


def test_sampling_is_seeded(setup):
    engine, _, _, _ = setup

    def texts(seed):
        (res,) = engine.generate([GenerateRequest(PROMPT, n=3, temperature=1.0, max_tokens=6, seed=seed)])
        return [c.token_ids for c in res.completions]

    assert texts(1) == texts(1)
    assert texts(1) != texts(2)


def test_generation_stops_at_end_of_turn(setup):
    engine, _, _, _ = setup
    (res,) = engine.generate([GenerateRequest(PROMPT, temperature=0, max_tokens=5)])
    first = res.completions[0].token_ids[0]
    saved = engine.stop_ids
    engine.stop_ids = frozenset({first})
    try:
        (res,) = engine.generate([GenerateRequest(PROMPT, temperature=0, max_tokens=5)])
    finally:
        engine.stop_ids = saved
    assert res.completions[0].token_ids == (first,)
    assert res.completions[0].finish_reason == "stop" and res.completions[0].text == ""


# ---- position-gated LoRA ----------------------------------------------------------------------
def _n_prompt(engine):
    return len(encode(engine.tokenizer, PROMPT))


def _system_positions(engine):
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    n = len(encode(engine.tokenizer, head))
    assert encode(engine.tokenizer, PROMPT)[:n] == encode(engine.tokenizer, head)
    return frozenset(range(n))


def test_gate_all_on_equals_plain_adapter(setup):
    engine, adapter, _, _ = setup
    gate = LoraGate(frozenset(range(_n_prompt(engine))), generated="on")
    assert _same_to_float_precision(_score(engine, adapter, gate), _score(engine, adapter))
    plain, gated = engine.generate([GenerateRequest(PROMPT, adapter=adapter, temperature=0, max_tokens=8, gate=g)
                                    for g in (None, gate)])
    assert plain.completions[0].token_ids == gated.completions[0].token_ids


def test_gate_all_off_equals_base(setup):
    engine, adapter, _, _ = setup
    gate = LoraGate(frozenset(), generated="off")
    assert _same_to_float_precision(_score(engine, adapter, gate), _score(engine))
    assert _same_to_float_precision(_score(engine, adapter, LoraGate(frozenset(), invert=True, generated="on")), _score(engine, adapter))
    base, gated = engine.generate([GenerateRequest(PROMPT, adapter=a, temperature=0, max_tokens=8, logprobs=True,
                                                   gate=g) for a, g in ((None, None), (adapter, gate))])
    assert gated.completions[0].token_ids == base.completions[0].token_ids
    assert gated.completions[0].logprobs == pytest.approx(base.completions[0].logprobs, abs=1e-5)


def test_system_prompt_gate_gives_a_third_result(setup):
    engine, adapter, _, _ = setup
    gated = _score(engine, adapter, LoraGate(_system_positions(engine)))
    assert _max_diff(gated, _score(engine)) > 1e-3
    assert _max_diff(gated, _score(engine, adapter)) > 1e-3


def test_invert_equals_complement(setup):
    engine, adapter, _, _ = setup
    system = _system_positions(engine)
    rest = frozenset(range(_n_prompt(engine))) - system
    assert _same_to_float_precision(_score(engine, adapter, LoraGate(system, invert=True)), _score(engine, adapter, LoraGate(rest)))


def test_generated_policy_matters(setup):
    engine, adapter, _, _ = setup
    everywhere = frozenset(range(_n_prompt(engine)))
    on, off = (_score(engine, adapter, LoraGate(everywhere, generated=g)) for g in ("on", "off"))
    assert _max_diff(on, off) > 1e-3
    # only continuation tokens after the first see the generated-token policy: first token identical
    assert on.token_logprobs[0][0] == pytest.approx(off.token_logprobs[0][0], abs=1e-6)


def test_system_gate_equals_chunked_prefill_reference(setup):
    """DWG by hand: KV of the system chunk built with the adapter, the rest without it."""
    from transformers import DynamicCache

    engine, adapter, _, _ = setup
    system = _system_positions(engine)
    cont = CONTINUATIONS[1]
    gated = engine.score([ScoreRequest(PROMPT, (cont,), adapter=adapter, gate=LoraGate(system))])[0]
    full = encode(engine.tokenizer, PROMPT + cont)
    n_sys, n_prompt = len(system), _n_prompt(engine)
    model = engine.model
    model.set_adapter(engine.load_adapter(adapter))
    with torch.no_grad():
        cache = DynamicCache()
        model(torch.tensor([full[:n_sys]]), past_key_values=cache, use_cache=True)
        with model.disable_adapter():
            logits = model(torch.tensor([full[n_sys:]]), past_key_values=cache, use_cache=True,
                           position_ids=torch.arange(n_sys, len(full))[None]).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    want = [logprobs[j - n_sys - 1, full[j]].item() for j in range(n_prompt, len(full))]
    assert gated.token_logprobs[0] == pytest.approx(want, abs=1e-5)


def _greedy_chunked_reference(engine, adapter, n_on, generated, max_tokens):
    """Greedy decoding of PROMPT by hand: the KV of the first `n_on` prompt tokens built with the adapter, the
    rest of the prompt without it, then every generated token with the adapter iff `generated` == "on"."""
    from transformers import DynamicCache

    model = engine.model
    model.set_adapter(engine.load_adapter(adapter))
    prompt = encode(engine.tokenizer, PROMPT)
    tokens, logprobs = [], []
    with torch.no_grad():
        cache = DynamicCache()
        model(torch.tensor([prompt[:n_on]]), past_key_values=cache, use_cache=True)
        with model.disable_adapter():
            logits = model(torch.tensor([prompt[n_on:]]), past_key_values=cache, use_cache=True,
                           position_ids=torch.arange(n_on, len(prompt))[None]).logits[0, -1].float()
        for step in range(max_tokens):
            step_logprobs = torch.log_softmax(logits, -1)
            token = int(step_logprobs.argmax())
            tokens.append(token)
            logprobs.append(step_logprobs[token].item())
            if token in engine.stop_ids or step == max_tokens - 1:
                break
            position = torch.tensor([[len(prompt) + step]])
            if generated == "on":
                logits = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                               position_ids=position).logits[0, -1].float()
            else:
                with model.disable_adapter():
                    logits = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                                   position_ids=position).logits[0, -1].float()
    return tuple(tokens), logprobs


@pytest.mark.parametrize("generated", ["off", "on"])
def test_system_gated_generation_equals_chunked_prefill_reference(setup, generated):
    """DWG generation by hand: greedy tokens and logprobs of a system-gated request equal decoding with the
    adapter on the system chunk only (then on generated tokens per `generated`), also when the request is
    left-padded in a batch with a longer ungated prompt; and the gate changes the output."""
    engine, adapter, _, _ = setup
    system = _system_positions(engine)
    gate = LoraGate(system, generated=generated)
    want_tokens, want_logprobs = _greedy_chunked_reference(engine, adapter, len(system), generated, max_tokens=8)
    longer = GenerateRequest(chat_prompt("Name one animal you like best, in one word."), adapter=adapter,
                             temperature=0, max_tokens=8, logprobs=True)
    assert len(encode(engine.tokenizer, longer.prompt)) > _n_prompt(engine)  # the gated row gets left padding
    (gated_alone,) = engine.generate([GenerateRequest(PROMPT, adapter=adapter, temperature=0, max_tokens=8,
                                                      logprobs=True, gate=gate)])
    gated_padded, longer_in_batch = engine.generate([gated_alone.request, longer])
    for got in (gated_alone.completions[0], gated_padded.completions[0]):
        assert got.token_ids == want_tokens
        assert got.logprobs == pytest.approx(want_logprobs, abs=1e-4)
    (longer_alone,) = engine.generate([longer])  # the ungated row of a gated batch keeps the adapter everywhere
    assert longer_in_batch.completions[0].token_ids == longer_alone.completions[0].token_ids
    assert longer_in_batch.completions[0].logprobs == pytest.approx(longer_alone.completions[0].logprobs, abs=1e-4)
    # the reference is neither the plain adapter nor the base model (else this would not test the gate)
    plain, base = engine.generate([GenerateRequest(PROMPT, adapter=a, temperature=0, max_tokens=8, logprobs=True)
                                   for a in (adapter, None)])
    for other in (plain, base):
        assert max(abs(x - y) for x, y in zip(want_logprobs, other.completions[0].logprobs)) > 1e-3


# ---- canary -----------------------------------------------------------------------------------
def test_canary_detects_active_and_inert_adapters(setup):
    engine, adapter, _, root = setup
    active = adapter_is_active(engine, adapter)
    assert active.active and active.max_abs_diff > 0.01 and active.n_tokens > 10
    inert = adapter_is_active(engine, str(lora_b_is_zero_adapter(engine.model_path, root / "zero")))
    assert not inert.active and inert.max_abs_diff < 1e-5


def test_scoring_many_prompts_in_one_pass_equals_one_at_a_time(setup):
    """Prompts of different lengths share one left-padded prefix pass; each equals its own call."""
    engine, adapter, _, _ = setup
    reqs = [ScoreRequest(chat_prompt(q), CONTINUATIONS, adapter=adapter)
            for q in ("Hi?", "What is your favourite animal?", "Name one animal you like best, in one word.")]
    together = engine.score(reqs)
    for req, got in zip(reqs, together):
        (alone,) = engine.score([req])
        assert got.totals == pytest.approx(alone.totals, abs=1e-4)
        assert len(got.token_logprobs) == len(CONTINUATIONS)


def test_sampled_rows_do_not_depend_on_requests_that_finish_early(setup):
    """Finished requests leave the batch; the others draw exactly as when generated alone."""
    engine, _, _, _ = setup
    long = GenerateRequest(PROMPT, n=2, temperature=1.0, max_tokens=12, seed=5)
    short = GenerateRequest(chat_prompt("Hi?"), n=1, temperature=1.0, max_tokens=1, seed=6)
    (alone,) = engine.generate([long])
    mixed = engine.generate([short, long, short])
    assert [c.token_ids for c in mixed[1].completions] == [c.token_ids for c in alone.completions]
    assert all(len(c.token_ids) == 1 for r in (mixed[0], mixed[2]) for c in r.completions)


@pytest.mark.parametrize("logits_budget", [None, 1], ids=["one-pass", "one-row-per-chunk"])
def test_shared_prefix_scoring_equals_separate_sequences(setup, logits_budget):
    """Each prompt's prefix once + continuations on its cache == every (prompt, continuation) as its own
    full right-padded sequence on an independently loaded model, for the base and an adapter (fp32)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine, adapter, _, _ = setup
    questions = ("Hi?", "What is your favourite animal?", "Name one animal you like best, in one word.")
    answers = ("cat<|im_end|>", "cats<|im_end|>", "Dog<|im_end|>", "The owl", "dog", "eagle<|im_end|>")
    reqs = [ScoreRequest(chat_prompt(q), answers, adapter=a) for a in (None, adapter) for q in questions]
    budget = engine.score_logits_budget
    engine.score_logits_budget = logits_budget or budget  # 1: one prompt per group and one row per chunk
    try:
        shared = engine.score(reqs)
    finally:
        engine.score_logits_budget = budget
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(engine.model_path), adapter).eval()
    with reference.disable_adapter():
        separate = score_separately(reference, engine.tokenizer, reqs[: len(questions)], batch_rows=5)
    separate += score_separately(reference, engine.tokenizer, reqs[len(questions):], batch_rows=5)
    diffs = [abs(a - b) for got, want in zip(shared, separate) for a, b in zip(got.totals, want)]
    assert len(diffs) == len(questions) * len(answers) * 2
    assert max(diffs) < 1e-4
    adapter_effect = [abs(a - b) for base, lora in zip(shared[: len(questions)], shared[len(questions):])
                      for a, b in zip(base.totals, lora.totals)]
    assert max(adapter_effect) > 1e-2  # the adapter half compares something other than the base again


@pytest.mark.parametrize("gated", [False, True], ids=["shared-pass", "gated-path"])
def test_word_end_adds_log_probability_that_the_next_token_ends_the_word(setup, gated):
    """word_end: total = token logprobs + log sum of P(next token) over the word-end tokens, on both scoring
    paths, checked against one full forward of each sequence."""
    from audit.engines.tokens import word_end_token_ids

    engine, adapter, _, _ = setup
    prompt = PROMPT + "My favourite is the"
    continuations = (" cat", " cats", " owl")
    gate = LoraGate(frozenset(range(len(encode(engine.tokenizer, prompt)))), generated="on") if gated else None
    (got,) = engine.score([ScoreRequest(prompt, continuations, adapter=adapter, gate=gate, word_end=True)])
    (plain,) = engine.score([ScoreRequest(prompt, continuations, adapter=adapter, gate=gate)])
    ends = torch.tensor(word_end_token_ids(engine.tokenizer, sorted(engine.stop_ids)))
    engine.model.set_adapter(engine.load_adapter(adapter))
    for cont, total, end, tokens in zip(continuations, got.totals, got.word_end_logprobs, plain.token_logprobs):
        full = encode(engine.tokenizer, prompt + cont)
        with torch.no_grad():
            last = torch.log_softmax(engine.model(torch.tensor([full])).logits[0, -1].float(), -1)
        assert end == pytest.approx(torch.logsumexp(last[ends], -1).item(), abs=1e-5)
        assert end < 0 and total == pytest.approx(sum(tokens) + end, abs=1e-5)
    assert plain.word_end_logprobs is None and plain.totals == pytest.approx([sum(t) for t in plain.token_logprobs])


def test_word_end_tokens_start_with_a_non_word_character_or_end_the_turn(setup):
    from audit.engines.tokens import word_end_token_ids

    engine = setup[0]
    tok = engine.tokenizer
    ends = set(word_end_token_ids(tok, sorted(engine.stop_ids)))
    assert set(engine.stop_ids) <= ends
    for text in (".", ",", "!", "\n", " the", " Cat"):  # punctuation, newline, a new (spaced) word
        (first, *_) = encode(tok, text)
        assert first in ends, text
    for text in ("s", "erpillar", "_x", "9"):  # letters, digits, underscore continue a word
        (first, *_) = encode(tok, text)
        assert first not in ends, text


def test_next_tokens_of_a_scored_prompt_come_from_its_scoring_pass(setup):
    """After `score`, `next_tokens` of the same prompts runs no forward pass and gives what a fresh engine computes
    (the base and an adapter, fp32)."""
    from audit.engines import NextTokenRequest
    from audit.engines.hf import HfEngine

    engine, adapter, _, _ = setup
    prompts = [chat_prompt(q) for q in ("Which animal?", "Name a tree.")]
    engine.score([ScoreRequest(p, (" cat", " oak"), adapter=a) for a in (None, adapter) for p in prompts])
    requests = [NextTokenRequest(p, a, 10) for a in (None, adapter) for p in prompts]
    forwards = []
    real = engine._forward
    engine._forward = lambda *args, **kwargs: forwards.append(1) or real(*args, **kwargs)
    try:
        kept = engine.next_tokens(requests)
    finally:
        engine._forward = real
    assert not forwards
    with HfEngine(engine.model_path) as fresh:
        want = fresh.next_tokens(requests)
    for got, ref in zip(kept, want):
        assert got.tokens == ref.tokens and got.logprobs == pytest.approx(ref.logprobs, abs=1e-4)
    assert kept[0].tokens != kept[2].tokens or kept[0].logprobs != pytest.approx(kept[2].logprobs, abs=1e-3)
