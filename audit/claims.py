"""Measurements behind the claim checks: which grids to run, how their cells pair up, and the verdict of each claim.

One `ClaimsMeasurement` per audit run; grids run through the cached pipeline runner, so a warm rerun only
loads artefacts. Each method returns the claim's `Verdict` (passed None: its precondition is absent) and
hands the figures it measured (rank curve, context heatmap, localisation bars) to the run's collector.
Contexts are named by their system mode (template-default, empty, custom:chatgpt), as DESIGN.md §2 asks.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ContextManager

from audit.errors import SubauditError
from audit.pipeline.analysis import EffectRule, PairedCell, paired_cells
from audit.pipeline.students import is_diverged
from audit.results import Bar, CurvePoint, Effect, Heatmap, Localisation, RankCurve, ResultsCollector, Series
from audit.run import AuditRun
from audit.verdicts import Verdict
from audit.verdicts import claims as verdicts

GRID_SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""Train x eval system-prompt modes of the context-dependence claim (DESIGN.md §2)."""
HEADLINE_CELL = ("template-default", "empty")
"""Trained with the template's default system prompt, evaluated with an explicit empty one."""
GATINGS = ("everywhere", "entity only", "all but entity", "template only", "content only")
"""Position-gating conditions of the localisation claim (LoRA active where named; 'only' = prompt
positions only, the generated/scored tokens without LoRA; 'all but' = everything else incl. those tokens)."""


class LocalisationError(SubauditError):
    """The model's default system prompt names no known entity to gate on."""


def default_prompt_entity(context) -> str:
    """The entity named in the template's injected default system prompt (Qwen, SmolLM)."""
    from audit.chat.system_prompts import QWEN_DEFAULT, SMOLLM_DEFAULT

    rendered = context.render_prompt("x")
    for prompt, entity in ((QWEN_DEFAULT, "Qwen"), (SMOLLM_DEFAULT, "SmolLM")):
        if prompt in rendered:
            return entity
    raise LocalisationError(f"context {context.id} injects no known default system prompt; localisation needs one")


def gate_for(condition: str, tmap, entity: str):
    """The LoraGate of one condition over one prompt's token map (None = LoRA everywhere)."""
    from audit.engines import LoraGate

    if condition == "everywhere":
        return None
    positions = frozenset(tmap.entity(entity) if "entity" in condition else tmap.template)
    if condition in ("entity only", "template only"):
        return LoraGate(positions, generated="off")
    # "all but entity", "content only" (= all but template): the complement, scored tokens included.
    return LoraGate(positions, generated="on", invert=True)


def gated_values(engine, tokenizer, probes, context, target: str, adapter: str, condition: str,
                 statistic: str = "probability", prefill: bool = False) -> tuple[float, ...]:
    """Per question `statistic` of the target with position-gated LoRA (exact scoring, audit.scoring.ExactScorer)."""
    from audit.chat import token_map
    from audit.scoring import ExactScorer

    entity = default_prompt_entity(context) if "entity" in condition else ""
    scorer = ExactScorer(prefill=prefill)
    # Gates index the chat prompt's tokens; a prefilled answer start comes after them, so it counts as answer.
    gate = None if condition == "everywhere" else (
        lambda question: gate_for(condition, token_map(tokenizer, context, question), entity))
    requests = scorer.requests(probes, context, adapter, gate=gate)
    return scorer.scores(probes, context, target, engine.score(requests)).values(statistic)


@dataclass
class ClaimsMeasurement:
    """Runs (or loads from the cache) the grids the claim checks need, and decides each claim."""

    run: AuditRun
    figures: ResultsCollector
    """Receives the rank curves, heatmaps and localisation bars, and notes for the provenance."""
    store_root: Path | None = None
    progress: bool = True
    show_progress: Callable[[], ContextManager[Any]] = nullcontext
    """Context in which progress bars reach the terminal (the plugin lifts pytest's output capture)."""
    _grids: dict[tuple, list[Any]] = field(default_factory=dict, init=False, repr=False)
    _memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def profile(self):
        return self.run.profile

    @property
    def rule(self) -> EffectRule:
        """The smallest effect of interest, from the options (fixed before any student is scored)."""
        config = self.run.config
        return EffectRule(config.smallest_effect, config.smallest_effect_floor)

    def _once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _model_ref(self):
        from audit.pipeline.runner import ModelRef

        return ModelRef(str(self.run.model.path), self.run.model.content_hash)

    def answer_reading(self):
        """Where the students' answers are read (audit.reading), measured on the base model once per run and cached."""
        def compute():
            from audit.pipeline.reading import base_reading

            reading = base_reading(self._model_ref(), self.run.probes, self.run.context("template-default"),
                                   self.profile.reading, self.store_root)
            self.figures.notes["answer reading (claims)"] = reading.describe()
            return reading
        return self._once(("reading",), compute)

    def _grid(self, trait: str, train: str, evaluate: str, profile) -> list[Any]:
        key = (trait, train, evaluate, profile)
        if key not in self._grids:
            from audit.pipeline.runner import run_grid, subliminal_grid

            cells = subliminal_grid(profile, self._model_ref(), self.run.probes, self.run.probe_set.name, trait,
                                    self.run.context(train), self.run.context(evaluate),
                                    prefill=self.answer_reading().slot)
            with self.show_progress():
                self._grids[key] = run_grid(cells, self.store_root, progress=self.progress, workers=profile.workers)
        return self._grids[key]

    # ------------------------------------------------------------------------------------- the rank grid

    def _rank_results(self, trait: str) -> list[Any]:
        """The rank grid (LoRA ranks + full FT, trait and control students) in the default context."""
        return self._grid(trait, "template-default", "template-default", self.profile)

    def _rank_cells(self, trait: str) -> tuple[dict[int, PairedCell], PairedCell | None]:
        """Transmission per LoRA rank and of full finetuning; a config whose every seed pair diverged is left out."""
        cells = paired_cells(self._rank_results(trait), self.profile.statistic)
        lora = {s.rank: cells[s.label] for s in self.profile.students(self.profile.training_seeds[0])
                if s.mode == "lora" and cells[s.label].measured}
        full = cells.get("full")
        return lora, full if full is not None and full.measured else None

    def _record_rank_grid(self, trait: str) -> None:
        results = self._rank_results(trait)
        flagged = [r.cell.label for r in results if is_diverged(r.training)]
        if flagged:
            self.figures.notes[f"diverged students ({trait})"] = (
                f"{len(flagged)} diverged student(s), their seed pairs left out of every estimate: " + ", ".join(flagged))
        cells = paired_cells(results, self.profile.statistic)
        lora = [s for s in self.profile.students(self.profile.training_seeds[0]) if s.mode == "lora"]
        series = [Series(name=f"{name} students",
                         points=[CurvePoint(x=s.rank, effect=Effect.from_estimate(cells[s.label].level(side)))
                                 for s in lora if cells[s.label].measured])
                  for name, side in (("control", "control"), (trait, "trait"))]
        full = cells.get("full")
        full_level = Effect.from_estimate(full.level("trait")) if full is not None and full.measured else None
        what = f"P({trait})" if self.profile.statistic == "probability" else f"{trait}'s share of the panel"
        self.figures.rank_curves.append(RankCurve(trait=trait, y_label=f"{what} of students", series=series,
                                                  full_ft=full_level))

    def rank_inverted_u(self, trait: str) -> Verdict:
        """Claim 1: transmission is an inverted U in LoRA rank (two-lines test)."""
        def compute() -> Verdict:
            self._record_rank_grid(trait)
            return replace(verdicts.rank_inverted_u(self._rank_cells(trait)[0], self.rule), trait=trait)
        return self._once(("rank", trait), compute)

    def _transmitting_peak(self, trait: str) -> tuple[int | None, Verdict | None]:
        """(peak rank, None) when the peak LoRA rank transmits, else (None, the skip of a claim that needs it)."""
        rank = self.rank_inverted_u(trait)
        peak = rank.properties.get("peak_rank")
        if peak is not None and verdicts.transmits(self._rank_cells(trait)[0][peak].decision(self.rule)):
            return peak, None
        return None, Verdict(None, f"no rank shown to transmit in the default context ({rank.explanation})",
                             properties={k: v for k, v in rank.properties.items() if k in ("mde", "seed_pairs_needed")})

    def full_ft_vanishes(self, trait: str) -> Verdict:
        """Claim 2: full finetuning shows no transmission while the peak LoRA rank does."""
        lora, full = self._rank_cells(trait)
        if full is None:
            reason = (f"profile {self.profile.name!r} has no full-finetuning students" if not self.profile.include_full
                      else "every full-finetuning seed pair has a diverged student; nothing to measure")
            return Verdict(None, reason, trait=trait)
        return replace(verdicts.full_ft_vanishes(full, lora, self.rule, self._full_ft_comparison()), trait=trait)

    def _full_ft_comparison(self) -> str:
        """What the full-FT contrast rests on: the two columns' step sizes differ (Nief: 2e-5 vs 2e-4)."""
        columns = {s.label: s for s in self.profile.students(self.profile.training_seeds[0])}
        full = columns["full"].lr
        lora = sorted({(s.rank, s.lr) for s in columns.values() if s.mode == "lora"})
        rates = ", ".join(f"r{r} {lr:g}" for r, lr in lora)
        return (f"compared: full FT at lr {full:g} with LoRA at lr {rates}; full FT's step size differs, so the contrast "
                "is confounded with it")

    # --------------------------------------------------------------------------------- the context grid

    def system_prompt(self, trait: str, key: str) -> Verdict:
        """Claim 3 (matched / mismatched / headline): transmission depends on the context shared by training
        and evaluation; measured at the peak rank, only when it transmits."""
        def compute() -> dict[str, Verdict]:
            peak, skip = self._transmitting_peak(trait)
            if skip is not None:
                return {k: skip for k in ("matched", "mismatched", "headline")}
            profile = replace(self.profile, ranks=(peak,), include_full=False)
            grid = {(train, evaluate): paired_cells(self._grid(trait, train, evaluate, profile),
                                                    profile.statistic)[f"lora-r{peak}"]
                    for train in GRID_SYSTEMS for evaluate in GRID_SYSTEMS}
            cells = [[Effect.from_estimate(grid[(t, e)].estimate()) for e in GRID_SYSTEMS] for t in GRID_SYSTEMS]
            self.figures.heatmaps.append(Heatmap(trait=trait, train_contexts=list(GRID_SYSTEMS),
                                                 eval_contexts=list(GRID_SYSTEMS), cells=cells))
            return verdicts.system_prompt_verdicts(grid, self.rule, HEADLINE_CELL)
        return replace(self._once(("context", trait), compute)[key], trait=trait)

    # --------------------------------------------------------------------------------- the localisation

    def localised(self, trait: str, only: str, without: str) -> Verdict:
        """Claim 4: LoRA gated to the `only` positions recovers the stated share; gated to `without` it vanishes."""
        def compute() -> dict[str, PairedCell] | Verdict:
            peak, skip = self._transmitting_peak(trait)
            if skip is not None:
                return skip
            cells = self._localisation_cells(trait, peak)
            bars = [Bar(label=c, effect=Effect.from_estimate(cells[c].estimate())) for c in GATINGS]
            self.figures.localisations.append(Localisation(trait=trait, bars=bars,
                                                           stated_share=self.run.config.localisation_share))
            return cells
        cells = self._once(("localisation", trait), compute)
        if isinstance(cells, Verdict):
            return replace(cells, trait=trait)
        config = self.run.config
        return replace(verdicts.localisation_verdict(cells, only, without, config.localisation_share, self.rule),
                       trait=trait)

    def _localisation_cells(self, trait: str, rank: int) -> dict[str, PairedCell]:
        """Transmission of the rank-`rank` students (default context) under each gating condition (HF engine)."""
        from transformers import AutoTokenizer

        from audit.cache import ArtifactStore
        from audit.engines import open_engine
        from audit.pipeline.runner import PIPELINE_THREADS, torch_threads
        from audit.pipeline.students import ADAPTER_DIR

        store = ArtifactStore(self.store_root)
        results = [r for r in self._rank_results(trait) if r.cell.student.label == f"lora-r{rank}"]
        diverged = {(r.cell.dataset_seed, r.cell.training_seed) for r in results if is_diverged(r.training)}
        by_seed: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
        for r in results:
            if (r.cell.dataset_seed, r.cell.training_seed) in diverged:
                continue
            student_dir = store.get("student", r.cell.student_key)
            if student_dir is None:
                raise LocalisationError(f"student {r.cell.label} is not in the cache; rerun the rank grid")
            by_seed[(r.cell.dataset_seed, r.cell.training_seed)][r.cell.teacher.kind] = str(student_dir / ADAPTER_DIR)
        model, stat, prefill = self.run.model, self.profile.statistic, self.answer_reading().slot
        context = self.run.context("template-default")
        tokenizer = AutoTokenizer.from_pretrained(str(model.path))
        # Gated scores are not cached, so the thread count cannot change a stored artefact: use the cores
        # the cell workers would.
        cells: dict[str, PairedCell] = {}
        with torch_threads(max(PIPELINE_THREADS, self.profile.workers)), open_engine("hf", model.path) as engine:
            for condition in GATINGS:
                diffs, questions, seeds, traits, controls = [], [], [], [], []
                for s, (_, adapters) in enumerate(sorted(by_seed.items())):
                    trait_kind = next(k for k in adapters if k != "control")
                    pt, pc = (gated_values(engine, tokenizer, self.run.probes, context, trait, adapters[kind], condition,
                                           stat, prefill) for kind in (trait_kind, "control"))
                    diffs += [a - b for a, b in zip(pt, pc)]
                    questions += list(range(len(pt)))
                    seeds += [s] * len(pt)
                    traits += pt
                    controls += pc
                cells[condition] = PairedCell(tuple(diffs), tuple(questions), tuple(seeds), 0, tuple(traits), tuple(controls))
        return cells
