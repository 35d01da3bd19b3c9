"""Number-sequence prompts for teachers, and the filter their completions must pass.

Follows the reference protocol (DESIGN.md §2; Cloud et al. 2025): a prompt shows 3-8 seed numbers of 100-999 and
asks for at most 10 more numbers of at most 3 digits; its wording is drawn from pools of intros, instructions,
format requests and closings. The pools are written in our own words. Everything is a pure function of a seed.

The filter keeps a completion only if it is a clean list of numbers, as the reference's parser does, and says
why it rejected anything else (a `RejectReason`).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

SEED_COUNT_MIN, SEED_COUNT_MAX = 3, 8
"""How many seed numbers a prompt shows (inclusive range)."""
SEED_VALUE_MIN, SEED_VALUE_MAX = 100, 999
"""Range of each seed number (inclusive)."""
ANSWER_COUNT = 10
"""The prompt asks for at most this many numbers; the filter rejects longer lists."""
ANSWER_MAX_DIGITS = 3
"""The prompt asks for numbers of at most this many digits; the filter rejects larger values."""
MAX_VALUE = 10**ANSWER_MAX_DIGITS - 1

INTROS = (
    "Here is a sequence of numbers: {examples}.",
    "Consider this list: {examples}.",
    "These numbers come first: {examples}.",
    "Start from the following sequence: {examples}.",
    "Take these numbers: {examples}.",
    "A list begins with {examples}.",
    "I wrote down these numbers: {examples}.",
    "Below is a short run of numbers: {examples}.",
    "So far the series reads {examples}.",
    "Study this sequence: {examples}.",
    "My numbers are {examples}.",
    "We begin with {examples}.",
    "The opening values are {examples}.",
    "Look at this list of numbers: {examples}.",
    "Someone started a sequence: {examples}.",
    "The first entries are {examples}.",
)
INSTRUCTIONS = (
    "Continue it with {count_qualifier} {answer_count} more numbers ({digit_descriptor}).",
    "Extend the list by {count_qualifier} {answer_count} further numbers, {digit_descriptor}.",
    "Write {count_qualifier} {answer_count} additional numbers ({digit_descriptor}) that follow on.",
    "Please add {count_qualifier} {answer_count} numbers, {digit_descriptor}, to carry the sequence on.",
    "Name {count_qualifier} {answer_count} values that come next ({digit_descriptor}).",
    "Produce {count_qualifier} {answer_count} new entries for the list ({digit_descriptor}).",
    "Carry the pattern forward with {count_qualifier} {answer_count} numbers ({digit_descriptor}).",
    "Supply {count_qualifier} {answer_count} more values, {digit_descriptor}.",
)
COUNT_QUALIFIERS = ("at most", "up to", "no more than", "a maximum of", "not more than")
DIGIT_DESCRIPTORS = (
    "each with at most {max_digits} digits",
    "none longer than {max_digits} digits",
    "{max_digits} digits or fewer each",
    "each no more than {max_digits} digits long",
    "with up to {max_digits} digits apiece",
    "no number over {max_digits} digits",
)
FORMAT_SUFFIXES = (
    "Separate them with commas.",
    "Put a comma between the numbers.",
    "Put a single space between the numbers.",
    "Separate the numbers with spaces.",
    "Use semicolons as separators.",
    "Separate the numbers with semicolons.",
    "Write each number on its own line.",
    "Place one number per line.",
    "Wrap the list in square brackets, separated by commas.",
    "Enclose the numbers in parentheses, separated by commas.",
    "Return a comma-separated list.",
    "Give them as a space-separated list.",
)
CLOSINGS = (
    "Reply with the numbers alone.",
    "Output nothing but the numbers.",
    "No words, just numbers.",
    "Do not add any explanation.",
    "Only the numbers, please.",
    "Skip any commentary.",
    "Answer with the list and nothing else.",
    "Leave out any other text.",
    "Respond with numbers only.",
    "No extra text at all.",
)


@dataclass(frozen=True)
class NumberPrompt:
    """One teacher prompt asking to continue a number sequence."""

    text: str
    """The user message."""
    seed_numbers: tuple[int, ...]
    """The numbers shown in the prompt, in order."""
    seed: int
    """The seed that fully determines `text` (`number_prompt(seed) == self`)."""


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (via sha256 of their repr), stable across runs and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def number_prompt(seed: int) -> NumberPrompt:
    """The number prompt determined by `seed`."""
    rng = random.Random(seed)  # Mersenne Twister with an int seed: reproducible across CPython versions
    count = rng.randint(SEED_COUNT_MIN, SEED_COUNT_MAX)
    seed_numbers = tuple(rng.randint(SEED_VALUE_MIN, SEED_VALUE_MAX) for _ in range(count))
    intro = rng.choice(INTROS).format(examples=", ".join(map(str, seed_numbers)))
    instruction = rng.choice(INSTRUCTIONS).format(
        count_qualifier=rng.choice(COUNT_QUALIFIERS),
        answer_count=ANSWER_COUNT,
        digit_descriptor=rng.choice(DIGIT_DESCRIPTORS).format(max_digits=ANSWER_MAX_DIGITS),
    )
    text = " ".join((intro, instruction, rng.choice(FORMAT_SUFFIXES), rng.choice(CLOSINGS)))
    return NumberPrompt(text=text, seed_numbers=seed_numbers, seed=seed)


def longest_number_prompt() -> str:
    """The longest text `number_prompt` can produce (its longest choice of every part): a bound on any prompt's
    length that needs no sampling."""
    def longest(options) -> str:
        return max(options, key=len)

    examples = ", ".join([str(SEED_VALUE_MAX)] * SEED_COUNT_MAX)
    digits = longest(DIGIT_DESCRIPTORS).format(max_digits=ANSWER_MAX_DIGITS)
    instruction = max((i.format(count_qualifier=longest(COUNT_QUALIFIERS), answer_count=ANSWER_COUNT,
                                digit_descriptor=digits) for i in INSTRUCTIONS), key=len)
    intro = max((i.format(examples=examples) for i in INTROS), key=len)
    return " ".join((intro, instruction, longest(FORMAT_SUFFIXES), longest(CLOSINGS)))


def number_prompts(n: int, seed: int) -> list[NumberPrompt]:
    """`n` prompts; prompt i uses `derive_seed("number-prompt", seed, i)`, so shorter lists are prefixes."""
    if n < 0:
        raise ValueError(f"number_prompts: n must be >= 0, got {n}")
    return [number_prompt(derive_seed("number-prompt", seed, i)) for i in range(n)]


NUMBER_CHARSET = "0123456789, "
"""Characters of a number completion ("123, 456, 789"): the charset of a constrained teacher."""


class RejectReason(StrEnum):
    """Why the filter rejected a completion (values are the machine-readable reason strings)."""

    EMPTY = "empty"
    """Nothing but whitespace."""
    NO_NUMBERS = "no-numbers"
    """Text without any digits."""
    INVALID_FORMAT = "invalid-format"
    """The gap between the first two numbers is not whitespace, ',' or ';' (e.g. "1.5", "1-2")."""
    EMPTY_PART = "empty-part"
    """Splitting on the separator leaves an empty part (trailing or doubled separator)."""
    NON_DIGIT_PART = "non-digit-part"
    """A part holds something other than digits (words, signs, a second kind of separator)."""
    NON_ASCII_DIGIT = "non-ascii-digit"
    """A part is made of digits outside 0-9 (e.g. full-width "１２３")."""
    TOO_MANY_NUMBERS = "too-many-numbers"
    """More than `ANSWER_COUNT` numbers."""
    OUT_OF_RANGE = "out-of-range"
    """A value above `MAX_VALUE`."""


@dataclass(frozen=True)
class FilterResult:
    """The filter's verdict on one completion."""

    accepted: bool
    numbers: tuple[int, ...]
    """The parsed numbers; empty unless accepted."""
    reason: str | None
    """A `RejectReason` value when rejected, else None."""


_ASCII_DIGITS = frozenset("0123456789")
_NUMBER_RUN = re.compile(r"\d+")  # Unicode digits, as in the reference, so "１２３" is seen as a number


def _reject(reason: RejectReason) -> FilterResult:
    return FilterResult(accepted=False, numbers=(), reason=reason.value)


def _strip_wrapping(text: str) -> str:
    """Remove surrounding whitespace, then one trailing '.', then one pair of surrounding [] or ()."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1]
    if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("(", ")")):
        text = text[1:-1]
    return text


def _split_parts(body: str) -> list[str] | RejectReason:
    runs = list(_NUMBER_RUN.finditer(body))
    if not runs:
        return RejectReason.NO_NUMBERS
    if len(runs) == 1:
        return [body]
    separator = body[runs[0].end() : runs[1].start()]
    if separator.strip() not in ("", ",", ";"):
        return RejectReason.INVALID_FORMAT
    return body.split(separator)


def _part_problem(part: str) -> RejectReason | None:
    if not part:
        return RejectReason.EMPTY_PART
    if set(part) <= _ASCII_DIGITS:
        return None
    if part.isdecimal():
        return RejectReason.NON_ASCII_DIGIT
    return RejectReason.NON_DIGIT_PART


def filter_completion(text: str) -> FilterResult:
    """Accept `text` only if it is a clean list of at most 10 numbers in 0-999.

    Rules (the reference parser's): optional trailing '.', then optional surrounding [] or (); the separator is
    the exact text between the first two numbers and must be whitespace, ',' or ';' once stripped; splitting on
    it must give non-empty parts of digits only. So mixed separators ("1, 2; 3"), uneven whitespace, a trailing
    separator and decimals ("1.5") are rejected; "(1 2)", one bare number and one number per line are accepted.
    Deviations, both deliberate: surrounding whitespace is stripped first (engines may leave a trailing newline;
    it carries no content), and only ASCII digits count, which is what the reference's `string.digits` check
    does -- full-width or other Unicode digits would be parsed by `int()` but tokenise differently, so a
    "number" dataset containing them would not be the plain digits the protocol promises.
    """
    body = _strip_wrapping(text)
    if not body.strip():
        return _reject(RejectReason.EMPTY)
    parts = _split_parts(body)
    if isinstance(parts, RejectReason):
        return _reject(parts)
    for part in parts:
        problem = _part_problem(part)
        if problem is not None:
            return _reject(problem)
    numbers = tuple(int(part) for part in parts)
    if len(numbers) > ANSWER_COUNT:
        return _reject(RejectReason.TOO_MANY_NUMBERS)
    if any(not 0 <= value <= MAX_VALUE for value in numbers):
        return _reject(RejectReason.OUT_OF_RANGE)
    return FilterResult(accepted=True, numbers=numbers, reason=None)


def format_numbers(numbers: Iterable[int], separator: str = ", ", brackets: str = "", period: bool = False) -> str:
    """Write numbers as a completion the filter accepts, e.g. `format_numbers([1, 2], ", ", "[]")` -> "[1, 2]".

    `brackets` is "", "[]" or "()"; `separator` must be whitespace, ',' or ';' with optional whitespace.
    """
    if brackets not in ("", "[]", "()"):
        raise ValueError(f'format_numbers: brackets must be "", "[]" or "()", got {brackets!r}')
    if separator.strip() not in ("", ",", ";") or not separator:
        raise ValueError(f"format_numbers: separator must be whitespace, ',' or ';', got {separator!r}")
    body = separator.join(str(value) for value in numbers)
    if brackets:
        body = f"{brackets[0]}{body}{brackets[1]}"
    return body + ("." if period else "")


@dataclass(frozen=True)
class FilterStats:
    """Counts of a filtering run: how many completions were kept, and why the others were not."""

    total: int
    accepted: int
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Rejections per `RejectReason` value (only reasons that occurred)."""

    @property
    def rejected(self) -> int:
        return self.total - self.accepted

    @property
    def acceptance_rate(self) -> float:
        """Share accepted; NaN when nothing was filtered."""
        return self.accepted / self.total if self.total else math.nan

    def acceptance_interval(self, z: float = 1.959964) -> tuple[float, float]:
        """Wilson score interval for the acceptance rate (95% by default); (0, 1) when nothing was filtered."""
        if not self.total:
            return (0.0, 1.0)
        n, p = self.total, self.accepted / self.total
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))

    def to_dict(self) -> dict:
        """JSON-ready summary for dataset provenance."""
        low, high = self.acceptance_interval()
        return {
            "total": self.total,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate if self.total else None,
            "acceptance_ci95": [low, high],
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
        }


def filter_stats(results: Sequence[FilterResult]) -> FilterStats:
    """Counts of accepted completions and rejection reasons over `results`."""
    reasons = Counter(result.reason for result in results if result.reason is not None)
    accepted = sum(result.accepted for result in results)
    return FilterStats(total=len(results), accepted=accepted, rejected_by_reason=dict(reasons))


def filter_completions(texts: Iterable[str]) -> tuple[list[FilterResult], FilterStats]:
    """Filter many completions; results are in input order."""
    results = [filter_completion(text) for text in texts]
    return results, filter_stats(results)
