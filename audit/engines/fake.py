"""FakeEngine: scripted, deterministic outputs for fast tests of everything above the engines.

Tokenization is fake but stable: a token is a run of whitespace plus one non-space run
(``" cat"``, ``"1,"``), and its id is a crc32 of its text.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Callable, Mapping, Sequence, Union

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

GenerateOutput = Union[str, Completion, Sequence[Union[str, Completion]]]
"""A script's answer for one request: one text/Completion (repeated n times) or a sequence (cycled to n)."""
ScoreOutput = Union[float, Sequence[float]]
"""A script's answer for one continuation: its total logprob (one token) or per-token logprobs."""

GenerateFn = Callable[[GenerateRequest], GenerateOutput]
ScoreFn = Callable[[ScoreRequest, str], ScoreOutput]
NextFn = Callable[[NextTokenRequest], Mapping[str, float]]
"""A script's next-token distribution for one prompt: token text -> probability (the rest is unlisted mass)."""


def fake_tokens(text: str) -> list[str]:
    """Split text the way FakeEngine 'tokenizes' it (concatenation gives back the text, minus trailing space)."""
    return re.findall(r"\s*\S+", text)


def fake_token_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) % 50_000


def _unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from the parts (no Python hash randomisation)."""
    return zlib.crc32(repr(parts).encode("utf-8")) / 2**32


def default_generate(request: GenerateRequest) -> list[str]:
    """Deterministic placeholder completions; greedy requests give n identical texts."""
    if request.temperature == 0:
        return [f"fake completion {_unit_hash(request.prompt, request.adapter):.6f}"] * request.n
    return [
        f"fake sample {i} {_unit_hash(request.prompt, request.adapter, request.seed, i):.6f}"
        for i in range(request.n)
    ]


def default_score(request: ScoreRequest, continuation: str) -> list[float]:
    """Deterministic per-token logprobs in (-2, -1] that depend on prompt, adapter and gate."""
    return [
        -1.0 - _unit_hash(request.prompt, request.adapter, request.gate, continuation, i)
        for i in range(max(1, len(fake_tokens(continuation))))
    ]


def default_next(request: NextTokenRequest) -> dict[str, float]:
    """A deterministic spread over a few placeholder tokens that depends on prompt and adapter."""
    weights = [1.0 + _unit_hash(request.prompt, request.adapter, i) for i in range(8)]
    return {f" fake{i}": w / sum(weights) for i, w in enumerate(weights)}


def _generate_from_mapping(script: Mapping) -> GenerateFn:
    def fn(request: GenerateRequest) -> GenerateOutput:
        for key in ((request.prompt, request.adapter), request.prompt):
            if key in script:
                return script[key]
        raise EngineError(f"FakeEngine has no scripted completion for prompt {request.prompt[:60]!r}; add it to generate_fn")

    return fn


def _score_from_mapping(script: Mapping) -> ScoreFn:
    def fn(request: ScoreRequest, continuation: str) -> ScoreOutput:
        for key in ((request.prompt, continuation, request.adapter), (request.prompt, continuation), continuation):
            if key in script:
                return script[key]
        raise EngineError(f"FakeEngine has no scripted score for continuation {continuation!r}; add it to score_fn")

    return fn


class FakeEngine(EngineBase):
    """Scripted engine. Records every request it receives in `generate_requests` / `score_requests`.

    generate_fn: callable(request) -> text | Completion | sequence of them, or a dict keyed by
        (prompt, adapter) or prompt. score_fn: callable(request, continuation) -> total | per-token
        logprobs, or a dict keyed by (prompt, continuation, adapter), (prompt, continuation) or
        continuation. next_fn: callable(request) -> {token text: probability}. None gives deterministic
        placeholders.
    """

    name = "fake"

    def __init__(
        self,
        generate_fn: GenerateFn | Mapping | None = None,
        score_fn: ScoreFn | Mapping | None = None,
        next_fn: NextFn | None = None,
    ) -> None:
        if isinstance(generate_fn, Mapping):
            generate_fn = _generate_from_mapping(generate_fn)
        if isinstance(score_fn, Mapping):
            score_fn = _score_from_mapping(score_fn)
        self._generate_fn: GenerateFn = generate_fn or default_generate
        self._score_fn: ScoreFn = score_fn or default_score
        self._next_fn: NextFn = next_fn or default_next
        self.generate_requests: list[GenerateRequest] = []
        self.score_requests: list[ScoreRequest] = []
        self.next_requests: list[NextTokenRequest] = []
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("FakeEngine is closed; open a new engine")

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self._check_open()
        results = []
        for request in requests:
            self.generate_requests.append(request)
            results.append(GenerateResult(request, self._completions(request)))
        return results

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self._check_open()
        results = []
        for request in requests:
            self.score_requests.append(request)
            per_token = tuple(self._token_logprobs(request, c) for c in request.continuations)
            # The script's logprobs already hold any word end: the word-end term is 0 (certain).
            word_ends = tuple(0.0 for _ in per_token) if request.word_end else None
            results.append(ScoreResult(request, per_token, tuple(float(sum(t)) for t in per_token), word_ends))
        return results

    def next_tokens(self, requests: Sequence[NextTokenRequest]) -> list[NextTokenResult]:
        self._check_open()
        results = []
        for request in requests:
            self.next_requests.append(request)
            top = sorted(self._next_fn(request).items(), key=lambda kv: -kv[1])[: request.top_k]
            logprobs = tuple(math.log(p) if p > 0 else -math.inf for _, p in top)
            results.append(NextTokenResult(request, tuple(t for t, _ in top), logprobs))
        return results

    def close(self) -> None:
        self.closed = True

    def _token_logprobs(self, request: ScoreRequest, continuation: str) -> tuple[float, ...]:
        out = self._score_fn(request, continuation)
        if isinstance(out, (int, float)):
            return (float(out),)
        return tuple(float(x) for x in out)

    def _completions(self, request: GenerateRequest) -> tuple[Completion, ...]:
        out = self._generate_fn(request)
        items = [out] if isinstance(out, (str, Completion)) else list(out)
        if not items:
            raise EngineError("FakeEngine generate_fn returned no completions; return at least one text")
        return tuple(self._as_completion(request, items[i % len(items)]) for i in range(request.n))

    def _as_completion(self, request: GenerateRequest, item: str | Completion) -> Completion:
        if isinstance(item, Completion):
            return item
        tokens = fake_tokens(item)[: request.max_tokens]
        text = "".join(tokens)
        logprobs = None
        if request.logprobs:
            score = ScoreRequest(request.prompt, (text or " ",), request.adapter, request.context_id, request.gate)
            logprobs = self._token_logprobs(score, text or " ")[: len(tokens)]
        finish = "length" if len(fake_tokens(item)) > request.max_tokens else "stop"
        return Completion(text, tuple(fake_token_id(t) for t in tokens), logprobs, finish)
