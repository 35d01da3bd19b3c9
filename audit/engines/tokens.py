"""Tokenizer helpers shared by the HF and vLLM engines, so both split and stop identically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")
"""Chat end-of-turn tokens we stop at when the tokenizer's vocabulary has them."""


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of rendered chat text (the template already holds any special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def continuation_start(prompt_ids: Sequence[int], full_ids: Sequence[int]) -> int:
    """Index in `full_ids` (= encode(prompt + continuation)) where the scored tokens begin.

    Normally len(prompt_ids); if the tokenizer merged across the prompt/continuation boundary,
    the first differing position, so the merged token counts as continuation.
    """
    k = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        k += 1
    if k >= len(full_ids):
        raise ValueError("continuation adds no tokens after the prompt; score a non-empty continuation")
    return max(k, 1)


def stop_token_ids(tokenizer, model_path: str | Path | None = None) -> tuple[int, ...]:
    """End-of-turn and eos ids: the tokenizer's eos, generation_config's eos, and known chat end tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if model_path is not None:
        import json

        gen_config = Path(model_path) / "generation_config.json"
        if gen_config.is_file():
            eos = json.loads(gen_config.read_text()).get("eos_token_id")
            ids.update(int(e) for e in ([eos] if isinstance(eos, int) else eos or []))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return tuple(sorted(ids))


def charset_token_ids(tokenizer, charset: str, stop_ids: Sequence[int]) -> tuple[int, ...]:
    """Ids of the tokens whose decoded text is non-empty and uses only `charset`, plus the stop ids.

    The vocabulary is decoded token by token, so byte-level pieces ("Ġ" for a space) count by their text.
    """
    allowed = set(charset)
    ids = [i for i in range(len(tokenizer)) if (text := tokenizer.decode([i])) and set(text) <= allowed]
    return tuple(sorted(set(ids) | set(stop_ids)))


def word_end_token_ids(tokenizer, stop_ids: Sequence[int]) -> tuple[int, ...]:
    """Ids of the tokens that cannot continue a word: their decoded text starts with a non-word character
    (space, punctuation, newline), or they end the turn. A word followed by one of them is complete, the same
    rule as the `(?!\\w)` of audit.scoring's word match."""
    ids = [i for i in range(len(tokenizer)) if (text := tokenizer.decode([i])) and not re.match(r"\w", text)]
    return tuple(sorted(set(ids) | set(stop_ids)))
