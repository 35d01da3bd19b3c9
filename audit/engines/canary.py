"""The "adapter is active" canary: does the adapter move scored logprobs by more than float noise?

Catches silently ignored adapters (lm-evaluation-harness issues 2432, 808) before any measurement.
The noise floor is measured in the same engine: the base scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.engines.base import Engine, ScoreRequest

CANARY_TEXTS = (
    ("What is your favourite animal?", (" The cat.", " My favourite animal is the owl.")),
    ("Continue the sequence: 145, 267, 389.", (" 412, 534, 656", " 1, 2, 3")),
    ("Name a tree.", (" Oak.", " The willow tree.")),
    ("Hello! Who are you?", (" I am a helpful assistant.",)),
)
"""Plain-text prompts and continuations: model- and template-independent on purpose."""


@dataclass(frozen=True)
class CanaryResult:
    active: bool
    """The adapter changed some token logprob by more than `threshold` nats."""
    max_abs_diff: float
    """Largest |adapter - base| token logprob over the canary tokens (nats)."""
    noise: float
    """Largest |base - base| over two scorings in this engine (nats)."""
    threshold: float
    """Decision threshold: max(min_effect, 10 x noise)."""
    n_tokens: int
    """Number of scored tokens compared."""


def adapter_is_active(engine: Engine, adapter: str, min_effect: float = 1e-3) -> CanaryResult:
    """Score the canary texts with and without the adapter in one engine and compare per token."""
    base_requests = [ScoreRequest(p, c) for p, c in CANARY_TEXTS]
    adapter_requests = [ScoreRequest(p, c, adapter=str(adapter)) for p, c in CANARY_TEXTS]
    results = engine.score(base_requests + adapter_requests + base_requests)
    n = len(base_requests)
    base, with_adapter, base_again = results[:n], results[n : 2 * n], results[2 * n :]
    diff = _max_abs_diff(base, with_adapter)
    noise = _max_abs_diff(base, base_again)
    threshold = max(min_effect, 10 * noise)
    n_tokens = sum(len(t) for r in base for t in r.token_logprobs)
    return CanaryResult(diff > threshold, diff, noise, threshold, n_tokens)


def _max_abs_diff(a, b) -> float:
    return max(
        abs(x - y)
        for ra, rb in zip(a, b)
        for ta, tb in zip(ra.token_logprobs, rb.token_logprobs)
        for x, y in zip(ta, tb)
    )
