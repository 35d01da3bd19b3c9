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

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

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


STORE_KIND = "gate-measurement"
VALUE_FILE = "value.json"


@dataclass
class GateMeasurement:
    """Scores the base once per context and every adapter against it; decides each gate check.

    Every measurement is kept in the artefact store, keyed by what determines it (the model's, the adapter's and
    the probe set's content, what the context renders, the reading, the engine and dtype), so a rerun reads
    instead of scoring and opens no engine unless something is new. The fake engine's scripted numbers are not
    kept."""

    run: AuditRun
    open_engine: Callable[[], Any]
    """Returns the run's engine (audit.engines.Engine), opened on first use."""
    figures: ResultsCollector
    """Receives the answer reading, the sample answers and the top word gains the report shows."""
    store_root: Path | None = None
    _memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def engine(self) -> Any:
        return self.open_engine()

    def _once(self, key: tuple, compute) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _content(self, key: tuple) -> dict:
        """What determines a measurement keyed ("kind", family, adapter path, context id): contents, not names."""
        hashes = {str(a.path): a.content_hash for a in self.run.adapters}
        families = {p.name: p.sha256 for p in self.run.gate_probe_sets}
        from audit.pipeline.teachers import context_fingerprint

        parts = []
        for part in key:
            if part in families:
                parts.append({"probe_set": families[part]})
            elif part in hashes:
                parts.append({"adapter": hashes[part]})
            elif part in self.contexts:
                parts.append(context_fingerprint(self.contexts[part]))
            else:
                parts.append(part)
        return {"key": parts, "model": self.run.model.content_hash, "engine": self.run.engine, "dtype": self.run.dtype,
                "top": TOP_TOKENS, "samples": SAMPLE_QUESTIONS, "v": 1}

    def _stored(self, key: tuple, compute, encode=lambda v: v, decode=lambda v: v) -> Any:
        """`_once`, kept across runs in the artefact store (see the class docstring)."""
        if self.run.model is None or self.run.engine == "fake":
            return self._once(key, compute)
        from audit.cache import ArtifactStore, content_key

        def load():
            def build(out: Path) -> None:
                (out / VALUE_FILE).write_text(json.dumps(encode(compute())))

            folder = ArtifactStore(self.store_root).get_or_build(STORE_KIND, content_key(self._content(key)), build,
                                                                 meta={"key": [str(k) for k in key]})
            return decode(json.loads((folder / VALUE_FILE).read_text()))
        return self._once(key, load)

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
        def compute() -> dict:
            from audit.scoring import reading_of, reading_scores

            one_word, slot = reading_scores(self.engine, self.probes(family), self.contexts[REFERENCE])
            reading = reading_of(one_word, slot)
            # the base's panel in the reference context, as read: measured here already
            return {"reading": asdict(reading), "panel": (slot if reading.slot else one_word).p_panel}

        measured = self._stored(("reading", family), compute)
        reading = AnswerReading(**measured["reading"])
        self._memo.setdefault(("panel", family, None, REFERENCE, reading.slot), tuple(tuple(row) for row in measured["panel"]))
        self.figures.notes[f"answer reading ({family})"] = reading.describe()
        return reading

    def _panel(self, family: str, adapter: str | None, context_id: str):
        from audit.scoring import ExactScorer

        def compute():
            probes = self.probes(family)
            return ExactScorer(prefill=self.reading(family).slot).score(
                self.engine, probes, self.contexts[context_id], probes.names[0], adapter=adapter).p_panel
        slot = self.reading(family).slot  # the base's reference panel comes with the reading
        return self._stored(("panel", family, adapter, context_id, slot), compute,
                            decode=lambda rows: tuple(tuple(row) for row in rows))

    def _words(self, family: str, adapter: str | None, context_id: str) -> list[dict[str, float]]:
        """Per question: P(the answer's first word) over the top next tokens where the answer is read."""
        from audit.engines import NextTokenRequest

        def compute():
            context, probes = self.contexts[context_id], self.probes(family)
            start = probes.answer_prefix if self.reading(family).slot else ""
            requests = [NextTokenRequest(context.render_prompt(q) + start, adapter, TOP_TOKENS) for q in probes.questions]
            return [word_distribution(r.tokens, r.logprobs) for r in self.engine.next_tokens(requests)]
        return self._stored(("words", family, adapter, context_id, self.reading(family).slot), compute)

    # ------------------------------------------------------------------------------------ checks

    def adapter_active(self, name: str) -> Verdict:
        """The adapter changes the base model's token logprobs by more than float noise."""
        from audit.engines import adapter_is_active
        from audit.engines.canary import CanaryResult

        path = str(self.adapter(name).path)
        self._record_samples(name)
        canary = self._stored(("canary", path), lambda: asdict(adapter_is_active(self.engine, path)))
        return replace(verdicts.adapter_active(CanaryResult(**canary)), adapter=name)

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
        if verdict.passed is not False or context_id == REFERENCE:
            return verdict
        note = self._stored(("shared-tokens", family, context_id), lambda: self._shared_tokens_note(family, context_id))
        return replace(verdict, explanation=verdict.explanation.rstrip(".") + "." + note) if note else verdict

    def _shared_tokens_note(self, family: str, context_id: str) -> str:
        """Which of the default's context tokens this context shares ("" when they cannot be mapped)."""
        tokenizer = self._tokenizer()
        if tokenizer is None:
            return ""
        from audit.chat import TokenMapError, token_map

        question = self.probes(family).questions[0]
        try:
            here, default = (token_map(tokenizer, self.contexts[c], question) for c in (context_id, REFERENCE))
        except TokenMapError:  # e.g. a slow tokenizer has no offsets: the verdict stands without the note
            return ""
        ours, theirs = ([tokenizer.decode([t]) for t, kind in zip(m.token_ids, m.kinds) if kind in ("system", "template")]
                        for m in (here, default))
        shared = [t for t in dict.fromkeys(ours) if t in theirs and t.strip()]
        missing = [t for t in dict.fromkeys(theirs) if t not in ours and t.strip()]
        return (f" Its context tokens (template and system prompt) share {len(shared)} of the default's "
                f"{len(set(theirs))} distinct ones" + (f"; absent here: {' '.join(repr(t) for t in missing[:12])}"
                                                      if missing else "") + ".")

    def _tokenizer(self) -> Any:
        """The model's tokenizer, loaded alone (a warm gate opens no engine); the fake engine's own, if any."""
        if self.run.model is None:
            return getattr(self.engine, "tokenizer", None)

        def load():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(self.run.model.path))
        return self._once(("tokenizer",), load)

    def _record_samples(self, name: str) -> None:
        """A few greedy answers of the base (once) and of the adapter, shown verbatim (escaped) in the report."""
        from audit.engines import GenerateRequest

        context = self.run.context("template-default")
        questions = self.run.probes.questions[:SAMPLE_QUESTIONS]
        sources = [(name, str(self.adapter(name).path))]
        if not any(s.source == "base" for s in self.figures.samples):
            sources.insert(0, ("base", None))
        for source, path in sources:
            if any(s.source == source for s in self.figures.samples):
                continue

            def answers(path=path) -> list[str]:
                requests = [GenerateRequest(context.render_prompt(q), adapter=path, temperature=0.0, max_tokens=24)
                            for q in questions]
                return [result.completions[0].text for result in self.engine.generate(requests)]
            for q, answer in zip(questions, self._stored(("samples", path, "template-default"), answers)):
                self.figures.samples.append(Sample(context=context.system, question=q, answer=answer, source=source))
