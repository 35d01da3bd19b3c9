"""HfEngine: transformers + peft. The fallback engine, the reference in agreement tests, and the
home of position-gated LoRA.

Gating is exact: a forward hook on every `lora_A` module of a loaded adapter multiplies its output by
a per-position 0/1 mask, so the LoRA delta at an "off" position is exactly zero (lora_B has no bias)
and at an "on" position exactly unchanged. Applied while building the KV cache this equals chunked
prefill with the adapter toggled per chunk (DWG, anchors-science §B.6).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from audit.engines.base import (
    Completion,
    EngineBase,
    EngineError,
    GenerateRequest,
    GenerateResult,
    LoraGate,
    NextTokenRequest,
    NextTokenResult,
    ScoreRequest,
    ScoreResult,
)
from audit.engines.tokens import charset_token_ids, continuation_start, encode, stop_token_ids, word_end_token_ids


PROMPT_END_TOP = 64
"""Next tokens kept from each scored prompt's end, so `next_tokens` of a prompt just scored needs no pass."""
PROMPT_END_CACHE = 8192
"""Scored prompt ends kept (oldest dropped first)."""


def _group_by_adapter(requests: Sequence) -> dict[str | None, list[int]]:
    groups: dict[str | None, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.adapter, []).append(i)
    return groups


class HfEngine(EngineBase):
    """transformers + peft engine (fp32 by default).

    model_path: HF model folder. dtype: torch dtype name. batch_size: rows per generation forward pass
    (and the least rows per scoring pass). score_logits_budget: scoring passes hold at most about this
    many logits (rows x tokens x vocab), so small-vocabulary models score many prompts per pass.
    allow_pickle: accept adapters stored as pickled .bin (off: only safetensors).
    """

    name = "hf"

    def __init__(
        self,
        model_path: str | Path,
        dtype: str = "float32",
        batch_size: int = 64,
        allow_pickle: bool = False,
        score_logits_budget: int = 2**25,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.model_path = Path(model_path)
        self.dtype = getattr(torch, dtype)
        self.batch_size = batch_size
        self.score_logits_budget = score_logits_budget
        self.allow_pickle = allow_pickle
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=self.dtype, trust_remote_code=False
        ).eval()
        self.stop_ids = frozenset(stop_token_ids(self.tokenizer, self.model_path))
        self._charset_masks: dict = {}
        self._word_end_ids = None
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.stop_ids)
        self._adapter_names: dict[str, str] = {}  # resolved adapter dir -> peft adapter name
        self._gate_mask = None  # (batch, seq, 1) mask applied to lora_A outputs during a gated forward
        self._prompt_ends: dict[tuple[str, str | None], tuple[tuple[str, ...], tuple[float, ...]]] = {}

    # ---- adapters -------------------------------------------------------------------------------
    def load_adapter(self, adapter_dir: str | Path) -> str:
        """Validate and load an adapter (once); returns its peft adapter name."""
        from peft import PeftModel

        from audit.engines.adapters import validate_adapter

        key = str(Path(adapter_dir).resolve())
        if key in self._adapter_names:
            return self._adapter_names[key]
        validate_adapter(key, self.model_path, max_rank=None, allow_pickle=self.allow_pickle, model=self._base_model())
        name = f"adapter{len(self._adapter_names)}"
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(key, adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, key, adapter_name=name, is_trainable=False).eval()
        self._hook_lora_a(name)
        self._adapter_names[key] = name
        return name

    def _load_adapters(self, requests: Sequence) -> None:
        # Outside inference_mode: adapter weights loaded inside it could not be updated later.
        for adapter in {r.adapter for r in requests} - {None}:
            self.load_adapter(adapter)

    def _base_model(self):
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def _hook_lora_a(self, name: str) -> None:
        from peft.tuners.lora import LoraLayer

        def gate(_module, _inputs, output):
            return output if self._gate_mask is None else output * self._gate_mask

        hooked = 0
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                if name in getattr(module, "lora_embedding_A", {}):
                    raise EngineError(f"adapter {name} adapts embeddings; position gating supports Linear LoRA layers only")
                if name in module.lora_A:
                    module.lora_A[name].register_forward_hook(gate)
                    hooked += 1
        if hooked == 0:
            raise EngineError(f"adapter {name} has no LoRA layers in this model; check its target_modules")

    @contextlib.contextmanager
    def _adapter(self, adapter: str | None):
        from peft import PeftModel

        if adapter is None:
            ctx = self.model.disable_adapter() if isinstance(self.model, PeftModel) else contextlib.nullcontext()
            with ctx:
                yield
        else:
            self.model.set_adapter(self._adapter_names[str(Path(adapter).resolve())])
            yield

    def _forward(self, input_ids, attention_mask, position_ids, cache, gate_mask=None, logits_to_keep=0):
        self._gate_mask = gate_mask
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=cache is not None,
                logits_to_keep=logits_to_keep,
            )
        finally:
            self._gate_mask = None
        return out.logits.float(), out.past_key_values

    def _left_padded(self, sequences: list[list[int]]):
        """(ids, attention mask, positions, pad counts) of token sequences left-padded to one width."""
        torch = self._torch
        width = max(len(seq) for seq in sequences)
        pads = [width - len(seq) for seq in sequences]
        ids = torch.tensor([[self.pad_id] * pad + seq for pad, seq in zip(pads, sequences)])
        attn = torch.tensor([[0] * pad + [1] * (width - pad) for pad in pads])
        return ids, attn, (attn.cumsum(-1) - 1).clamp(min=0), pads

    def _mask(self, values: list[list[float]]):
        return self._torch.tensor(values, dtype=self.dtype).unsqueeze(-1)

    # ---- score ----------------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        results: list[ScoreResult | None] = [None] * len(requests)
        self._load_adapters(requests)
        layouts = [_PackedLayout.of(self.tokenizer, r) for r in requests]
        with self._torch.inference_mode():
            for adapter, indices in _group_by_adapter(requests).items():
                with self._adapter(adapter):
                    for batch in self._packed_batches(indices, layouts):
                        scored = self._score_packed([requests[i] for i in batch], [layouts[i] for i in batch])
                        for i, result in zip(batch, scored):
                            results[i] = result
        return results  # type: ignore[return-value]

    def _packed_batches(self, indices: list[int], layouts: list["_PackedLayout"]) -> list[list[int]]:
        """Consecutive requests whose kept logits (rows x kept positions x vocab) fit the budget (at least one each)."""
        most = max(1, self.score_logits_budget // len(self.tokenizer))
        batches: list[list[int]] = []
        widest = 0
        for i in indices:
            width = max(widest, len(layouts[i].ids))
            if not batches or (len(batches[-1]) + 1) * width > most:
                batches.append([])
                width = len(layouts[i].ids)
            batches[-1].append(i)
            widest = width
        return batches

    def _score_packed(self, requests: list[ScoreRequest], layouts: list["_PackedLayout"]) -> list[ScoreResult]:
        """Teacher-forced scoring with each prompt and all its continuations packed into one row: a continuation
        attends to the prompt and to itself, at the positions it would have alone, so one pass scores every
        continuation without a copy of the prompt's KV cache per continuation."""
        torch = self._torch
        width = max(len(layout.ids) for layout in layouts)
        ids = torch.full((len(layouts), width), self.pad_id)
        positions = torch.zeros((len(layouts), width), dtype=torch.long)
        attend = torch.eye(width, dtype=torch.bool).repeat(len(layouts), 1, 1)  # padding sees itself only
        gates = torch.ones((len(layouts), width)) if any(r.gate for r in requests) else None
        for b, (request, layout) in enumerate(zip(requests, layouts)):
            ids[b, : len(layout.ids)] = torch.tensor(layout.ids)
            positions[b, : len(layout.ids)] = torch.tensor(layout.positions)
            n = layout.shared
            attend[b, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
            for lo, fed in zip(layout.starts, layout.fed):
                attend[b, lo : lo + len(fed), :n] = True
                attend[b, lo : lo + len(fed), lo : lo + len(fed)] = torch.ones(len(fed), len(fed), dtype=torch.bool).tril()
            if gates is not None:
                gates[b, : len(layout.ids)] = torch.tensor(_gate_values(request.gate, layout.n_prompt)(layout.positions))
        keep = sorted({k for layout in layouts for k in layout.kept()})
        index = {k: j for j, k in enumerate(keep)}
        logits = self._forward(ids, attend[:, None], positions, None,
                               None if gates is None else gates.to(self.dtype).unsqueeze(-1), torch.tensor(keep))[0]
        logprobs = torch.log_softmax(logits, -1)
        results = []
        for b, (request, layout) in enumerate(zip(requests, layouts)):
            if layout.shared == layout.n_prompt and request.gate is None:  # the row holds the prompt's own end
                self._keep_prompt_end(request.prompt, request.adapter, logprobs[b, index[layout.shared - 1]])
            per_token, word_ends = [], []
            for lo, rest, offset in zip(layout.starts, layout.rests, layout.offsets):
                # the logits predicting rest[j] sit at the prompt's last token (j = 0), else at rest[j - 1]
                at = [layout.shared - 1] + [lo + j for j in range(len(rest) - 1)]
                values = [logprobs[b, index[k], t].item() for k, t in zip(at, rest)]
                per_token.append(tuple(values[offset:]))
                if request.word_end:
                    word_ends.append(self._word_end_logprob(logprobs[b, index[lo + len(rest) - 1]]))
            results.append(_score_result(request, per_token, word_ends))
        return results

    # ---- next tokens ----------------------------------------------------------------------------
    def _keep_prompt_end(self, prompt: str, adapter: str | None, logprobs) -> None:
        top = self._torch.topk(logprobs, min(PROMPT_END_TOP, logprobs.shape[-1]))
        if len(self._prompt_ends) >= PROMPT_END_CACHE:
            self._prompt_ends.pop(next(iter(self._prompt_ends)))
        self._prompt_ends[(prompt, adapter)] = (tuple(self.tokenizer.decode([t]) for t in top.indices.tolist()),
                                                tuple(top.values.tolist()))

    def next_tokens(self, requests: Sequence[NextTokenRequest]) -> list[NextTokenResult]:
        """Top-k next tokens of each prompt: one left-padded pass per batch, only the last position's logits; a
        prompt just scored (`score`) is answered from its row's logits (top_k <= PROMPT_END_TOP)."""
        from transformers import DynamicCache

        torch = self._torch
        results: list[NextTokenResult | None] = [None] * len(requests)
        for i, r in enumerate(requests):
            kept = self._prompt_ends.get((r.prompt, r.adapter)) if r.top_k <= PROMPT_END_TOP else None
            if kept is not None:
                results[i] = NextTokenResult(r, kept[0][: r.top_k], kept[1][: r.top_k])
        missing = [i for i, done in enumerate(results) if done is None]
        self._load_adapters([requests[i] for i in missing])
        with torch.inference_mode():
            for adapter, group in _group_by_adapter([requests[i] for i in missing]).items():
                indices = [missing[j] for j in group]
                with self._adapter(adapter):
                    for lo in range(0, len(indices), self.batch_size):
                        chunk = indices[lo : lo + self.batch_size]
                        ids, attn, positions, _ = self._left_padded(
                            [encode(self.tokenizer, requests[i].prompt) for i in chunk])
                        logits, _ = self._forward(ids, attn, positions, DynamicCache(), logits_to_keep=1)
                        logprobs = torch.log_softmax(logits[:, -1], -1)
                        for row, i in enumerate(chunk):
                            top = torch.topk(logprobs[row], min(requests[i].top_k, logprobs.shape[-1]))
                            tokens = tuple(self.tokenizer.decode([t]) for t in top.indices.tolist())
                            results[i] = NextTokenResult(requests[i], tokens, tuple(top.values.tolist()))
        return results  # type: ignore[return-value]

    def _word_end_logprob(self, logprobs) -> float:
        """log P(the next token ends the word) from one position's next-token log-probabilities."""
        if self._word_end_ids is None:
            self._word_end_ids = self._torch.tensor(word_end_token_ids(self.tokenizer, sorted(self.stop_ids)))
        return self._torch.logsumexp(logprobs[self._word_end_ids], -1).item()

    # ---- generate -------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results: list[GenerateResult | None] = [None] * len(requests)
        self._load_adapters(requests)
        with self._torch.inference_mode():
            for adapter, indices in _group_by_adapter(requests).items():
                with self._adapter(adapter):
                    for chunk in _chunks_by_rows(indices, requests, self.batch_size):
                        for i, result in zip(chunk, self._generate_batch([requests[i] for i in chunk])):
                            results[i] = result
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        """One left-padded batch with request.n rows per request, decoded token by token."""
        from transformers import DynamicCache

        torch = self._torch
        rows = [(ri, r) for ri, r in enumerate(requests) for _ in range(r.n)]
        ids, attn, positions, pads = self._left_padded([encode(self.tokenizer, r.prompt) for r in requests])
        width = ids.shape[1]
        gated = any(r.gate is not None for r in requests)
        mask = None
        if gated:
            mask = self._mask([[0.0] * pad + _gate_values(r.gate, width - pad)(range(width - pad))
                               for pad, r in zip(pads, requests)])
            step_mask = self._mask([[1.0 if r.gate is None or r.gate.generated == "on" else 0.0] for _, r in rows])
        generators = [_generator(torch, r.seed) for r in requests]

        # Each prompt runs once and its KV cache is copied to its n rows (n samples of one prompt would
        # otherwise recompute it n times). Only the last prompt position's logits are sampled from.
        logits, cache = self._forward(ids, attn, positions, DynamicCache(), mask, logits_to_keep=1)
        owner = torch.tensor([ri for ri, _ in rows])
        cache.batch_select_indices(owner)
        logits, attn, positions = logits[owner, -1], attn[owner], positions[owner]
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        done = [False] * len(rows)
        live = list(range(len(rows)))  # rows still in the batch, in batch order
        for _step in range(max(r.max_tokens for r in requests)):
            step_logprobs = torch.log_softmax(logits, -1)
            chosen = self._choose(logits, [rows[b] for b in live], requests, generators)
            for j, b in enumerate(live):
                if done[b]:
                    continue
                token = int(chosen[j])
                tokens[b].append(token)
                logprobs[b].append(step_logprobs[j, token].item())
                done[b] = token in self.stop_ids or len(tokens[b]) >= rows[b][1].max_tokens
            if all(done):
                break
            # Drop requests whose rows have all finished; a request's rows leave together, so each
            # request's generator draws exactly as without dropping (results are unchanged).
            unfinished = {rows[b][0] for b in live if not done[b]}
            keep = [j for j, b in enumerate(live) if rows[b][0] in unfinished]
            if len(keep) < len(live):
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                attn, positions, chosen = attn[index], positions[index], chosen[index]
                if gated:
                    step_mask = step_mask[index]
                live = [live[j] for j in keep]
            attn = torch.cat([attn, torch.ones(len(live), 1, dtype=attn.dtype)], -1)
            positions = positions[:, -1:] + 1
            logits, cache = self._forward(chosen[:, None], attn, positions, cache, step_mask if gated else None)
            logits = logits[:, -1]

        results = []
        for ri, request in enumerate(requests):
            completions = tuple(
                self._completion(tokens[b], logprobs[b], request) for b, (rj, _) in enumerate(rows) if rj == ri
            )
            results.append(GenerateResult(request, completions))
        return results

    def _choose(self, logits, rows, requests, generators):
        """Greedy for temperature 0, else a draw from softmax(logits / T) with the request's generator.

        rows: (request index, request) of each batch row; all rows of a request are present.
        """
        torch = self._torch
        chosen = logits.argmax(-1)
        by_request: dict[int, list[int]] = {}
        for b, (ri, _) in enumerate(rows):
            by_request.setdefault(ri, []).append(b)
        for ri, idx in by_request.items():
            request = requests[ri]
            if request.charset is not None:
                allowed = self._charset_mask(request.charset, logits.shape[-1])
                logits[idx] = logits[idx].masked_fill(~allowed, float("-inf"))
                chosen[idx] = logits[idx].argmax(-1)
            if request.temperature == 0:
                continue
            probs = torch.softmax(logits[idx] / request.temperature, -1)
            chosen[idx] = torch.multinomial(probs, 1, generator=generators[ri])[:, 0]
        return chosen

    def _charset_mask(self, charset: str, vocab: int):
        """Boolean mask over the logits of the tokens a `charset` request may choose (cached)."""
        if charset not in self._charset_masks:
            mask = self._torch.zeros(vocab, dtype=self._torch.bool)
            mask[list(charset_token_ids(self.tokenizer, charset, sorted(self.stop_ids)))] = True
            self._charset_masks[charset] = mask
        return self._charset_masks[charset]

    def _completion(self, tokens: list[int], logprobs: list[float], request: GenerateRequest) -> Completion:
        stopped = bool(tokens) and tokens[-1] in self.stop_ids
        text_ids = tokens[:-1] if stopped else tokens
        return Completion(
            text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
            token_ids=tuple(tokens),
            logprobs=tuple(logprobs) if request.logprobs else None,
            finish_reason="stop" if stopped else "length",
        )


@dataclass(frozen=True)
class _PackedLayout:
    """One score request as a packed row: the prompt prefix its continuations share, then each continuation's
    fed tokens (all but the last, unless its word end is scored) at the positions they would have alone."""

    ids: list[int]
    positions: list[int]
    shared: int
    """Prompt-prefix tokens every continuation shares (the tokenizer may merge across the prompt's end)."""
    n_prompt: int
    starts: list[int]
    """Index in `ids` of each continuation's first fed token."""
    rests: list[list[int]]
    """Each continuation's tokens after the shared prefix."""
    offsets: list[int]
    """How many of `rests[i]` still belong to the prompt (not scored)."""
    fed: list[list[int]]
    word_end: bool

    @classmethod
    def of(cls, tokenizer, request: ScoreRequest) -> "_PackedLayout":
        prompt_ids = encode(tokenizer, request.prompt)
        fulls = [encode(tokenizer, request.prompt + c) for c in request.continuations]
        starts = [continuation_start(prompt_ids, f) for f in fulls]
        shared = min(starts)
        rests = [f[shared:] for f in fulls]
        fed = [rest if request.word_end else rest[:-1] for rest in rests]
        ids, positions, lows = list(fulls[0][:shared]), list(range(shared)), []
        for tokens in fed:
            lows.append(len(ids))
            ids += tokens
            positions += range(shared, shared + len(tokens))
        return cls(ids, positions, shared, len(prompt_ids), lows, rests, [s - shared for s in starts], fed, request.word_end)

    def kept(self) -> list[int]:
        """Indices whose logits are read: the prompt's last token and every fed continuation token."""
        return [self.shared - 1, *range(self.shared, len(self.ids))]


def _score_result(request: ScoreRequest, per_token: list[tuple[float, ...]], word_ends: list[float]) -> ScoreResult:
    """Totals are token logprobs plus, where the request scores word ends, the word-end logprob."""
    if not request.word_end:
        return ScoreResult(request, tuple(per_token), tuple(float(sum(t)) for t in per_token))
    totals = tuple(float(sum(t)) + end for t, end in zip(per_token, word_ends))
    return ScoreResult(request, tuple(per_token), totals, tuple(word_ends))


def _gate_values(gate: LoraGate | None, n_prompt: int):
    """Function: positions -> list of 1.0/0.0 adapter switches (prompt mask, then gate.generated)."""
    prompt_mask = gate.prompt_mask(n_prompt) if gate else ()
    after = 1.0 if gate is None or gate.generated == "on" else 0.0

    def values(positions) -> list[float]:
        if gate is None:
            return [1.0 for _ in positions]
        return [float(prompt_mask[p]) if p < n_prompt else after for p in positions]

    return values


def _chunks_by_rows(indices: list[int], requests: Sequence[GenerateRequest], max_rows: int) -> list[list[int]]:
    chunks: list[list[int]] = [[]]
    rows = 0
    for i in indices:
        if chunks[-1] and rows + requests[i].n > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(i)
        rows += requests[i].n
    return [c for c in chunks if c]


def _generator(torch, seed: int | None):
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
