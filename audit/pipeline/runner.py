"""The experiment runner: a grid of independent, content-addressed cells, computed once and cached.

A cell is (trait teacher or control) x dataset seed x training seed x student config, measured in an
evaluation context. `run_cell(cell, store_root)` is a plain function of a picklable spec, so a
distributed executor can run cells later. Each stage is its own artefact in the ArtifactStore
(dataset -> student -> scores); the store's atomic build means a run killed at any moment resumes
without redoing finished stages and without half-written entries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from audit.cache import ArtifactStore, content_key
from audit.pipeline.datasets import read_dataset
from audit.pipeline.profiles import Profile, StudentConfig, TeacherDataConfig
from audit.pipeline.students import ADAPTER_DIR, MODEL_DIR, TeacherView, train_student
from audit.pipeline.teachers import (
    DatasetSpec,
    Teacher,
    build_dataset,
    context_fingerprint,
    engine_key,
    control_teacher,
    system_prompt_teacher,
)

if TYPE_CHECKING:
    from audit.pipeline.executors import Executor

SCORES_FILE = "scores.json"
TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class ModelRef:
    """The base model a grid runs on."""

    path: str
    """HF model folder."""
    content_hash: str
    """Content hash of its weights (part of every cache key)."""


@dataclass(frozen=True)
class CellSpec:
    """Everything that determines one cell; picklable, so any executor can run it."""

    model: ModelRef
    probe_set: object
    """The ProbeSet (panel, questions, teacher template)."""
    probe_set_name: str
    target: str
    """Trait whose probability is measured (the trait teacher's target)."""
    teacher: Teacher
    """The trait teacher or the control teacher."""
    dataset_seed: int
    training_seed: int
    student: StudentConfig
    data: TeacherDataConfig
    train_context: object
    """ChatContext the students train in (and the base context the teachers write in)."""
    eval_context: object
    """ChatContext the students are measured in."""
    scorer: str = "exact"
    scorer_options: tuple[tuple[str, object], ...] = ()
    """Keyword arguments of the scorer, e.g. (("n", 100),)."""
    engine: str = "hf"
    """Engine kind for teacher generation and scoring ("hf" or "vllm"; training is HF + peft). Part of the data's
    and the scores' keys: engines sample different text from the same seeds."""

    @property
    def label(self) -> str:
        return f"{self.teacher.id}/d{self.dataset_seed}/t{self.training_seed}/{self.student.label}"

    @property
    def dataset(self) -> DatasetSpec:
        return DatasetSpec(self.model.content_hash, self.teacher, self.probe_set_name,
                           self.teacher.context(self.train_context, self.probe_set),
                           self.data, self.dataset_seed, self.engine)

    @property
    def teacher_view(self) -> TeacherView:
        """The teacher's distribution: soft labels and the held-out KL diagnostic."""
        return TeacherView(self.model.path, self.teacher.context(self.train_context, self.probe_set),
                           self.teacher.adapter)

    @property
    def student_key(self) -> str:
        soft = context_fingerprint(self.teacher_view.context) if self.student.objective == "soft" else None
        # "v": the training code's version; bumped when it changes what a student is (DESIGN.md §3).
        return content_key({"dataset": self.dataset.key, "student": self.student.trained, "model": self.model.content_hash,
                            "train_context": context_fingerprint(self.train_context), "soft_teacher": soft, "v": 2})

    @property
    def scores_key(self) -> str:
        # No target: scores hold the whole panel, so a control student scored once serves every trait.
        return content_key({"student": self.student_key, "eval_context": context_fingerprint(self.eval_context),
                            "probes": self.probe_set, "scorer": self.scorer, "options": self.scorer_options,
                            **engine_key(self.engine), "v": 3})


@dataclass(frozen=True)
class CellResult:
    cell: CellSpec
    scores: object
    """TraitScores of the student."""
    training: dict
    """TrainingSummary as a dict (final loss/KL, divergence flag, seeds, seconds)."""
    stage_seconds: dict = field(default_factory=dict)
    """Wall seconds spent per stage in this run (0 for cached stages)."""


def open_cell_engine(kind: str, model_path: str, dtype: str = "float32", adapter: str | None = None):
    """The engine of one stage of a cell; vLLM is opened with the LoRA slot the student's adapter needs."""
    from audit.engines import open_engine

    return open_engine(kind, model_path, dtype=dtype, **({"adapters": (adapter,)} if kind == "vllm" and adapter else {}))


def _student_dir_and_adapter(student_dir: Path, cell: CellSpec) -> tuple[str, str | None]:
    """(model folder, adapter) to score a student with."""
    if cell.student.mode == "lora":
        return cell.model.path, str(student_dir / ADAPTER_DIR)
    return str(student_dir / MODEL_DIR), None


def _store(store_root: str | Path | None) -> ArtifactStore:
    """The artefact store at `store_root` (None: $SUBAUDIT_CACHE or the default), as every executor's process opens it."""
    return ArtifactStore(Path(store_root) if store_root is not None else None)


def _timed(seconds: dict[str, float], stage: str, fn: Callable[[], Path]) -> Path:
    start = time.perf_counter()
    path = fn()
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
    return path


def ensure_student(cell: CellSpec, store: ArtifactStore, seconds: dict[str, float] | None = None) -> Path:
    """The cell's student folder: trained (its teacher data first) when the store lacks it. `seconds` gets the wall
    time of the stages computed here."""
    seconds = {} if seconds is None else seconds

    def dataset_path() -> Path:
        return build_dataset(store, lambda: open_cell_engine(cell.engine, cell.model.path, cell.data.dtype),
                             cell.dataset)

    def build_student(directory: Path) -> dict:
        dataset = read_dataset(_timed(seconds, "teacher_data", dataset_path))
        pairs = [(ex.prompt, ex.completion) for ex in dataset.examples]
        n_train = min(cell.data.n_keep, len(pairs))  # a shortfall comes out of the held-out part first
        start = time.perf_counter()
        summary = train_student(cell.model.path, pairs[:n_train], cell.train_context, cell.student, directory,
                                cell.teacher_view, heldout=pairs[n_train:])
        seconds["student"] = time.perf_counter() - start
        (directory / TRAINING_FILE).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
        return summary.to_dict()

    return store.get_or_build("student", cell.student_key, build_student, meta={"cell": cell.label})


def score_student(engine, cell: CellSpec, adapter: str | None):
    """The cell's TraitScores from an engine serving its student (`adapter`: the LoRA student's folder)."""
    from audit.scoring import get_scorer

    return get_scorer(cell.scorer, **dict(cell.scorer_options)).score(engine, cell.probe_set, cell.eval_context,
                                                                       cell.target, adapter)


def _stored_scores(cell: CellSpec, store: ArtifactStore, score: Callable[[Path], object],
                   seconds: dict[str, float]) -> Path:
    """The cell's scores entry; when missing, `score(student folder)` computes it (the student trained first)."""
    def build(directory: Path) -> dict:
        student_dir = ensure_student(cell, store, seconds)
        start = time.perf_counter()
        scores = score(student_dir)
        seconds["scoring"] = time.perf_counter() - start
        (directory / SCORES_FILE).write_text(json.dumps(scores.to_dict(), sort_keys=True))
        (directory / TRAINING_FILE).write_text((student_dir / TRAINING_FILE).read_text())
        return {"mean_p_target": scores.mean_p_target}

    return store.get_or_build("scores", cell.scores_key, build, meta={"cell": cell.label})


def run_cell(cell: CellSpec, store_root: str | Path | None = None) -> CellResult:
    """Compute (or load) the cell's dataset, student and scores; returns the student's scores."""
    from audit.scoring import TraitScores

    store = _store(store_root)
    seconds: dict[str, float] = {}

    def score(student_dir: Path):
        model_path, adapter = _student_dir_and_adapter(student_dir, cell)
        with open_cell_engine(cell.engine, model_path, adapter=adapter) as engine:
            return score_student(engine, cell, adapter)

    scores_dir = _stored_scores(cell, store, score, seconds)
    scores = replace(TraitScores.from_dict(json.loads((scores_dir / SCORES_FILE).read_text())), target=cell.target)
    training = json.loads((scores_dir / TRAINING_FILE).read_text())
    return CellResult(cell, scores, training, seconds)


def train_cell(cell: CellSpec, store_root: str | Path | None = None) -> dict[str, float]:
    """The cell's teacher data and student, without scoring; returns the seconds per stage computed."""
    seconds: dict[str, float] = {}
    ensure_student(cell, _store(store_root), seconds)
    return seconds


def scoring_groups(cells: Sequence[CellSpec], store: ArtifactStore) -> list[list[CellSpec]]:
    """Missing scores that one multi-LoRA vLLM engine serves: the vLLM-scored LoRA students of one base model (any
    evaluation context, probe set or scorer: those are per request), two or more."""
    groups: dict[str, dict[str, CellSpec]] = {}
    for cell in cells:
        if cell.engine == "vllm" and cell.student.mode == "lora" and not is_cached(cell, store):
            groups.setdefault(cell.model.path, {})[cell.scores_key] = cell
    return [list(g.values()) for g in groups.values() if len(g) > 1]


def score_together(group: Sequence[CellSpec], store_root: str | Path | None = None) -> dict[str, float]:
    """Score a scoring group's students (trained first where missing) in one vLLM engine with every adapter loaded:
    one engine start for the group instead of one per cell. Returns the seconds spent."""
    from audit.engines import open_engine

    store = _store(store_root)
    seconds: dict[str, float] = {}
    adapters = [_student_dir_and_adapter(ensure_student(cell, store, seconds), cell)[1] for cell in group]
    start = time.perf_counter()
    with open_engine("vllm", group[0].model.path, adapters=tuple(adapters)) as engine:
        for cell, adapter in zip(group, adapters):
            _stored_scores(cell, store, lambda _dir, cell=cell, adapter=adapter: score_student(engine, cell, adapter), {})
    seconds["scoring"] = time.perf_counter() - start
    return seconds


def is_cached(cell: CellSpec, store: ArtifactStore) -> bool:
    return store.get("scores", cell.scores_key) is not None


def stack_groups(cells: Sequence[CellSpec], store: ArtifactStore) -> list[list[CellSpec]]:
    """Missing students that can train in one stacked pass (audit.pipeline.stacked): hard-label LoRA students of one
    dataset and training context with the same batch settings, two or more, without held-out data (the stacked
    trainer has no held-out KL)."""
    from audit.pipeline.stacked import SHARED_SETTINGS

    groups: dict[str, dict[str, CellSpec]] = {}
    for cell in cells:
        s = cell.student
        if s.mode != "lora" or s.objective != "hard" or cell.data.n_heldout or store.get("student", cell.student_key):
            continue
        key = content_key({"dataset": cell.dataset.key, "context": context_fingerprint(cell.train_context),
                           "batches": [getattr(s.optim, f) for f in SHARED_SETTINGS]})
        groups.setdefault(key, {})[cell.student_key] = cell
    return [list(g.values()) for g in groups.values() if len(g) > 1]


def train_stacked_students(group: Sequence[CellSpec], store_root: str | Path | None = None) -> None:
    """Train a stack group's students in one pass and put each in the store, where its cell then finds it."""
    import shutil
    import tempfile

    from audit.pipeline.stacked import train_students_stacked

    store = _store(store_root)
    first = group[0]
    path = build_dataset(store, lambda: open_cell_engine(first.engine, first.model.path, first.data.dtype), first.dataset)
    pairs = [(ex.prompt, ex.completion) for ex in read_dataset(path).examples][:first.data.n_keep]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / str(k) for k in range(len(group))]
        summaries = train_students_stacked(first.model.path, pairs, first.train_context, [c.student for c in group], outs)
        for cell, out, summary in zip(group, outs, summaries):
            def build(directory: Path, out=out, summary=summary) -> dict:
                shutil.copytree(out / ADAPTER_DIR, directory / ADAPTER_DIR)
                (directory / TRAINING_FILE).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
                return summary.to_dict()
            store.get_or_build("student", cell.student_key, build, meta={"cell": cell.label, "stacked": len(group)})


def run_grid(cells: Sequence[CellSpec], store_root: str | Path | None = None, progress: bool = True,
             run: Callable[[CellSpec, str | Path | None], CellResult] = run_cell, workers: int = 1,
             executor: "Executor | None" = None, stack: bool | None = None) -> list[CellResult]:
    """Results for every cell, in order: cached cells are loaded, missing ones computed by `executor` (default:
    local, `workers` spawned processes of one torch thread each when > 1) with a progress bar. The store's per-entry
    lock makes a cell that needs a dataset another one is writing wait and reuse it. With `stack` (default: on a GPU
    host) the LoRA students that share a dataset train first in one stacked pass each (`stack_groups`); vLLM-scored
    LoRA students train first and are then scored in one multi-LoRA engine per base model (`scoring_groups`)."""
    from tqdm.auto import tqdm

    from audit.pipeline.executors import PIPELINE_THREADS, LocalExecutor, torch_threads
    from audit.pipeline.training import training_device

    store = _store(store_root)
    executor = executor or LocalExecutor(workers)
    missing = [i for i, cell in enumerate(cells) if not is_cached(cell, store)]
    if stack if stack is not None else training_device() == "cuda":
        for group in stack_groups([cells[i] for i in missing], store):
            train_stacked_students(group, store_root)
    results: dict[int, CellResult] = {}
    seconds: dict[str, dict[str, float]] = {}  # per scores key: stages computed before the cell's own run
    bar = tqdm(total=len(missing), desc="cells", unit="cell", disable=not progress or not missing)

    def done(i: int, result: CellResult) -> None:
        results[i] = result
        bar.set_postfix_str(cells[i].label)
        bar.update(1)

    with torch_threads(PIPELINE_THREADS):
        groups = scoring_groups([cells[i] for i in missing], store)
        if groups:
            members = [cell for group in groups for cell in group]

            def trained(k: int, stage_seconds: dict[str, float]) -> None:
                seconds[members[k].scores_key] = stage_seconds

            executor.run(train_cell, members, range(len(members)), store_root, trained)
            executor.run(score_together, groups, range(len(groups)), store_root, lambda k, _: bar.update(len(groups[k])))
            missing = [i for i in missing if not is_cached(cells[i], store)]
        executor.run(run, cells, missing, store_root, done)
    bar.close()
    for i, cell in enumerate(cells):
        if i not in results:
            result = run(cell, store_root)  # cached: loads only
            results[i] = replace(result, stage_seconds={**seconds.get(cell.scores_key, {}), **result.stage_seconds})
    return [results[i] for i in range(len(cells))]


def subliminal_grid(profile: Profile, model: ModelRef, probe_set, probe_set_name: str, target: str,
                    train_context, eval_context=None, teacher: Teacher | None = None, prefill: bool = False,
                    engine: str = "hf", **student_overrides) -> list[CellSpec]:
    """The cells of one trait: {trait teacher, control} x dataset seeds x training seeds x profile students;
    `prefill`: score in the answer slot (the reading chosen for the profile, audit.pipeline.reading); `engine`:
    the engine of teacher generation and scoring."""
    trait_teacher = teacher or system_prompt_teacher(target)
    cells = []
    for dataset_seed in profile.dataset_seeds:
        for training_seed in profile.training_seeds:
            for student in profile.students(training_seed, **student_overrides):
                for who in (trait_teacher, control_teacher()):
                    options = (("n", profile.samples_per_question),) if profile.scorer == "sampled" else ()
                    options += (("prefill", True),) if prefill else ()
                    cells.append(CellSpec(model, probe_set, probe_set_name, target, who, dataset_seed, training_seed,
                                          student, profile.data, train_context, eval_context or train_context,
                                          profile.scorer, options, engine))
    return cells
