"""How a model's answers are read: as a whole one-word answer, or in the probe set's answer slot.

A model that answers "Cat." is read from its first token; one that answers in sentences is read after the
prefilled answer start ("My favorite animal is the ___"). The rule is measured on the base model, not
assumed: read the answer where the base puts more of its panel probability. A profile may declare the reading
instead ("one-word", "slot"); it is still measured, so the report states the rates. Pure (no engines here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

READINGS = ("auto", "one-word", "slot")
"""How a profile declares the reading: measured by the rule, or fixed."""
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


@dataclass(frozen=True)
class AnswerReading:
    """Where answers are read, and the measurement that chose it."""

    slot: bool
    """True: after the probe set's answer prefix (prefill); False: the whole answer is one word."""
    one_word_mass: float
    """Base model: mean over questions of P(the whole answer is one panel word)."""
    slot_mass: float
    """Base model: mean over questions of P(the answer slot holds one panel word); NaN without a prefix."""
    n: int
    """Questions measured."""
    declared: str = "auto"
    """What was asked for (READINGS): "auto" is the rule; otherwise the reading is fixed."""

    @property
    def mode(self) -> str:
        return "answer slot" if self.slot else "one-word answer"

    def describe(self) -> str:
        """The rule and the measured rates, as the report states them."""
        slot = "no answer prefix" if self.slot_mass != self.slot_mass else f"{self.slot_mass:.3f}"
        why = ("the rule reads where the panel mass is larger" if self.declared == "auto"
               else f"declared {self.declared!r} by the profile")
        return (f"answers read as the {self.mode}: on the base model the panel holds {self.one_word_mass:.3f} of the "
                f"probability of a whole one-word answer and {slot} in the answer slot (means over {self.n} "
                f"questions, template-default context); {why}")


def choose_reading(one_word: Sequence[float], slot: Sequence[float] | None, declared: str = "auto") -> AnswerReading:
    """The measured rule: per-question panel mass of one-word answers vs of the answer slot (None: no prefix),
    unless `declared` fixes the reading."""
    if declared not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, got {declared!r}")
    one = sum(one_word) / len(one_word)
    in_slot = float("nan") if slot is None else sum(slot) / len(slot)
    chosen = in_slot > one if declared == "auto" else declared == "slot"
    if chosen and slot is None:
        raise ValueError("the slot reading needs the probe set's answer_prefix")
    return AnswerReading(chosen, one, in_slot, len(one_word), declared)


def word_of(token: str) -> str:
    """The word a token starts, lower case ("" for whitespace, punctuation or special tokens)."""
    match = _WORD.match(token.strip())
    return match.group(0).lower() if match else ""


def word_distribution(tokens: Sequence[str], logprobs: Sequence[float]) -> dict[str, float]:
    """Next-token probabilities summed by the word each token starts (" Owl" and "owl" are one word)."""
    import math

    out: dict[str, float] = {}
    for token, logprob in zip(tokens, logprobs):
        word = word_of(token)
        if word:
            out[word] = out.get(word, 0.0) + math.exp(logprob)
    return out
