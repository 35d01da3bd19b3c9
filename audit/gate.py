"""Measurements behind the gate checks: each adapter against its base, in every context of the context set.

1. the adapter is active (a canary catching silently ignored LoRA);
2. in every context, no panel entry's probability shifts beyond the margin (TOST per entry and context,
   Holm across panel x contexts);
3. in every context, no word at all, named on a panel or not, gains more than the margin in the answer
   (open vocabulary: the top next tokens where the answer is read);
4. the adapter's effect is the same in every context as in the template's default (shift differences
   within the margin).
Every probe family the run has (animals, trees, bands, ...) is measured. Answers are read where the base
model gives them (`audit.reading`), per family. The base is measured once for every adapter. Each method returns the check's `Verdict`; a failing one names the entry, the context and the effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from audit.chat.permutations import PermutationError
from audit.reading import AnswerReading, word_distribution
from audit.results import Effect, ResultsCollector, Sample, WordGain
from audit.run import AuditRun, ResolvedAdapter
from audit.verdicts import Verdict
from audit.verdicts import gate as verdicts

GATE_SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""System-prompt modes of the context set: the template's default, none, another identity."""
GATE_PERMUTATIONS = ("entity-claude", "entity-chatgpt", "entity-zymthar", "entity-removed", "no-default-system")
"""Template permutations of the context set, where the model's template injects a known default prompt."""
REFERENCE = "sys=template-default/perm=identity"
"""The context every other one is compared with for consistency: the template as shipped."""
SAMPLE_QUESTIONS = 3
"""Questions whose greedy answers (base and each adapter) the report shows verbatim."""
TOP_TOKENS = 50
"""Next tokens read per question for the open-vocabulary check."""


def gate_contexts(run: AuditRun) -> dict[str, Any]:
    """The context set, keyed by what is rendered ("sys=<mode>/perm=<permutation>"): the system modes on the
    template as shipped, then every permutation that applies to the model's template."""
    contexts = [run.context(system) for system in GATE_SYSTEMS]
    for permutation in GATE_PERMUTATIONS:
        try:
            contexts.append(run.context("template-default", permutation))
        except PermutationError:  # the template injects no default prompt to permute
            continue
    return {c.id.split("/", 1)[1]: c for c in contexts}


@dataclass
class GateMeasurement:
    """Scores the base once per context and every adapter against it; decides each gate check."""

    run: AuditRun
    engine: Any
    """The run's engine (audit.engines.Engine)."""
    figures: ResultsCollector
    """Receives the answer reading, the sample answers and the top word gains the report shows."""
    _memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)

    def _once(self, key: tuple, compute) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def contexts(self) -> dict[str, Any]:
        return self._once(("contexts",), lambda: gate_contexts(self.run))

    def adapter(self, name: str) -> ResolvedAdapter:
        return next(a for a in self.run.adapters if a.name == name)

    def probes(self, family: str):
        return next(p.probes for p in self.run.gate_probe_sets if p.name == family)

    # ------------------------------------------------------------------------------------ reading

    def reading(self, family: str) -> AnswerReading:
        """One-word or answer-slot reading of one family, measured on the base in the reference context (the template
        as shipped, its default system prompt)."""
        def compute() -> AnswerReading:
            from audit.scoring import reading_of, reading_scores

            one_word, slot = reading_scores(self.engine, self.probes(family), self.contexts[REFERENCE])
            reading = reading_of(one_word, slot)
            # the base's panel in the reference context, as read: measured here already
            self._memo[("panel", family, None, REFERENCE)] = (slot if reading.slot else one_word).p_panel
            self.figures.notes[f"answer reading ({family})"] = reading.describe()
            return reading
        return self._once(("reading", family), compute)

    def _panel(self, family: str, adapter: str | None, context_id: str):
        from audit.scoring import ExactScorer

        def compute():
            probes = self.probes(family)
            return ExactScorer(prefill=self.reading(family).slot).score(
                self.engine, probes, self.contexts[context_id], probes.names[0], adapter=adapter).p_panel
        return self._once(("panel", family, adapter, context_id), compute)

    def _words(self, family: str, adapter: str | None, context_id: str) -> list[dict[str, float]]:
        """Per question: P(the answer's first word) over the top next tokens where the answer is read."""
        from audit.engines import NextTokenRequest

        def compute():
            context, probes = self.contexts[context_id], self.probes(family)
            start = probes.answer_prefix if self.reading(family).slot else ""
            requests = [NextTokenRequest(context.render_prompt(q) + start, adapter, TOP_TOKENS) for q in probes.questions]
            return [word_distribution(r.tokens, r.logprobs) for r in self.engine.next_tokens(requests)]
        return self._once(("words", family, adapter, context_id), compute)

    # ------------------------------------------------------------------------------------ checks

    def adapter_active(self, name: str) -> Verdict:
        """The adapter changes the base model's token logprobs by more than float noise."""
        from audit.engines import adapter_is_active

        def compute() -> Verdict:
            self._record_samples(name)
            return verdicts.adapter_active(adapter_is_active(self.engine, str(self.adapter(name).path)))
        return replace(self._once(("canary", name), compute), adapter=name)

    def _inactive(self, name: str, context: str) -> Verdict | None:
        if self.adapter_active(name).passed:
            return None
        return Verdict(False, "adapter is not active (canary failed): its measurements would be meaningless",
                       context=context, adapter=name)

    def _panel_verdicts(self, name: str, family: str) -> tuple[dict[str, Verdict], dict[str, Verdict]]:
        path, ids = str(self.adapter(name).path), list(self.contexts)
        base = {c: self._panel(family, None, c) for c in ids}
        shifted = {c: self._panel(family, path, c) for c in ids}
        names, margin = self.probes(family).names, self.run.config.margin
        return (verdicts.gate_panel_verdicts(names, base, shifted, margin),
                verdicts.gate_consistency_verdicts(names, base, shifted, margin, reference=REFERENCE))

    def panel_shift(self, name: str, family: str, context_id: str) -> Verdict:
        """No panel entry of the family shifts beyond the margin in this context."""
        verdict = self._inactive(name, context_id) or self._once(
            ("panels", name, family), lambda: self._panel_verdicts(name, family))[0][context_id]
        return replace(self._with_shared_tokens(verdict, family, context_id), adapter=name)

    def consistency(self, name: str, family: str, context_id: str) -> Verdict:
        """The adapter's shift of each panel entry is the same, within the margin, here as in the reference."""
        key = f"{context_id}-vs-{REFERENCE}"
        verdict = self._inactive(name, key) or self._once(
            ("panels", name, family), lambda: self._panel_verdicts(name, family))[1][key]
        return replace(verdict, adapter=name)

    def open_vocabulary(self, name: str, family: str, context_id: str) -> Verdict:
        """No word, named on a panel or not, gains more than the margin in the answers of this family and context."""
        inactive = self._inactive(name, context_id)
        if inactive is not None:
            return inactive
        verdict, shifts = verdicts.open_vocabulary_verdict(
            self._words(family, None, context_id), self._words(family, str(self.adapter(name).path), context_id),
            self.run.config.margin, context_id)
        self.figures.word_gains.extend(
            WordGain(adapter=name, family=family, context=context_id, word=s.word,
                     effect=Effect.from_estimate(s.estimate, s.p_adjusted)) for s in shifts[:5])
        return replace(self._with_shared_tokens(verdict, family, context_id), adapter=name)

    # ------------------------------------------------------------------------------------ evidence

    def _with_shared_tokens(self, verdict: Verdict, family: str, context_id: str) -> Verdict:
        """A failing context other than the reference: which of the default's context tokens it shares."""
        tokenizer = getattr(self.engine, "tokenizer", None)
        if verdict.passed is not False or context_id == REFERENCE or tokenizer is None:
            return verdict
        from audit.chat import TokenMapError, token_map

        question = self.probes(family).questions[0]
        try:
            here, default = (token_map(tokenizer, self.contexts[c], question) for c in (context_id, REFERENCE))
        except TokenMapError:  # e.g. a slow tokenizer has no offsets: the verdict stands without the note
            return verdict
        ours, theirs = ([tokenizer.decode([t]) for t, kind in zip(m.token_ids, m.kinds) if kind in ("system", "template")]
                        for m in (here, default))
        shared = [t for t in dict.fromkeys(ours) if t in theirs and t.strip()]
        missing = [t for t in dict.fromkeys(theirs) if t not in ours and t.strip()]
        note = (f" Its context tokens (template and system prompt) share {len(shared)} of the default's "
                f"{len(set(theirs))} distinct ones" + (f"; absent here: {' '.join(repr(t) for t in missing[:12])}"
                                                      if missing else "") + ".")
        return replace(verdict, explanation=verdict.explanation.rstrip(".") + "." + note)

    def _record_samples(self, name: str) -> None:
        """A few greedy answers of the base (once) and of the adapter, shown verbatim (escaped) in the report."""
        from audit.engines import GenerateRequest

        context = self.run.context("template-default")
        questions = self.run.probes.questions[:SAMPLE_QUESTIONS]
        sources = [(name, str(self.adapter(name).path))]
        if not any(s.source == "base" for s in self.figures.samples):
            sources.insert(0, ("base", None))
        for source, path in sources:
            requests = [GenerateRequest(context.render_prompt(q), adapter=path, temperature=0.0, max_tokens=24)
                        for q in questions]
            for q, result in zip(questions, self.engine.generate(requests)):
                self.figures.samples.append(Sample(context=context.system, question=q, answer=result.completions[0].text,
                                                   source=source))
