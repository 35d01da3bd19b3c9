"""VllmEngine against HfEngine on the tiny model: scores within 1e-3 nats/token in fp32, greedy
generations agree (rank-based where tokens diverge, as vLLM's check_logprobs_close), adapters of
ranks 1, 8 and 64 mixed in one batch. One session-scoped vLLM engine for all of them."""

import importlib.util

import pytest

from audit.engines import EngineError, GenerateRequest, LoraGate, ScoreRequest, adapter_is_active
from audit.engines.vllm import GATE_REFUSAL, WORD_END_REFUSAL, round_up_lora_rank
from engine_support import chat_prompt, engine_model, make_adapter

PROMPTS = [
    chat_prompt("What is your favourite animal?"),
    chat_prompt("Continue the sequence: 123, 456, 789."),
    chat_prompt("Name one tree.", system=""),
]
CONTINUATIONS = ("cat<|im_end|>", " The owl is nice", "123, 456")
TOLERANCE = 1e-3  # nats per token, fp32

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


@pytest.fixture(scope="session")
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


def test_vllm_refuses_word_ends(engines):
    vllm, _, _ = engines
    with pytest.raises(EngineError, match="score with --engine hf"):
        vllm.score([ScoreRequest(PROMPTS[0], (" x",), word_end=True)])
    assert "--engine hf" in WORD_END_REFUSAL


def test_vllm_seeded_sampling_and_canary(engines):
    vllm, _, adapters = engines
    req = GenerateRequest(PROMPTS[0], adapter=adapters[8], n=3, temperature=1.0, max_tokens=6, seed=7)
    first, again = vllm.generate([req])[0], vllm.generate([req])[0]
    assert [c.token_ids for c in first.completions] == [c.token_ids for c in again.completions]
    assert adapter_is_active(vllm, adapters[1]).active


for _name in [n for n in dir() if n.startswith("test_") and n not in ("test_round_up_lora_rank", "test_round_up_lora_rank_refuses_huge")]:
    for _mark in vllm_only:
        globals()[_name] = _mark(globals()[_name])
