"""The plan of an audit's claims before they run: what will be computed, and how long it should take here.

`plan_claims` counts what the claims' grids hold (teacher datasets, students per column, optimiser steps, tokens,
scoring passes), after what is shared (one control set serves every trait) and what the artefact store already
has, and estimates the wall time from stage costs measured on this machine (audit.pipeline.calibration): each
missing dataset, student and scoring pass costs a process start, a model load and its units of work, and cells
run `workers` at a time. Grids that run only when a rank transmits (the context grid; the localisation, a few
gated scoring passes) are listed apart. `check_budget` refuses a plan that does not fit `--budget`, naming a
smaller grid that would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from audit.errors import UsageError


class BudgetError(UsageError):
    """The planned grid does not fit the budget (one line, naming a grid that would)."""


@dataclass
class GridCount:
    """The distinct work of one part of the plan, and how much of it the store already holds."""

    datasets: int = 0
    students: dict[str, int] = field(default_factory=dict)
    """Students to train, per column label."""
    steps: int = 0
    """Optimiser steps of the students to train."""
    tokens: int = 0
    """Training tokens of those steps (batch x example length, before padding)."""
    scoring: int = 0
    """Exact scoring passes (one student in one context)."""
    cached: int = 0
    """Datasets, students and scores found in the store (not counted above)."""
    seconds: float = 0.0
    """Estimated CPU seconds of the missing work, one thread."""

    def add(self, other: "GridCount") -> None:
        """Count `other`'s work into this one (the same part of the plan for another trait)."""
        self.datasets, self.steps, self.tokens = self.datasets + other.datasets, self.steps + other.steps, self.tokens + other.tokens
        self.scoring, self.cached, self.seconds = self.scoring + other.scoring, self.cached + other.cached, self.seconds + other.seconds
        for label, n in other.students.items():
            self.students[label] = self.students.get(label, 0) + n

    def describe(self) -> str:
        students = sum(self.students.values())
        per_column = ", ".join(f"{k} {v}" for k, v in self.students.items())
        tokens = f"{self.tokens / 1e6:.1f}M" if self.tokens >= 1e5 else f"{self.tokens / 1e3:.1f}k"
        return (f"{self.datasets} teacher datasets, {students} students ({per_column or 'none'}), {self.steps} optimiser "
                f"steps, {tokens} training tokens, {self.scoring} scoring passes; {self.cached} artefacts cached")


def steps_per_student(profile, student) -> int:
    optim = profile.lora if student.mode == "lora" else profile.full
    return math.ceil(profile.data.n_keep / optim.batch_size) * optim.epochs


def count(cells: list[Any], profile, costs, store, seen: set[str]) -> GridCount:
    """The distinct missing work of `cells` not already in `seen` (keys counted by an earlier part), with its
    estimated seconds under `costs` (None: no estimate)."""
    out = GridCount()
    wanted = profile.data.n_keep + profile.data.n_heldout
    for cell in cells:
        for kind, key in (("dataset", cell.dataset.key), ("student", cell.student_key), ("scores", cell.scores_key)):
            if key in seen:
                continue
            seen.add(key)
            # existence only: the plan must not hash every stored file that the run verifies again when it reads it
            if cell.teacher.adapter_hash != "pending" and store.has(kind, key):
                out.cached += 1
                continue
            if kind == "dataset":
                out.datasets += 1
                if costs is not None:
                    prompts = min(profile.data.n_prompts, math.ceil(wanted / costs.acceptance))
                    out.seconds += costs.model_load + prompts * costs.generate_per_prompt
            elif kind == "student":
                label = cell.student.label
                out.students[label] = out.students.get(label, 0) + 1
                steps = steps_per_student(profile, cell.student)
                optim = profile.lora if cell.student.mode == "lora" else profile.full
                out.steps += steps
                out.tokens += int(steps * optim.batch_size * (costs.example_tokens if costs else 0))
                if costs is not None:
                    step = costs.lora(cell.student.rank) if cell.student.mode == "lora" else costs.full_step
                    out.seconds += costs.process_start + costs.student_overhead[cell.student.mode] + steps * step
            else:
                out.scoring += 1
                if costs is not None:
                    out.seconds += costs.model_load + costs.scoring_pass
    return out


@dataclass
class Plan:
    """The claims' plan: counted parts (in order, the unconditional ones first) and the wall-time estimate."""

    parts: dict[str, GridCount]
    workers: int
    costs: Any
    """The StageCosts behind the estimate (None: not calibrated, no estimate)."""
    localisation_passes: int = 0
    """Gated scoring passes of the localisation, if it runs (never cached)."""
    engine: str = "hf"
    """The run's engine of teacher sampling and scoring (the stage costs are timed with HF's)."""

    def wall(self, part: str) -> float:
        return self.parts[part].seconds / max(1, self.workers)

    @property
    def seconds(self) -> float:
        """Estimated wall seconds of the rank grid, which every claims run computes (up to its cap when the design is
        sequential); the grids that run only when a rank transmits come on top."""
        return sum(self.wall(p) for p in self.parts if p.startswith("rank grid"))

    def lines(self) -> list[str]:
        out = []
        for name, part in self.parts.items():
            time = "" if self.costs is None else f"; ~{duration(self.wall(name))} here"
            out.append(f"subaudit plan: {name}: {part.describe()}{time}")
        if self.localisation_passes:
            out.append(f"subaudit plan: localisation (if a rank transmits): {self.localisation_passes} gated scoring "
                       "passes" + ("" if self.costs is None else
                                   f"; ~{duration(self.localisation_passes * self.costs.scoring_pass)} here"))
        if self.costs is not None:
            c = self.costs
            out.append(f"subaudit plan: estimate from stage costs timed here (one thread; cells {self.workers} at a time): "
                       f"model load {c.model_load:.1f} s, teacher {c.generate_per_prompt:.2f} s per prompt "
                       f"(acceptance {c.acceptance:.0%}), LoRA step " + ", ".join(f"r{r} {s:.2f} s" for r, s in
                                                                                  sorted(c.lora_step.items()))
                       + (f", full-FT step {c.full_step:.2f} s" if c.full_step else "")
                       + ", per student outside its steps " + ", ".join(f"{m} {o:.1f} s" for m, o in c.student_overhead.items())
                       + f", scoring pass {c.scoring_pass:.1f} s, process start {c.process_start:.1f} s"
                       + ("" if self.engine == "hf" else f"; sampling and scoring timed with HF, run with {self.engine} "
                          "(its engine starts, one per dataset and one per grid's LoRA students, and its speed are "
                          "not in the estimate)"))
        return out


def duration(seconds: float) -> str:
    """"45 s", "12 min", "3.4 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_claims(claims, traits, store, costs, engine: str = "hf") -> Plan:
    """The plan of `claims` (an audit.claims.ClaimsMeasurement) for `traits`; `costs` None leaves out the estimate;
    `engine`: the run's engine of sampling and scoring."""
    profile = claims.profile
    seen: set[str] = set()
    parts: dict[str, GridCount] = {}
    for trait in traits:
        for name, cells in claims.planned_grids(trait).items():
            parts.setdefault(name, GridCount()).add(count(cells, profile, costs, store, seen))
    localisation = len(traits) * 5 * 2 * profile.seed_pairs
    return Plan(parts, profile.workers, costs, localisation, engine)


def smaller_grids(profile):
    """Smaller grids to propose, cheapest change first: fewer seed pairs, then every other rank."""
    if len(profile.training_seeds) > 2:
        yield replace(profile, training_seeds=profile.training_seeds[:2], max_seed_pairs=None)
    ranks = profile.ranks
    while len(ranks) > 2:
        ranks = ranks[::2]
        yield replace(profile, ranks=ranks, training_seeds=profile.training_seeds[:2], max_seed_pairs=None,
                      control_columns=())


def check_budget(plan: Plan, budget: float, profile, replan) -> None:
    """A BudgetError when the rank grid does not fit `budget` seconds; `replan(profile)` plans a smaller profile, to
    name one that fits."""
    if plan.costs is None or plan.seconds <= budget:
        return
    hint = "no smaller grid of this profile fits; pass a smaller --profile or a larger --budget"
    for smaller in smaller_grids(profile):
        estimate = replan(smaller).seconds
        if estimate <= budget:
            hint = (f"--ranks {','.join(map(str, smaller.ranks))} --seeds {','.join(map(str, smaller.training_seeds))} "
                    f"would take ~{duration(estimate)}")
            break
    raise BudgetError(f"the rank grid needs ~{duration(plan.seconds)} here, above --budget {duration(budget)}; {hint}")
