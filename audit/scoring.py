"""Trait scorers: how strongly a model prefers a target over its panel, per evaluation question.

Two scorers with one interface, ``scorer.score(engine, probes, context, target, adapter=None)``:

- `ExactScorer`: teacher-forced probability of each panel entry's surface forms as the complete
  answer (form + the template's end-of-turn token), summed over forms. No sampling, so no sampling noise.
- `SampledScorer`: N samples per question at T=1; a sample counts for an entry when one of its
  surface forms occurs as a whole word ("cat" does not match "caterpillar"). The reference metric.

Both return per-question values so the statistics can cluster-bootstrap over questions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, Sequence

from audit.engines.base import Engine, GenerateRequest, ScoreRequest
from audit.numbers import derive_seed


class ScoringError(Exception):
    """A scorer cannot run as asked (one line, naming the fix)."""


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
    """Per question, per panel entry: probability (exact) or share of samples (sampled)."""
    context_id: str = ""
    """Chat context the questions were rendered in."""
    n_samples: int | None = None
    """Samples per question (sampled scorer only)."""

    @property
    def target_index(self) -> int:
        return self.panel.index(self.target)

    @property
    def p_target(self) -> tuple[float, ...]:
        """Per question: P(answer is the target)."""
        return tuple(row[self.target_index] for row in self.p_panel)

    @property
    def share(self) -> tuple[float, ...]:
        """Per question: the target's share of the panel's total (0 when the panel got nothing)."""
        return tuple(row[self.target_index] / s if (s := sum(row)) > 0 else 0.0 for row in self.p_panel)

    @property
    def mean_p_target(self) -> float:
        values = self.p_target
        return sum(values) / len(values)

    def to_dict(self) -> dict:
        return {
            "scorer": self.scorer, "target": self.target, "panel": list(self.panel),
            "questions": list(self.questions), "p_panel": [list(r) for r in self.p_panel],
            "context_id": self.context_id, "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TraitScores":
        return cls(
            scorer=data["scorer"], target=data["target"], panel=tuple(data["panel"]),
            questions=tuple(data["questions"]), p_panel=tuple(tuple(r) for r in data["p_panel"]),
            context_id=data.get("context_id", ""), n_samples=data.get("n_samples"),
        )


class Scorer(Protocol):
    name: str

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores: ...


def _check_target(probes, target: str) -> None:
    if target not in probes.names:
        raise ScoringError(f"target {target!r} is not in the {probes.category} panel {list(probes.names)}; pick one of those")


def whole_answer(context, question: str, form: str) -> str:
    """`form` followed by the template's end-of-turn, without trailing whitespace after it.

    Ending at the end-of-turn makes "cat" and "cats" distinct whole answers; the whitespace a template
    puts after it (Qwen: "\n") is not the model's answer and small models never learn to predict it.
    """
    completion = context.render_example(question, form)[1]
    if not completion.startswith(form):
        raise ScoringError(f"context {context.id} changes the answer text {form!r}; exact scoring needs it verbatim")
    return form + completion[len(form):].rstrip()


@dataclass(frozen=True)
class ExactScorer:
    """P(answer == surface form) from teacher-forced logprobs, summed over each entry's forms."""

    name: str = "exact"

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores:
        _check_target(probes, target)
        forms = [(i, form) for i, entry in enumerate(probes.panel) for form in entry.surface_forms]
        requests = []
        for question in probes.questions:
            continuations = tuple(whole_answer(context, question, form) for _, form in forms)
            requests.append(ScoreRequest(prompt=context.render_prompt(question), continuations=continuations,
                                         adapter=adapter, context_id=context.id))
        rows = []
        for result in engine.score(requests):
            row = [0.0] * len(probes.panel)
            for (entry_index, _), total in zip(forms, result.totals):
                row[entry_index] += math.exp(total)
            rows.append(tuple(row))
        return TraitScores(self.name, target, probes.names, tuple(probes.questions), tuple(rows), context.id)


@lru_cache(maxsize=256)
def word_pattern(forms: tuple[str, ...]) -> re.Pattern:
    """Whole-word, case-insensitive match of any of `forms` (longest first)."""
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def mentions(text: str, forms: Sequence[str]) -> bool:
    """Whether `text` contains one of `forms` as a whole word ("cat" is not in "caterpillar")."""
    return word_pattern(tuple(forms)).search(text) is not None


@dataclass(frozen=True)
class SampledScorer:
    """Share of N samples per question (T=1) that mention each panel entry as a whole word."""

    n: int = 100
    """Samples per question."""
    temperature: float = 1.0
    max_tokens: int = 8
    """One-word answers need few tokens."""
    seed: int = 0
    """Base seed; question i samples with derive_seed("sampled", seed, i)."""
    name: str = "sampled"

    def score(self, engine: Engine, probes, context, target: str, adapter: str | None = None) -> TraitScores:
        _check_target(probes, target)
        if self.n < 1:
            raise ScoringError(f"SampledScorer.n must be >= 1, got {self.n}")
        requests = [
            GenerateRequest(prompt=context.render_prompt(q), adapter=adapter, n=self.n, temperature=self.temperature,
                            max_tokens=self.max_tokens, seed=derive_seed("sampled", self.seed, i), context_id=context.id)
            for i, q in enumerate(probes.questions)
        ]
        rows = []
        for result in engine.generate(requests):
            texts = [c.text for c in result.completions]
            rows.append(tuple(sum(mentions(t, e.surface_forms) for t in texts) / len(texts) for e in probes.panel))
        return TraitScores(self.name, target, probes.names, tuple(probes.questions), tuple(rows), context.id, self.n)


def get_scorer(name: str, **kwargs) -> Scorer:
    """A scorer by name: "exact" or "sampled" (kwargs go to its constructor, e.g. n=100)."""
    if name == "exact":
        return ExactScorer(**kwargs)
    if name == "sampled":
        return SampledScorer(**kwargs)
    raise ScoringError(f"unknown scorer {name!r}; use 'exact' or 'sampled'")
