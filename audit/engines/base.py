"""The engine interface: request/result records and the `Engine` protocol.

Pure (no torch/vllm imports). Prompts are rendered chat text; engines tokenize them with
``add_special_tokens=False`` and stop generation at the tokenizer's end-of-turn / eos tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence, runtime_checkable

from audit.errors import SubauditError


class EngineError(SubauditError):
    """A request an engine cannot serve (one line, naming the fix)."""


@dataclass(frozen=True)
class LoraGate:
    """Position-gated LoRA: the adapter acts only at chosen prompt token positions."""

    positions: frozenset[int]
    """0-based token positions of the tokenized prompt where the adapter is active."""
    generated: Literal["on", "off"] = "off"
    """Adapter state for tokens after the prompt (generated or scored continuation tokens)."""
    invert: bool = False
    """If True the adapter is active everywhere in the prompt *except* at `positions`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", frozenset(self.positions))
        if self.generated not in ("on", "off"):
            raise ValueError(f"LoraGate.generated must be 'on' or 'off', got {self.generated!r}")
        if any(p < 0 for p in self.positions):
            raise ValueError("LoraGate.positions must be non-negative token positions")

    def prompt_mask(self, n_tokens: int) -> tuple[bool, ...]:
        """Per prompt position: is the adapter active there?"""
        return tuple((i in self.positions) != self.invert for i in range(n_tokens))


@dataclass(frozen=True)
class GenerateRequest:
    """Sample (or greedily decode) completions of one rendered prompt."""

    prompt: str
    """Rendered chat text, ending with the generation prompt."""
    adapter: str | None = None
    """LoRA adapter directory, or None for the base model."""
    n: int = 1
    """Number of completions."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    max_tokens: int = 32
    """Maximum new tokens per completion."""
    seed: int | None = None
    """Sampling seed (same seed + same request -> same completions)."""
    logprobs: bool = False
    """Return the logprob of each generated token."""
    context_id: str = ""
    """Id of the chat context the prompt was rendered in (bookkeeping only)."""
    gate: LoraGate | None = None
    """Position-gated LoRA (HF engine only); None = adapter everywhere."""
    charset: str | None = None
    """Constrained decoding: only tokens whose text uses just these characters, or an end-of-turn token,
    may be chosen (the model's distribution renormalised over them). None: any token."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"GenerateRequest.n must be >= 1, got {self.n}")
        if self.charset is not None and not self.charset:
            raise ValueError("GenerateRequest.charset must name at least one character, or be None")
        if self.temperature < 0:
            raise ValueError(f"GenerateRequest.temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"GenerateRequest.max_tokens must be >= 1, got {self.max_tokens}")
        if self.gate is not None and self.adapter is None:
            raise ValueError("GenerateRequest.gate needs an adapter to gate")


@dataclass(frozen=True)
class Completion:
    """One generated continuation."""

    text: str
    """Decoded text, without the end-of-turn token."""
    token_ids: tuple[int, ...]
    """Generated token ids (including a final end-of-turn token when it stopped there)."""
    logprobs: tuple[float, ...] | None
    """Logprob of each generated token under the sampling model, if requested."""
    finish_reason: str
    """"stop" (end-of-turn / eos) or "length" (max_tokens reached)."""


@dataclass(frozen=True)
class GenerateResult:
    request: GenerateRequest
    completions: tuple[Completion, ...]


@dataclass(frozen=True)
class ScoreRequest:
    """Teacher-forced log-probabilities of continuations after one prompt."""

    prompt: str
    """Rendered chat text the continuations follow."""
    continuations: tuple[str, ...]
    """Texts to score; each is tokenized as part of prompt + continuation."""
    adapter: str | None = None
    """LoRA adapter directory, or None for the base model."""
    context_id: str = ""
    """Id of the chat context the prompt was rendered in (bookkeeping only)."""
    gate: LoraGate | None = None
    """Position-gated LoRA (HF engine only); None = adapter everywhere."""
    word_end: bool = False
    """Also score that each continuation ends a word: the log-probability that the next token starts with a
    non-word character or ends the turn is added to its total, so " cat" excludes " cats" and " caterpillar"
    (all three engines)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "continuations", tuple(self.continuations))
        if not self.continuations:
            raise ValueError("ScoreRequest.continuations must not be empty")
        if any(c == "" for c in self.continuations):
            raise ValueError("ScoreRequest.continuations must be non-empty strings")
        if self.gate is not None and self.adapter is None:
            raise ValueError("ScoreRequest.gate needs an adapter to gate")


@dataclass(frozen=True)
class ScoreResult:
    request: ScoreRequest
    token_logprobs: tuple[tuple[float, ...], ...]
    """Per continuation, the logprob of each of its tokens."""
    totals: tuple[float, ...]
    """Per continuation, the sum of its token logprobs, plus its word-end logprob if the request asked for one."""
    word_end_logprobs: tuple[float, ...] | None = None
    """Per continuation, log P(the next token ends the word), when the request set `word_end`."""


@dataclass(frozen=True)
class NextTokenRequest:
    """The most likely next tokens after one prompt: the open-vocabulary view of an answer slot."""

    prompt: str
    """Rendered chat text (with any prefilled answer start) whose next token is asked for."""
    adapter: str | None = None
    """LoRA adapter directory, or None for the base model."""
    top_k: int = 50
    """How many of the most likely tokens to return."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"NextTokenRequest.top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class NextTokenResult:
    request: NextTokenRequest
    tokens: tuple[str, ...]
    """Decoded text of each of the top_k tokens, most likely first."""
    logprobs: tuple[float, ...]
    """Their log-probabilities under the model (the rest of the vocabulary holds the remaining mass)."""


@runtime_checkable
class Engine(Protocol):
    """What every engine offers. Use as a context manager so `close()` always runs."""

    name: str

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def next_tokens(self, requests: Sequence[NextTokenRequest]) -> list[NextTokenResult]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc: object) -> None: ...


class EngineBase:
    """Shared context-manager plumbing for concrete engines."""

    name: str = "engine"

    def close(self) -> None:  # pragma: no cover - overridden where there is something to free
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
