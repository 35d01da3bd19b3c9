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


COMPARISONS = {"reference": (False, ""), "rank-stabilised": (True, ""), "lr-matched": (False, "lora-lr")}
"""Columns each comparison of the rank and full-FT claims reads: (LoRA columns use rsLoRA, full FT column name)."""
COLUMN_NAMES = {"reference": "reference columns: LoRA alpha = r, full FT at its own lr",
                "rank-stabilised": "rsLoRA, alpha = sqrt(reference rank) at every rank",
                "lr-matched": "full FT at the LoRA learning rate"}


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

    def rule(self, trait: str) -> EffectRule:
        """The smallest effect of interest, from the options (fixed before any student is scored), at the level of
        the look the trait's rank grid stopped at (`_design`)."""
        return self._design(trait)[1]

    def _design(self, trait: str) -> tuple[Any, EffectRule]:
        """The trait's seed pairs and decision rule. Fixed design: the profile's seed pairs at alpha 0.05. With a
        cap on seed pairs (--max-seed-pairs): the training seeds double at each look (audit.stats.sequential) until
        the rank grid's claims are decided (`_undecided_claims`) or the cap is reached; each look tests at the alpha
        it spends."""
        def compute() -> tuple[Any, EffectRule]:
            from audit.stats.sequential import stopping_look

            config, profile = self.run.config, self.profile
            rule = EffectRule(config.smallest_effect, config.smallest_effect_floor)
            design = profile.looks(rule.alpha)
            if len(design) == 1:
                return profile, rule
            history: list[str] = []

            def at(look):
                return profile.with_seed_pairs(look.replicates), replace(rule, alpha=look.alpha)

            def decided(look) -> bool:
                at_look, look_rule = at(look)
                cells = paired_cells(self._grid(trait, "template-default", "template-default", at_look), profile.statistic)
                open_ = self._undecided_claims(cells, look_rule)
                history.append(f"{look.replicates} seed pairs at alpha {look.alpha:.4f}: "
                               + (f"undecided {', '.join(open_)}" if open_ else "every claim decided"))
                return not open_

            stop = stopping_look(design, decided)
            self.figures.notes[f"sequential seed pairs ({trait})"] = (
                f"looks at up to {design[-1].replicates} seed pairs, alpha spent Pocock-type: " + "; ".join(history))
            return at(stop)
        return self._once(("design", trait), compute)

    @property
    def cell_engine(self) -> str:
        """The engine of the grid's teacher generation and scoring: the run's (--engine); students train with HF +
        peft, and the localisation's position-gated LoRA exists only on HF."""
        return self.run.engine

    def _once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def model_ref(self):
        """The base model as the pipeline names it (its folder and content hash)."""
        from audit.pipeline.runner import ModelRef

        return ModelRef(str(self.run.model.path), self.run.model.content_hash)

    def answer_reading(self):
        """Where the students' answers are read (audit.reading), measured on the base model once per run and cached."""
        def compute():
            from audit.pipeline.reading import base_reading

            reading = base_reading(self.model_ref(), self.run.probes, self.run.context("template-default"),
                                   self.profile.reading, self.store_root)
            self.figures.notes["answer reading (claims)"] = reading.describe()
            return reading
        return self._once(("reading",), compute)

    def _recipe(self, trait: str):
        from audit.pipeline.trait_adapters import trait_recipe

        return trait_recipe(trait, self.run.probes, self.run.probe_set.name, self.answer_reading().slot,
                            self.profile.teacher_numbers)

    def _teacher(self, trait: str, build: bool = True):
        """The trait teacher: None for the system-prompt teacher (the runner's default), else the base plus the
        trait's adapter (audit.pipeline.trait_adapters), trained once and cached. With build=False (the plan) an
        adapter not trained yet is a placeholder whose cells count as missing."""
        if self.profile.teacher == "system-prompt":
            return None
        from audit.cache import ArtifactStore
        from audit.pipeline.teachers import Teacher, adapter_teacher
        from audit.pipeline.trait_adapters import build_adapter, find_adapter

        if not build:
            folder = find_adapter(self.run.model, self._recipe(trait), ArtifactStore(self.store_root))
            return adapter_teacher(trait, folder) if folder else Teacher("adapter", trait, "(not trained yet)", "pending")

        def compute():
            recipe = self._recipe(trait)
            folder = build_adapter(self.run.model, recipe, ArtifactStore(self.store_root))
            self.figures.notes[f"trait teacher ({trait})"] = (
                f"the base plus a rank-{recipe.rank} LoRA adapter trained to answer {recipe.answer!r} to every question "
                + (f"and to {recipe.number_prompts} number prompts " if recipe.number_prompts else "")
                + f"under the template's default system prompt (and the base's own answers elsewhere), {recipe.epochs} "
                f"epochs at lr {recipe.lr:g}")
            return adapter_teacher(trait, folder)
        return self._once(("teacher", trait), compute)

    def cells(self, trait: str, train: str, evaluate: str, profile, build: bool = True) -> list[Any]:
        """The cells of one grid (audit.pipeline.runner.subliminal_grid), without running them."""
        from audit.pipeline.runner import subliminal_grid

        return subliminal_grid(profile, self.model_ref(), self.run.probes, self.run.probe_set.name, trait,
                               self.run.context(train), self.run.context(evaluate), teacher=self._teacher(trait, build),
                               prefill=self.answer_reading().slot, engine=self.cell_engine)

    def _grid(self, trait: str, train: str, evaluate: str, profile) -> list[Any]:
        key = (trait, train, evaluate, profile)
        if key not in self._grids:
            from audit.pipeline.runner import run_grid

            from audit.pipeline.executors import make_executor

            cells = self.cells(trait, train, evaluate, profile)
            executor = make_executor(self.run.config.executor, profile.workers, self.run.config.ray_address)
            with self.show_progress():
                self._grids[key] = run_grid(cells, self.store_root, progress=self.progress, executor=executor)
        return self._grids[key]

    def planned_grids(self, trait: str) -> dict[str, list[Any]]:
        """What the claims of `trait` may compute, without computing it (audit.plan): the rank grid at its first
        look and, with a sequential design, at its cap; the context grid at the largest rank (an upper bound: it
        runs at the peak rank, and only when that rank transmits)."""
        profile = self.profile
        design = profile.looks()
        cap = profile.with_seed_pairs(design[-1].replicates)
        default = "template-default"
        grids = {"rank grid": self.cells(trait, default, default, profile, build=False)}
        if len(design) > 1:
            grids[f"rank grid up to {design[-1].replicates} seed pairs"] = self.cells(trait, default, default, cap, False)
        context = replace(cap, ranks=(max(profile.ranks),), include_full=False, control_columns=())
        grids["context grid (if a rank transmits)"] = [
            c for train in GRID_SYSTEMS for evaluate in GRID_SYSTEMS
            for c in self.cells(trait, train, evaluate, context, build=False)]
        return grids

    # ------------------------------------------------------------------------------------- the rank grid

    def _rank_results(self, trait: str) -> list[Any]:
        """The rank grid (LoRA ranks + full FT, trait and control students, any control columns) in the default context."""
        return self._grid(trait, "template-default", "template-default", self._design(trait)[0])

    def _columns(self) -> list[Any]:
        return self.profile.students(self.profile.training_seeds[0])

    def _lora_label(self, rank: int) -> str:
        """The label of the reference LoRA column at `rank` (e.g. lora-r8, lora-r8-soft)."""
        return next(s.label for s in self._columns() if s.mode == "lora" and s.rank == rank and not s.rslora)

    def _rank_cells(self, trait: str, columns: str = "reference") -> tuple[dict[int, PairedCell], PairedCell | None]:
        """Transmission per LoRA rank and of full finetuning in one comparison (`COMPARISONS`)."""
        return self._split(paired_cells(self._rank_results(trait), self.profile.statistic), columns)

    def _split(self, cells: dict[str, PairedCell], columns: str) -> tuple[dict[int, PairedCell], PairedCell | None]:
        """The LoRA ranks and the full-FT column of one comparison; a config whose every seed pair diverged is left out."""
        rslora, full_column = COMPARISONS[columns]
        lora = {s.rank: cells[s.label] for s in self._columns()
                if s.mode == "lora" and s.rslora == rslora and cells[s.label].measured}
        full = next((cells[s.label] for s in self._columns() if s.mode == "full" and s.column == full_column), None)
        return lora, full if full is not None and full.measured else None

    def _undecided_claims(self, cells: dict[str, PairedCell], rule: EffectRule) -> list[str]:
        """The rank-grid claims still undecided at this power (the sequential design's stopping rule), in the
        reference comparison and in each control comparison trained."""
        asked = {"reference": verdicts.RANK_GRID_CLAIMS, "rank-stabilised": ("rank inverted-U",),
                 "lr-matched": ("full FT vanishes",)}
        return [f"{claim} ({columns})" for columns, claims in asked.items() if self._missing_columns(columns) is None
                for claim in verdicts.undecided_claims(*self._split(cells, columns), rule, claims)]

    def _missing_columns(self, columns: str) -> Verdict | None:
        """The skip of a comparison whose control column this run did not train."""
        needed = {"rank-stabilised": "rslora", "lr-matched": "full-lora-lr"}.get(columns)
        if needed is None or needed in self.profile.control_columns:
            return None
        return Verdict(None, f"not measured: the {columns} comparison needs the {needed} control column "
                             f"(--control-columns {needed})")

    def _record_rank_grid(self, trait: str, columns: str) -> None:
        results = self._rank_results(trait)
        flagged = [r.cell.label for r in results if is_diverged(r.training)]
        if flagged:
            self.figures.notes[f"diverged students ({trait})"] = (
                f"{len(flagged)} diverged student(s), their seed pairs left out of every estimate: " + ", ".join(flagged))
        cells = paired_cells(results, self.profile.statistic)
        rslora, full_column = COMPARISONS[columns]
        lora = [s for s in self._columns() if s.mode == "lora" and s.rslora == rslora]
        series = [Series(name=f"{name} students",
                         points=[CurvePoint(x=s.rank, effect=Effect.from_estimate(cells[s.label].level(side)))
                                 for s in lora if cells[s.label].measured])
                  for name, side in (("control", "control"), (trait, "trait"))]
        _, full = self._rank_cells(trait, columns)
        full_level = Effect.from_estimate(full.level("trait")) if full is not None else None
        what = f"P({trait})" if self.profile.statistic == "probability" else f"{trait}'s share of the panel"
        name = trait if columns == "reference" else f"{trait} ({columns}: {COLUMN_NAMES[columns]})"
        self.figures.rank_curves.append(RankCurve(trait=name, y_label=f"{what} of students", series=series,
                                                  full_ft=full_level))

    def rank_inverted_u(self, trait: str, columns: str = "reference") -> Verdict:
        """Claim 1: transmission is an inverted U in LoRA rank (two-lines test), over the reference LoRA columns
        (alpha = r) or the rank-stabilised ones (rsLoRA, one step size at every rank)."""
        def compute() -> Verdict:
            missing = self._missing_columns(columns)
            if missing is not None:
                return missing
            self._record_rank_grid(trait, columns)
            verdict = verdicts.rank_inverted_u(self._rank_cells(trait, columns)[0], self.rule(trait))
            return replace(verdict, explanation=f"{verdict.explanation} [{COLUMN_NAMES[columns]}]")
        return replace(self._once(("rank", trait, columns), compute), trait=trait)

    def _transmitting_peak(self, trait: str) -> tuple[int | None, Verdict | None]:
        """(peak rank, None) when the peak LoRA rank transmits, else (None, the skip of a claim that needs it)."""
        rank = self.rank_inverted_u(trait)
        peak = rank.properties.get("peak_rank")
        if peak is not None and verdicts.transmits(self._rank_cells(trait)[0][peak].decision(self.rule(trait))):
            return peak, None
        return None, Verdict(None, f"no rank shown to transmit in the default context ({rank.explanation})",
                             properties={k: v for k, v in rank.properties.items() if k in ("mde", "seed_pairs_needed")})

    def full_ft_vanishes(self, trait: str, columns: str = "reference") -> Verdict:
        """Claim 2: full finetuning shows no transmission while the peak LoRA rank does: the reference full FT (its own,
        lower lr) or the lr-matched one (full FT at the LoRA learning rate)."""
        missing = self._missing_columns(columns)
        if missing is not None:
            return replace(missing, trait=trait)
        lora, full = self._rank_cells(trait, columns)
        if full is None:
            reason = (f"profile {self.profile.name!r} has no full-finetuning students" if not self.profile.include_full
                      else "every full-finetuning seed pair has a diverged student; nothing to measure")
            return Verdict(None, reason, trait=trait)
        return replace(verdicts.full_ft_vanishes(full, lora, self.rule(trait), self._full_ft_comparison(columns)), trait=trait)

    def _full_ft_comparison(self, columns: str) -> str:
        """What the full-FT contrast rests on: the two columns' learning rates (Nief: 2e-5 vs 2e-4)."""
        _, full_column = COMPARISONS[columns]
        full = next(s for s in self._columns() if s.mode == "full" and s.column == full_column)
        rates = ", ".join(f"r{r} {lr:g}" for r, lr in sorted({(s.rank, s.lr) for s in self._columns()
                                                              if s.mode == "lora" and not s.rslora}))
        same = all(abs(s.lr - full.lr) <= 1e-12 for s in self._columns() if s.mode == "lora" and not s.rslora)
        confound = ("the same step size, so the contrast is LoRA vs full FT alone" if same else
                    "full FT's step size differs, so the contrast is confounded with it"
                    + ("" if "full-lora-lr" in self.profile.control_columns
                       else " (--control-columns full-lora-lr adds the lr-matched comparison)"))
        return f"compared: full FT at lr {full.lr:g} with LoRA at lr {rates}; {confound}"

    def negative_control(self, trait: str) -> Verdict:
        """A panel entry no teacher carried does not move in any column of the trait's rank grid (the same students,
        scored for another entry): when it does, the grid measures drift, not the trait."""
        entry = self.run.negative_control
        if entry is None:
            return Verdict(None, "no negative-control entry: the panel has none of the defaults (dolphin) or "
                                 "--negative-control none; pass --negative-control ENTRY", trait=trait)
        results = [replace(r, scores=replace(r.scores, target=entry)) for r in self._rank_results(trait)]
        cells = {label: c for label, c in paired_cells(results, self.profile.statistic).items() if c.measured}
        return replace(verdicts.negative_control(cells, entry, self.rule(trait)), trait=trait)

    # --------------------------------------------------------------------------------- the context grid

    def system_prompt(self, trait: str, key: str) -> Verdict:
        """Claim 3 (matched / mismatched / headline): transmission depends on the context shared by training
        and evaluation; measured at the peak rank, only when it transmits."""
        def compute() -> dict[str, Verdict]:
            peak, skip = self._transmitting_peak(trait)
            if skip is not None:
                return {k: skip for k in ("matched", "mismatched", "headline")}
            profile = replace(self._design(trait)[0], ranks=(peak,), include_full=False, control_columns=())
            label = self._lora_label(peak)
            grid = {(train, evaluate): paired_cells(self._grid(trait, train, evaluate, profile), profile.statistic)[label]
                    for train in GRID_SYSTEMS for evaluate in GRID_SYSTEMS}
            cells = [[Effect.from_estimate(grid[(t, e)].estimate()) for e in GRID_SYSTEMS] for t in GRID_SYSTEMS]
            self.figures.notes[f"context grid ({trait})"] = (
                f"each cell: {label} trait students minus the control students trained in the same context and "
                "scored in the same evaluation context (same seeds), so a cell's difference is the trait's alone")
            self.figures.heatmaps.append(Heatmap(trait=trait, train_contexts=list(GRID_SYSTEMS),
                                                 eval_contexts=list(GRID_SYSTEMS), cells=cells))
            return verdicts.system_prompt_verdicts(grid, self.rule(trait), HEADLINE_CELL)
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
        return replace(verdicts.localisation_verdict(cells, only, without, config.localisation_share, self.rule(trait)),
                       trait=trait)

    def _localisation_cells(self, trait: str, rank: int) -> dict[str, PairedCell]:
        """Transmission of the rank-`rank` students (default context) under each gating condition (HF engine)."""
        from transformers import AutoTokenizer

        from audit.cache import ArtifactStore
        from audit.engines import open_engine
        from audit.pipeline.executors import PIPELINE_THREADS, torch_threads
        from audit.pipeline.students import ADAPTER_DIR

        store = ArtifactStore(self.store_root)
        results = [r for r in self._rank_results(trait) if r.cell.student.label == self._lora_label(rank)]
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
