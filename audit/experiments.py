"""The claims' experiments on top of the pipeline: which grids to run, and their results as paired cells.

One `ClaimsExperiment` per session; grids are run through the cached pipeline runner, so a warm
rerun only loads artefacts. Contexts are named by their system mode (template-default, empty,
custom:chatgpt), as DESIGN §2 asks.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

from audit.config import AuditConfig
from audit.pipeline.students import is_diverged
from audit.results import Bar, CurvePoint, Effect, Heatmap, Localisation, RankCurve, Series
from audit.verdicts import PairedCell

GRID_SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""Train x eval system-prompt modes of the context-dependence claim (DESIGN §2)."""
HEADLINE_CELL = ("template-default", "empty")
"""Trained with the template's default system prompt, evaluated with an explicit empty one."""


GATINGS = ("everywhere", "entity only", "all but entity", "template only", "content only")
"""Position-gating conditions of the localisation claim (LoRA active where named; 'only' = prompt
positions only, the generated/scored tokens without LoRA; 'all but' = everything else incl. those tokens)."""


class LocalisationError(RuntimeError):
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


def model_context(model: Any, system: str):
    """A chat context on the model's own template (the shipped Qwen2.5 one for Qwen-family models)."""
    from audit.chat import ChatContext, qwen_context, template_from_tokenizer

    if "qwen" in model.name.lower():
        return qwen_context(system)
    from transformers import AutoTokenizer  # lazy

    tokenizer = AutoTokenizer.from_pretrained(str(model.path))
    return ChatContext(template_from_tokenizer(tokenizer, model.name.split("/")[-1].lower()), system)


def paired_cells(results: Sequence[Any], statistic: str = "probability") -> dict[str, PairedCell]:
    """Per student label: trait minus control P(target) (or its panel share), paired by (dataset seed,
    training seed, question).

    A seed pair whose trait or control student diverged is left out (and counted): a diverged student is
    reported as diverged, never as transmission.
    """
    sides: dict[str, dict[tuple[int, int], dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        side = "control" if r.cell.teacher.kind == "control" else "trait"
        sides[r.cell.student.label][(r.cell.dataset_seed, r.cell.training_seed)][side] = r
    out = {}
    for label, by_seed in sides.items():
        diffs, questions, seeds, diverged = [], [], [], 0
        for s, (_, pair) in enumerate(sorted(by_seed.items())):
            if any(is_diverged(pair[side].training) for side in ("trait", "control")):
                diverged += 1
                continue
            trait, control = pair["trait"].scores.values(statistic), pair["control"].scores.values(statistic)
            for q, (pt, pc) in enumerate(zip(trait, control)):
                diffs.append(pt - pc)
                questions.append(q)
                seeds.append(s)
        out[label] = PairedCell(tuple(diffs), tuple(questions), tuple(seeds), diverged)
    return out


def _level(results: Sequence[Any], label: str, side: str, statistic: str) -> Effect:
    """Mean P(target) of one side's students of one config: seed pairs, then questions, resampled."""
    from audit.stats import replicate_bootstrap_mean

    values, seed_pairs, questions = [], [], []
    for r in results:
        if r.cell.student.label == label and (r.cell.teacher.kind == "control") == (side == "control"):
            per_question = r.scores.values(statistic)
            values.extend(per_question)
            seed_pairs.extend([(r.cell.dataset_seed, r.cell.training_seed)] * len(per_question))
            questions.extend(range(len(per_question)))
    return Effect.from_estimate(replicate_bootstrap_mean(values, seed_pairs, questions, n_boot=1000, seed=0))


@dataclass
class ClaimsExperiment:
    """Runs (or loads from the cache) the grids the claim checks need."""

    config: AuditConfig
    model: Any
    """audit.models.ResolvedModel."""
    store_root: Path | None = None
    progress: bool = True
    show_progress: Callable[[], ContextManager[Any]] = nullcontext
    """Context in which progress bars reach the terminal (the plugin lifts pytest's output capture)."""

    def __post_init__(self) -> None:
        from audit.pipeline.profiles import get_profile
        from audit.probes import load_probe_set

        overrides: dict[str, Any] = {}
        if self.config.ranks:
            overrides["ranks"] = self.config.ranks
        if self.config.seeds:
            overrides["training_seeds"] = self.config.seeds
        self.profile = get_profile(self.config.profile, **overrides)
        self.probes = load_probe_set(self.config.probe_set)
        self._runs: dict[tuple, list[Any]] = {}

    def _run(self, trait: str, train: str, evaluate: str, profile) -> list[Any]:
        key = (trait, train, evaluate, profile)
        if key not in self._runs:
            from audit.pipeline.runner import ModelRef, run_grid, subliminal_grid

            ref = ModelRef(str(self.model.path), self.model.content_hash)
            cells = subliminal_grid(profile, ref, self.probes, self.config.probe_set, trait,
                                    model_context(self.model, train), model_context(self.model, evaluate))
            with self.show_progress():
                self._runs[key] = run_grid(cells, self.store_root, progress=self.progress, workers=profile.workers)
        return self._runs[key]

    def rank_results(self, trait: str) -> list[Any]:
        """The rank grid (LoRA ranks + full FT, trait and control students) in the default context."""
        return self._run(trait, "template-default", "template-default", self.profile)

    def rank_cells(self, trait: str) -> tuple[dict[int, PairedCell], PairedCell | None]:
        """Transmission per LoRA rank and of full finetuning; a config whose every seed pair diverged is left
        out (see `diverged_students`)."""
        cells = paired_cells(self.rank_results(trait), self.profile.statistic)
        lora = {s.rank: cells[s.label] for s in self.profile.students(self.profile.training_seeds[0])
                if s.mode == "lora" and cells[s.label].measured}
        full = cells.get("full")
        return lora, full if full is not None and full.measured else None

    def diverged_students(self, trait: str) -> str:
        """One line naming the rank-grid students flagged as diverged (empty when none)."""
        flagged = [r.cell.label for r in self.rank_results(trait) if is_diverged(r.training)]
        if not flagged:
            return ""
        return (f"{len(flagged)} diverged student(s), their seed pairs left out of every estimate: " + ", ".join(flagged))

    def rank_curve(self, trait: str) -> RankCurve:
        """P(target) of control and trait students by rank, full FT trait students as the reference line."""
        results = self.rank_results(trait)
        students = [s for s in self.profile.students(self.profile.training_seeds[0]) if s.mode == "lora"]
        series = [
            Series(name=f"{name} students", points=[CurvePoint(x=s.rank, effect=_level(results, s.label, side, self.profile.statistic))
                                                    for s in students])
            for name, side in (("control", "control"), (trait, "trait"))
        ]
        full = _level(results, "full", "trait", self.profile.statistic) if self.profile.include_full else None
        what = f"P({trait})" if self.profile.statistic == "probability" else f"{trait}'s share of the panel"
        return RankCurve(trait=trait, y_label=f"{what} of students", series=series, full_ft=full)

    def context_grid(self, trait: str, rank: int) -> dict[tuple[str, str], PairedCell]:
        """Train x eval system-prompt grid at one LoRA rank (students are shared across eval contexts)."""
        profile = replace(self.profile, ranks=(rank,), include_full=False)
        grid = {}
        for train in GRID_SYSTEMS:
            for evaluate in GRID_SYSTEMS:
                grid[(train, evaluate)] = paired_cells(self._run(trait, train, evaluate, profile), profile.statistic)[f"lora-r{rank}"]
        return grid

    def localisation(self, trait: str, rank: int) -> dict[str, PairedCell]:
        """Transmission of the rank-`rank` students (default context) under each gating condition (HF engine)."""
        from transformers import AutoTokenizer

        from audit.cache import ArtifactStore
        from audit.engines import open_engine
        from audit.pipeline.students import ADAPTER_DIR

        store = ArtifactStore(self.store_root)
        results = [r for r in self.rank_results(trait) if r.cell.student.label == f"lora-r{rank}"]
        diverged = {(r.cell.dataset_seed, r.cell.training_seed) for r in results if is_diverged(r.training)}
        results = [r for r in results if (r.cell.dataset_seed, r.cell.training_seed) not in diverged]
        context = model_context(self.model, "template-default")
        tokenizer = AutoTokenizer.from_pretrained(str(self.model.path))
        by_seed: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
        for r in results:
            student_dir = store.get("student", r.cell.student_key)
            if student_dir is None:
                raise LocalisationError(f"student {r.cell.label} is not in the cache; rerun the rank grid")
            by_seed[(r.cell.dataset_seed, r.cell.training_seed)][r.cell.teacher.kind] = str(student_dir / ADAPTER_DIR)
        cells: dict[str, PairedCell] = {}
        from audit.pipeline.runner import PIPELINE_THREADS, torch_threads

        stat = self.profile.statistic
        # Gated scores are not cached, so the thread count cannot change a stored artefact: use the cores
        # the cell workers would.
        threads = max(PIPELINE_THREADS, self.profile.workers)
        with torch_threads(threads), open_engine("hf", self.model.path) as engine:  # gated LoRA: HF only
            for condition in GATINGS:
                diffs, questions, seeds = [], [], []
                for s, (_, adapters) in enumerate(sorted(by_seed.items())):
                    trait_kind = next(k for k in adapters if k != "control")
                    pt = gated_values(engine, tokenizer, self.probes, context, trait, adapters[trait_kind], condition, stat,
                                      self.profile.prefill)
                    pc = gated_values(engine, tokenizer, self.probes, context, trait, adapters["control"], condition, stat,
                                      self.profile.prefill)
                    diffs += [a - b for a, b in zip(pt, pc)]
                    questions += list(range(len(pt)))
                    seeds += [s] * len(pt)
                cells[condition] = PairedCell(tuple(diffs), tuple(questions), tuple(seeds))
        return cells

    def localisation_bars(self, trait: str, cells: dict[str, PairedCell]) -> Localisation:
        bars = [Bar(label=c, effect=Effect.from_estimate(cells[c].estimate())) for c in GATINGS]
        return Localisation(trait=trait, bars=bars, stated_share=self.config.localisation_share)

    @staticmethod
    def heatmap(trait: str, grid: dict[tuple[str, str], PairedCell]) -> Heatmap:
        cells = [[Effect.from_estimate(grid[(t, e)].estimate()) for e in GRID_SYSTEMS] for t in GRID_SYSTEMS]
        return Heatmap(trait=trait, train_contexts=list(GRID_SYSTEMS), eval_contexts=list(GRID_SYSTEMS), cells=cells)
