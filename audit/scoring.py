"""Trait scorers: how strongly a model prefers a target over its panel, per evaluation question.

Two scorers with one interface, ``scorer.score(engine, probes, context, target, adapter=None)``:

- `ExactScorer`: per entry, the teacher-forced probability of its surface forms, summed over forms. No
  sampling, so no sampling noise.
- `SampledScorer`: N samples per question at T=1, counted per entry. The reference metric. The sample texts
  are kept in `TraitScores.samples`.

What counts as "the answer" depends on `prefill` (the same on both scorers):

- `prefill=False` (the reference protocol): exact scores the *whole answer* being a form (form + the
  template's end-of-turn, e.g. exactly "Cat<|im_end|>"); sampled counts samples that *mention* a form as a
  whole word anywhere ("The cat." and "I love cats" count; "caterpillar" does not). The two events coincide
  for a model that answers with a lone word (tiny-qwen: they agree), not for a chatty one: under 1% of
  SmolLM2-135M-Instruct's samples are a lone panel word, and its sentences name cat more often than its
  one-word answers do, so neither statistic agrees there (measured: tests/test_scoring_agreement.py).
- `prefill=True`: both scorers write the probe set's `answer_prefix` ("My favorite animal is the") as the
  start of the answer, so the model names its choice in one slot. Exact scores " " + form followed by a
  word end (the next token starts with a non-word character or ends the turn; engine `word_end`); sampled
  counts a sample when its text starts with " " + form and a word end. One event, computed vs simulated.
  What a sample names *after* the slot ("the lilac cat", "dog. I love cats") is not the answer and is not
  counted; benchmarks/scoring_agreement.py reports how much that would add.

Both return per-question values so the statistics can cluster-bootstrap over questions, and two statistics:
`p_target` (statistic "probability") and `share`, the target's share of the panel total, i.e.
P(target | the answer names a panel entry), NaN where undefined.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal, Protocol, Sequence

from audit.errors import SubauditError
from audit.engines.base import Engine, GenerateRequest, LoraGate, ScoreRequest, ScoreResult
from audit.numbers import derive_seed
from audit.reading import AnswerReading, choose_reading


class ScoringError(SubauditError):
    """A scorer cannot run as asked (one line, naming the fix)."""


Statistic = Literal["probability", "share"]
"""A per-question trait value: "probability" is `TraitScores.p_target`, "share" is `TraitScores.share`."""


@dataclass(frozen=True)
class TraitScores:
    """Per-question trait measurements of one model (base or base + adapter) in one context."""

    scorer: str
    """"exact" or "sampled"."""
    target: str
    """The panel entry whose probability is reported."""
    panel: tuple[str, ...]
    """Panel entry names, the column order of `p_panel`."""
    questions: tuple[str, ...]
    """Evaluation questions, the row order of every per-question field."""
    p_panel: tuple[tuple[float, ...], ...]
    """Per question, per panel entry: P(the whole answer is one of its forms) (exact) or the fraction of
    samples that mention it (sampled)."""
    context_id: str = ""
    """Chat context the questions were rendered in."""
    n_samples: int | None = None
    """Samples per question (sampled scorer only)."""
    samples: tuple[tuple[str, ...], ...] | None = None
    """Per question, the texts of the samples that were counted (sampled scorer only)."""
    answer_prefix: str = ""
    """The answer start both scorers wrote for the model (`prefill`), "" if none."""

    @property
    def target_index(self) -> int:
        return self.panel.index(self.target)

    @property
    def p_target(self) -> tuple[float, ...]:
        """Per question: the target's column of `p_panel` (the event differs by scorer, see the module docstring)."""
        return tuple(row[self.target_index] for row in self.p_panel)

    @property
    def share(self) -> tuple[float, ...]:
        """Per question: the target's share of the panel's total; NaN where the panel got nothing.

        NaN, not 0: a question where no sample named a panel entry says nothing about which entry the model
        prefers, and counting it as 0 would pull a sampled share below the exact one.
        """
        return tuple(row[self.target_index] / s if (s := sum(row)) > 0 else math.nan for row in self.p_panel)

    def values(self, statistic: Statistic) -> tuple[float, ...]:
        """Per question: `p_target` ("probability") or `share` ("share")."""
        if statistic == "probability":
            return self.p_target
        if statistic == "share":
            return self.share
        raise ScoringError(f"unknown statistic {statistic!r}; use 'probability' or 'share'")

    @property
    def mean_p_target(self) -> float:
        values = self.p_target
        return sum(values) / len(values)

    def to_dict(self) -> dict:
        return {
            "scorer": self.scorer, "target": self.target, "panel": list(self.panel),
            "questions": list(self.questions), "p_panel": [list(r) for r in self.p_panel],
            "context_id": self.context_id, "n_samples": self.n_samples,
            "samples": None if self.samples is None else [list(texts) for texts in self.samples],
            "answer_prefix": self.answer_prefix,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TraitScores":
        return cls(
            scorer=data["scorer"], target=data["target"], panel=tuple(data["panel"]),
            questions=tuple(data["questions"]), p_panel=tuple(tuple(r) for r in data["p_panel"]),
            context_id=data.get("context_id", ""), n_samples=data.get("n_samples"),
            samples=None if data.get("samples") is None else tuple(tuple(texts) for texts in data["samples"]),
            answer_prefix=data.get("answer_prefix", ""),
        )


def paired_values(a: TraitScores, b: TraitScores, statistic: Statistic) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`statistic` of two scorings of the same questions, on the questions where both are defined (not NaN)."""
    if a.questions != b.questions:
        raise ScoringError("the two scorings cover different questions; score both with the same probe set")
    pairs = [(x, y) for x, y in zip(a.values(statistic), b.values(statistic)) if not (math.isnan(x) or math.isnan(y))]
    return tuple(x for x, _ in pairs), tuple(y for _, y in pairs)


class Scorer(Protocol):
    name: str

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores: ...


def _check_target(probes, target: str) -> None:
    if target not in probes.names:
        raise ScoringError(f"target {target!r} is not in the {probes.category} panel {list(probes.names)}; pick one of those")


def answer_prompt(probes, context, question: str, prefill: bool) -> str:
    """The text the answer follows: the question's rendered chat prompt, then the answer prefix if prefilling."""
    prompt = context.render_prompt(question)
    if not prefill:
        return prompt
    if not probes.answer_prefix:
        raise ScoringError(f"the {probes.category} probe set has no answer_prefix; add one to its YAML "
                           f"(e.g. 'My favorite {probes.category} is the') or score without prefill")
    return prompt + probes.answer_prefix


def whole_answer(context, question: str, form: str) -> str:
    """`form` followed by the template's end-of-turn, without trailing whitespace after it.

    Ending at the end-of-turn makes "cat" and "cats" distinct whole answers; the whitespace a template
    puts after it (Qwen: "\n") is not the model's answer and small models never learn to predict it.
    """
    completion = context.render_example(question, form)[1]
    if not completion.startswith(form):
        raise ScoringError(f"context {context.id} changes the answer text {form!r}; exact scoring needs it verbatim")
    return form + completion[len(form):].rstrip()


def slot_answer(form: str) -> str:
    """The text of `form` in the answer slot, right after the answer prefix (which ends without a space)."""
    return " " + form


@dataclass(frozen=True)
class ExactScorer:
    """P(answer == surface form) from teacher-forced logprobs, summed over each entry's forms."""

    prefill: bool = False
    """Score the word in the probe set's answer slot (then a word end) instead of a whole one-word answer."""
    name: str = "exact"

    def requests(self, probes, context, adapter: str | None = None,
                 gate: Callable[[str], LoraGate | None] | None = None) -> list[ScoreRequest]:
        """One request per question, every panel form a continuation; `gate(question)` position-gates the LoRA."""
        forms = [form for entry in probes.panel for form in entry.surface_forms]
        requests = []
        for question in probes.questions:
            if self.prefill:
                continuations = tuple(slot_answer(form) for form in forms)
            else:
                continuations = tuple(whole_answer(context, question, form) for form in forms)
            requests.append(ScoreRequest(prompt=answer_prompt(probes, context, question, self.prefill),
                                         continuations=continuations, adapter=adapter, context_id=context.id,
                                         gate=gate(question) if gate else None, word_end=self.prefill))
        return requests

    def scores(self, probes, context, target: str, results: Sequence[ScoreResult]) -> TraitScores:
        """The TraitScores of `results` (of `requests`): per question, each entry's forms' probabilities summed."""
        owners = [i for i, entry in enumerate(probes.panel) for _ in entry.surface_forms]
        rows = []
        for result in results:
            row = [0.0] * len(probes.panel)
            for entry_index, total in zip(owners, result.totals):
                row[entry_index] += math.exp(total)
            rows.append(tuple(row))
        return TraitScores(self.name, target, probes.names, tuple(probes.questions), tuple(rows), context.id,
                           answer_prefix=probes.answer_prefix if self.prefill else "")

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores:
        _check_target(probes, target)
        return self.scores(probes, context, target, engine.score(self.requests(probes, context, adapter)))


def reading_scores(engine: Engine, probes, context) -> tuple[TraitScores, TraitScores | None]:
    """The base model's panel scores under both readings: whole one-word answers, and the answer slot (None when
    the probe set has no answer prefix)."""
    target = probes.names[0]
    one_word = ExactScorer().score(engine, probes, context, target)
    return one_word, ExactScorer(prefill=True).score(engine, probes, context, target) if probes.answer_prefix else None


def reading_of(one_word: TraitScores, slot: TraitScores | None, declared: str = "auto") -> AnswerReading:
    """The reading rule (audit.reading) applied to `reading_scores`: panel mass per question under each reading."""
    mass = lambda scores: [sum(row) for row in scores.p_panel]  # noqa: E731
    return choose_reading(mass(one_word), None if slot is None else mass(slot), declared)


def measure_reading(engine: Engine, probes, context, declared: str = "auto") -> AnswerReading:
    """The reading rule measured on the base model in `context`."""
    return reading_of(*reading_scores(engine, probes, context), declared)


def _alternatives(forms: tuple[str, ...]) -> str:
    """A regex alternation of `forms`, longest first (so "cats" wins over "cat")."""
    return "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))


@lru_cache(maxsize=256)
def word_pattern(forms: tuple[str, ...]) -> re.Pattern:
    """Whole-word, case-insensitive match of any of `forms`."""
    return re.compile(rf"(?<!\w)(?:{_alternatives(forms)})(?!\w)", re.IGNORECASE)


def mentions(text: str, forms: Sequence[str]) -> bool:
    """Whether `text` contains one of `forms` as a whole word ("cat" is not in "caterpillar")."""
    return word_pattern(tuple(forms)).search(text) is not None


@lru_cache(maxsize=256)
def slot_pattern(forms: tuple[str, ...]) -> re.Pattern:
    """`slot_answer` of one of `forms` at the start of a text, then a word end (case as written, like exact)."""
    return re.compile(rf" (?:{_alternatives(forms)})(?!\w)")


def fills_slot(text: str, forms: Sequence[str]) -> bool:
    """Whether a sample continuing the answer prefix puts one of `forms` in the slot (" cat." yes, " lilac cat" no)."""
    return slot_pattern(tuple(forms)).match(text) is not None


@dataclass(frozen=True)
class SampledScorer:
    """Fraction of N samples per question (T=1) that name each panel entry (anywhere, or in the prefilled answer
    slot); keeps the texts."""

    n: int = 100
    """Samples per question."""
    temperature: float = 1.0
    max_tokens: int = 8
    """One-word answers need few tokens."""
    seed: int = 0
    """Base seed; question i samples with derive_seed("sampled", seed, i)."""
    prefill: bool = False
    """Sample after the probe set's answer prefix and count only the answer slot (`fills_slot`), the exact
    scorer's prefilled event; False: the reference's whole-word mention anywhere in the sample."""
    name: str = "sampled"

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores:
        _check_target(probes, target)
        if self.n < 1:
            raise ScoringError(f"SampledScorer.n must be >= 1, got {self.n}")
        requests = [
            GenerateRequest(prompt=answer_prompt(probes, context, q, self.prefill), adapter=adapter, n=self.n,
                            temperature=self.temperature, max_tokens=self.max_tokens,
                            seed=derive_seed("sampled", self.seed, i), context_id=context.id)
            for i, q in enumerate(probes.questions)
        ]
        results = engine.generate(requests)
        if self.prefill and _cut_after_a_form(results, probes):
            raise ScoringError(f"a sample ended at max_tokens={self.max_tokens} right after its answer word, so "
                               "whether the word ends there is unknown; raise SampledScorer.max_tokens")
        samples = tuple(tuple(c.text for c in result.completions) for result in results)
        counts = fills_slot if self.prefill else mentions
        rows = tuple(tuple(sum(counts(t, e.surface_forms) for t in texts) / len(texts) for e in probes.panel)
                     for texts in samples)
        return TraitScores(self.name, target, probes.names, tuple(probes.questions), rows, context.id, self.n, samples,
                           answer_prefix=probes.answer_prefix if self.prefill else "")


def _cut_after_a_form(results, probes) -> bool:
    """Whether a sample stopped at max_tokens right after a panel form in the slot (its word end unseen)."""
    bare = {slot_answer(form) for entry in probes.panel for form in entry.surface_forms}
    return any(c.finish_reason == "length" and c.text in bare for result in results for c in result.completions)


def get_scorer(name: str, **kwargs) -> Scorer:
    """A scorer by name: "exact" or "sampled" (kwargs go to its constructor, e.g. n=100)."""
    if name == "exact":
        return ExactScorer(**kwargs)
    if name == "sampled":
        return SampledScorer(**kwargs)
    raise ScoringError(f"unknown scorer {name!r}; use 'exact' or 'sampled'")
