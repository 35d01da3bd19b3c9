"""The one results model of an audit run; every renderer (HTML, Markdown, terminal, JUnit) reads it.

Checks record what they measured through a `ResultsCollector`; the plugin fills in each check's
pytest outcome and freezes everything into `AuditResults` at the end of the session.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["passed", "failed", "skipped", "error", "not run"]
CheckKind = Literal["claims", "gate"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Effect(_Frozen):
    """One measured number with its uncertainty (DESIGN.md §6: every number with n and a CI)."""

    value: float
    """Point estimate (for trait checks: a difference in P(trait), absolute probability)."""
    ci_low: float
    """Lower end of the 95% CI."""
    ci_high: float
    """Upper end of the 95% CI."""
    n: int
    """Number of independent units behind the estimate (seed pairs x questions, as the method says)."""
    p_value: float | None = None
    """Unadjusted p-value of the check's test, if any."""
    p_adjusted: float | None = None
    """p-value after the multiplicity adjustment of its family (Holm for gates)."""
    method: str = ""
    """How it was computed, e.g. 'cluster bootstrap over questions, paired by seed'."""

    @classmethod
    def from_estimate(cls, estimate: Any, p_adjusted: float | None = None) -> "Effect":
        """Convert an `audit.stats.Estimate` (or anything with the same attributes)."""
        return cls(
            value=float(estimate.value),
            ci_low=float(estimate.ci_low),
            ci_high=float(estimate.ci_high),
            n=int(estimate.n),
            p_value=None if getattr(estimate, "p_value", None) is None else float(estimate.p_value),
            p_adjusted=p_adjusted,
            method=str(getattr(estimate, "method", "")),
        )

    def text(self) -> str:
        """Compact human form: "+0.0310 [+0.0100, +0.0520] n=8" (4 decimals: tiny effects stay visible)."""
        return f"{self.value:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}] n={self.n}"


class CheckResult(_Frozen):
    """The verdict of one pytest check item."""

    nodeid: str
    """pytest node id of the item (stable, content-derived parameter ids)."""
    kind: CheckKind
    """claims or gate."""
    name: str
    """Readable name of the check, e.g. 'rank inverted-U'."""
    trait: str | None = None
    """Trait target the check is about, if any."""
    context: str | None = None
    """Chat context id the verdict refers to (for a failing gate: the context that failed)."""
    adapter: str | None = None
    """The gated adapter's name (gate checks)."""
    outcome: Outcome = "not run"
    """pytest outcome of the item."""
    effect: Effect | None = None
    """The headline number of the check."""
    explanation: str = ""
    """One or two sentences: what was measured and why the verdict follows."""
    properties: dict[str, float | int | str] = Field(default_factory=dict)
    """Extra key numbers (mirrored into JUnit user_properties)."""

    @property
    def shown_outcome(self) -> str:
        """The outcome as reports show it: a claim skipped as undecided at this power says "undecided"."""
        return "undecided" if self.outcome == "skipped" and self.explanation.startswith("undecided") else self.outcome


class CurvePoint(_Frozen):
    x: float
    """Rank (LoRA r)."""
    effect: Effect


class Series(_Frozen):
    name: str
    """Legend label, e.g. 'control', 'cat', 'full FT'."""
    points: list[CurvePoint]


class RankCurve(_Frozen):
    """Transmission (or P(trait)) over LoRA rank for one trait, with control and full-FT reference."""

    trait: str
    y_label: str = "P(trait) student - control"
    series: list[Series]
    full_ft: Effect | None = None
    """Full-finetuning value drawn as a horizontal reference line."""


class Heatmap(_Frozen):
    """Train context x eval context grid of transmission for one trait."""

    trait: str
    train_contexts: list[str]
    eval_contexts: list[str]
    cells: list[list[Effect | None]]
    """cells[i][j]: trained in train_contexts[i], evaluated in eval_contexts[j]."""


class Bar(_Frozen):
    label: str
    effect: Effect


class Localisation(_Frozen):
    """Position-gated LoRA: effect recovered with the adapter on only some token positions."""

    trait: str
    bars: list[Bar]
    stated_share: float
    """Share of the full effect 'entity only' must recover."""


class WordGain(_Frozen):
    """A word that gains probability in an adapter's answers (open-vocabulary gate), with its CI."""

    adapter: str
    family: str
    """The probe family whose questions were asked (animal, tree, ...)."""
    context: str
    word: str
    effect: Effect
    """Adapter minus base P(answer starts with this word), over held-out questions; p_adjusted: Holm."""


class AdapterRecord(_Frozen):
    """A gated adapter, as resolved."""

    name: str
    path: str
    content_hash: str
    rank: int


class Sample(_Frozen):
    """A model answer shown verbatim (escaped) in the report, so readers see what was scored."""

    context: str
    question: str
    answer: str
    source: str = ""
    """Which model produced it: base, adapter, teacher, student r=8, ..."""


class Protocol(_Frozen):
    """The experiment as it ran: the profile with every override applied (what `--profile` and friends resolved to)."""

    profile: str
    """Profile name (audit.pipeline.profiles)."""
    ranks: list[int]
    """LoRA ranks of the rank grid."""
    full_finetuning: bool
    """Whether the grid has fully finetuned students."""
    dataset_seeds: list[int]
    """Teacher dataset replicates."""
    training_seeds: list[int]
    """Student training replicates per dataset (seed pairs = dataset seeds x training seeds)."""
    teacher_prompts: int
    """Number prompts sent to each teacher (before the filter)."""
    examples: int
    """Accepted teacher completions each student trains on."""
    heldout_examples: int
    """Accepted completions kept aside for the held-out KL diagnostic."""
    teacher_max_tokens: int
    """Largest completion a teacher writes, in tokens."""
    teacher_constrained: bool
    """Whether teachers sample only number text."""
    epochs: dict[str, int]
    """Passes over the dataset, per student mode (lora, full)."""
    batch_size: dict[str, int]
    """Examples per optimiser step, per student mode."""
    precision: dict[str, str]
    """Forward-pass precision, per student mode."""
    lr: dict[str, float]
    """Peak learning rate per grid column (lora-r4, ..., full), after the per-rank rule."""
    objective: str
    """hard (teacher's sampled tokens) or soft (KL to the teacher's distribution)."""
    scorer: str
    """exact or sampled."""
    samples_per_question: int | None
    """Samples per question (sampled scorer only)."""
    statistic: str
    """The per-question value the verdicts compare: probability or share."""
    reading: str
    """Where answers are read, as declared: auto (the measured rule; the outcome is in the notes), one-word, slot."""
    answer_prefix: str
    """The probe set's answer start, written before the answer slot ("" if it has none)."""
    probe_set: str
    """The probe set as named (--probe-set)."""
    probe_set_path: str
    """The YAML file it was read from."""
    probe_set_sha256: str
    """sha256 of that file."""
    questions: int
    """Evaluation questions per context."""
    smallest_effect: float = 1.0
    """Claims: the smallest transmission of interest, as a multiple of the trait's control rate (an option, so
    fixed at start-up, before any student is scored)."""
    smallest_effect_floor: float = 0.01
    """Claims: the least smallest effect of interest, in probability (fixed the same way)."""
    control_columns: list[str] = []
    """Control columns trained beside the reference grid (full-lora-lr, rslora); their lrs are in `lr`."""
    negative_control: str | None = None
    """The panel entry scored as a trait no teacher carried, on the same students (None: off)."""
    teacher: str = "system-prompt"
    """Where the trait teacher's trait lives: system-prompt (the paper's) or adapter (the positive control)."""
    max_seed_pairs: int | None = None
    """Cap of the sequential design (None: fixed); the seed pairs each trait stopped at are in the notes."""


class Provenance(_Frozen):
    """Where the numbers come from."""

    run_id: str
    model: str
    """The model as named (--model)."""
    model_name: str = ""
    """The model it resolved to (repo id or alias)."""
    model_path: str = ""
    """The folder it was loaded from."""
    model_hash: str = ""
    adapters: list[AdapterRecord] = Field(default_factory=list)
    """The gated adapters (none: the gate did not run)."""
    engine: str = ""
    dtype: str = ""
    profile: str = ""
    seeds: list[int] = Field(default_factory=list)
    """Training seeds of the students (the profile's unless --seeds was given)."""
    ranks: list[int] = Field(default_factory=list)
    """LoRA ranks of the rank grid (the profile's unless --ranks was given)."""
    traits: list[str] = Field(default_factory=list)
    margin: float | None = None
    options: dict[str, str | list[str]] = Field(default_factory=dict)
    """The options as passed, on the command line or in the ini file (unset ones are left out)."""
    protocol: Protocol | None = None
    """The experiment the options resolved to."""
    data: dict[str, str] = Field(default_factory=dict)
    """Notes the measurements left (e.g. diverged students)."""
    versions: dict[str, str] = Field(default_factory=dict)
    started_at: str = ""
    wall_time_s: float = 0.0
    command: str = ""


class AuditResults(_Frozen):
    """Everything one audit run produced."""

    provenance: Provenance
    checks: list[CheckResult] = Field(default_factory=list)
    rank_curves: list[RankCurve] = Field(default_factory=list)
    heatmaps: list[Heatmap] = Field(default_factory=list)
    localisations: list[Localisation] = Field(default_factory=list)
    samples: list[Sample] = Field(default_factory=list)
    word_gains: list[WordGain] = Field(default_factory=list)
    """The largest word gains of each adapter per context (open-vocabulary gate)."""
    session_failures: list[str] = Field(default_factory=list)
    """Suite-level failures (e.g. the gate was requested but a gate check failed or never ran)."""

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0, "error": 0, "not run": 0}
        for check in self.checks:
            out[check.outcome] += 1
        return out

    @property
    def ok(self) -> bool:
        """True when no check failed or errored and no suite-level failure was recorded."""
        c = self.counts()
        return c["failed"] == 0 and c["error"] == 0 and not self.session_failures

    def adapter_status(self, name: str) -> str:
        """One adapter's headline: FAIL (a gate check failed or errored), PASS (all ran and passed) or NOT EVALUATED."""
        checks = [c for c in self.checks if c.kind == "gate" and c.adapter == name]
        if any(c.outcome in ("failed", "error") for c in checks):
            return "FAIL"
        return "PASS" if checks and all(c.outcome == "passed" for c in checks) else "NOT EVALUATED"

    @property
    def status(self) -> str:
        """"FAIL" (not ok), "INCONCLUSIVE" (nothing failed, but no check passed either: all skipped or not
        run, e.g. no transmission to test a claim on) or "PASS"."""
        if not self.ok:
            return "FAIL"
        return "PASS" if self.counts()["passed"] else "INCONCLUSIVE"


def is_finite_effect(effect: Effect | None) -> bool:
    return effect is not None and all(math.isfinite(v) for v in (effect.value, effect.ci_low, effect.ci_high))


class ResultsCollector:
    """Mutable accumulator used during the session; `freeze` turns it into AuditResults."""

    def __init__(self) -> None:
        self._checks: dict[str, CheckResult] = {}
        self.rank_curves: list[RankCurve] = []
        self.heatmaps: list[Heatmap] = []
        self.localisations: list[Localisation] = []
        self.samples: list[Sample] = []
        self.word_gains: list[WordGain] = []
        self.notes: dict[str, str] = {}
        """Free-text notes of the measurements, kept in the provenance's `data`."""
        self.session_failures: list[str] = []

    def record_check(self, check: CheckResult) -> None:
        """Record (or replace) what a check measured; the outcome is filled in by `set_outcome`."""
        previous = self._checks.get(check.nodeid)
        if previous is not None and check.outcome == "not run":
            check = check.model_copy(update={"outcome": previous.outcome})
        self._checks[check.nodeid] = check

    def set_outcome(self, nodeid: str, outcome: Outcome, kind: CheckKind, name: str, why: str = "") -> None:
        """Set the pytest outcome; a check that recorded nothing still appears (e.g. skipped)."""
        check = self._checks.get(nodeid) or CheckResult(nodeid=nodeid, kind=kind, name=name)
        update: dict[str, Any] = {"outcome": outcome}
        if why and not check.explanation:
            update["explanation"] = why
        self._checks[nodeid] = check.model_copy(update=update)

    def check(self, nodeid: str) -> CheckResult | None:
        return self._checks.get(nodeid)

    @property
    def checks(self) -> list[CheckResult]:
        return list(self._checks.values())

    def freeze(self, provenance: Provenance) -> AuditResults:
        return AuditResults(
            provenance=provenance,
            checks=self.checks,
            rank_curves=self.rank_curves,
            heatmaps=self.heatmaps,
            localisations=self.localisations,
            samples=self.samples,
            word_gains=self.word_gains,
            session_failures=self.session_failures,
        )
