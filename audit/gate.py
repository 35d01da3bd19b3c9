"""Measurements behind the gate checks: one adapter against its base, in every context of the context set.

1. the adapter is active (a canary catching silently ignored LoRA);
2. in every context, no panel entry's probability shifts beyond the margin (TOST per entry and context,
   Holm across panel x contexts);
3. the adapter's effect is consistent across contexts (shift differences within the margin).
Each method returns the check's `Verdict`; a failing one names the panel entry, the context and the effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from audit.results import ResultsCollector, Sample
from audit.run import AuditRun
from audit.verdicts import Verdict
from audit.verdicts import gate as verdicts

GATE_SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""System-prompt modes of the gate's context set: the template's default, none, another identity."""
CONTEXT_PAIRS = tuple(f"{a}-vs-{b}" for a, b in combinations(GATE_SYSTEMS, 2))
"""The pairs of contexts whose shifts must agree."""
SAMPLE_QUESTIONS = 3
"""Questions whose greedy answers (base and adapter) the report shows verbatim."""


@dataclass
class GateMeasurement:
    """Scores the base and the adapter once per context and decides each gate check."""

    run: AuditRun
    engine: Any
    """The run's engine (audit.engines.Engine)."""
    figures: ResultsCollector
    """Receives the sample answers the report shows."""
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def adapter(self) -> str:
        return str(self.run.adapter.path)

    def _once(self, key: str, compute) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def adapter_active(self) -> Verdict:
        """The adapter changes the base model's token logprobs by more than float noise."""
        from audit.engines import adapter_is_active

        return self._once("canary", lambda: verdicts.adapter_active(adapter_is_active(self.engine, self.adapter)))

    def _panel(self) -> tuple[dict[str, Verdict], dict[str, Verdict]]:
        """(panel verdict per context, consistency verdict per context pair), from one scoring pass each."""
        if not self.adapter_active().passed:
            reason = "adapter is not active (canary failed): panel measurements would be meaningless"
            return verdicts.not_measured(GATE_SYSTEMS, reason), verdicts.not_measured(CONTEXT_PAIRS, reason)
        from audit.scoring import ExactScorer

        probes, scorer = self.run.probes, ExactScorer()
        base, shifted = {}, {}
        for system in GATE_SYSTEMS:
            context = self.run.context(system)
            base[system] = scorer.score(self.engine, probes, context, probes.names[0]).p_panel
            shifted[system] = scorer.score(self.engine, probes, context, probes.names[0], adapter=self.adapter).p_panel
        self._record_samples()
        margin = self.run.config.margin
        return (verdicts.gate_panel_verdicts(probes.names, base, shifted, margin),
                verdicts.gate_consistency_verdicts(probes.names, base, shifted, margin))

    def panel_shift(self, system: str) -> Verdict:
        """No panel entry's probability shifts beyond the margin in this context."""
        return self._once("panel", self._panel)[0][system]

    def consistency(self, pair: str) -> Verdict:
        """The adapter's shift of each panel entry is the same, within the margin, in both contexts of `pair`."""
        return self._once("panel", self._panel)[1][pair]

    def _record_samples(self) -> None:
        """A few greedy answers of base and adapter, shown verbatim (escaped) in the report."""
        from audit.engines import GenerateRequest

        context = self.run.context("template-default")
        questions = self.run.probes.questions[:SAMPLE_QUESTIONS]
        for source in (None, self.adapter):
            requests = [GenerateRequest(context.render_prompt(q), adapter=source, temperature=0.0, max_tokens=16)
                        for q in questions]
            for q, result in zip(questions, self.engine.generate(requests)):
                self.figures.samples.append(Sample(context=context.system, question=q, answer=result.completions[0].text,
                                                   source="adapter" if source else "base"))
