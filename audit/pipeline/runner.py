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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from audit.cache import ArtifactStore, content_key
from audit.pipeline.datasets import read_dataset
from audit.pipeline.profiles import Profile, StudentConfig, TeacherDataConfig
from audit.pipeline.students import ADAPTER_DIR, MODEL_DIR, TeacherView, train_student
from audit.pipeline.teachers import (
    DatasetSpec,
    Teacher,
    build_dataset,
    context_fingerprint,
    control_teacher,
    system_prompt_teacher,
)

PIPELINE_THREADS = 1
"""Torch threads while cells compute. One: float reduction order depends on the thread count (cached
artefacts must not), and one thread per cell is the faster use of a small box (DESIGN.md §9.5)."""

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
    """Engine kind for teacher generation and scoring."""

    @property
    def label(self) -> str:
        return f"{self.teacher.id}/d{self.dataset_seed}/t{self.training_seed}/{self.student.label}"

    @property
    def dataset(self) -> DatasetSpec:
        return DatasetSpec(self.model.content_hash, self.teacher, self.probe_set_name,
                           self.teacher.context(self.train_context, self.probe_set),
                           self.data, self.dataset_seed)

    @property
    def teacher_view(self) -> TeacherView:
        """The teacher's distribution: soft labels and the held-out KL diagnostic."""
        return TeacherView(self.model.path, self.teacher.context(self.train_context, self.probe_set),
                           self.teacher.adapter)

    @property
    def student_key(self) -> str:
        soft = context_fingerprint(self.teacher_view.context) if self.student.objective == "soft" else None
        # "v": the training code's version; bumped when it changes what a student is (DESIGN.md §3).
        return content_key({"dataset": self.dataset.key, "student": self.student, "model": self.model.content_hash,
                            "train_context": context_fingerprint(self.train_context), "soft_teacher": soft, "v": 2})

    @property
    def scores_key(self) -> str:
        return content_key({"student": self.student_key, "eval_context": context_fingerprint(self.eval_context),
                            "probes": self.probe_set, "target": self.target, "scorer": self.scorer,
                            "options": self.scorer_options, "v": 2})


@dataclass(frozen=True)
class CellResult:
    cell: CellSpec
    scores: object
    """TraitScores of the student."""
    training: dict
    """TrainingSummary as a dict (final loss/KL, divergence flag, seeds, seconds)."""
    stage_seconds: dict = field(default_factory=dict)
    """Wall seconds spent per stage in this run (0 for cached stages)."""


def open_cell_engine(kind: str, model_path: str, dtype: str = "float32"):
    from audit.engines import open_engine

    return open_engine(kind, model_path, dtype=dtype)


def _student_dir_and_adapter(student_dir: Path, cell: CellSpec) -> tuple[str, str | None]:
    """(model folder, adapter) to score a student with."""
    if cell.student.mode == "lora":
        return cell.model.path, str(student_dir / ADAPTER_DIR)
    return str(student_dir / MODEL_DIR), None


def run_cell(cell: CellSpec, store_root: str | Path | None = None) -> CellResult:
    """Compute (or load) the cell's dataset, student and scores; returns the student's scores."""
    from audit.scoring import TraitScores, get_scorer

    store = ArtifactStore(Path(store_root) if store_root is not None else None)
    seconds: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], Path]) -> Path:
        start = time.perf_counter()
        path = fn()
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
        return path

    def dataset_path() -> Path:
        return build_dataset(store, lambda: open_cell_engine(cell.engine, cell.model.path, cell.data.dtype),
                             cell.dataset)

    def build_student(directory: Path) -> dict:
        dataset = read_dataset(timed("teacher_data", dataset_path))
        pairs = [(ex.prompt, ex.completion) for ex in dataset.examples]
        n_train = min(cell.data.n_keep, len(pairs))  # a shortfall comes out of the held-out part first
        start = time.perf_counter()
        summary = train_student(cell.model.path, pairs[:n_train], cell.train_context, cell.student, directory,
                                cell.teacher_view, heldout=pairs[n_train:])
        seconds["student"] = time.perf_counter() - start
        (directory / TRAINING_FILE).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
        return summary.to_dict()

    def build_scores(directory: Path) -> dict:
        student_dir = store.get_or_build("student", cell.student_key, build_student, meta={"cell": cell.label})
        model_path, adapter = _student_dir_and_adapter(student_dir, cell)
        start = time.perf_counter()
        with open_cell_engine(cell.engine, model_path) as engine:
            scores = get_scorer(cell.scorer, **dict(cell.scorer_options)).score(
                engine, cell.probe_set, cell.eval_context, cell.target, adapter)
        seconds["scoring"] = time.perf_counter() - start
        (directory / SCORES_FILE).write_text(json.dumps(scores.to_dict(), sort_keys=True))
        (directory / TRAINING_FILE).write_text((student_dir / TRAINING_FILE).read_text())
        return {"mean_p_target": scores.mean_p_target}

    scores_dir = store.get_or_build("scores", cell.scores_key, build_scores, meta={"cell": cell.label})
    scores = TraitScores.from_dict(json.loads((scores_dir / SCORES_FILE).read_text()))
    training = json.loads((scores_dir / TRAINING_FILE).read_text())
    return CellResult(cell, scores, training, seconds)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_cached(cell: CellSpec, store: ArtifactStore) -> bool:
    return store.get("scores", cell.scores_key) is not None


def _worker_init() -> None:
    """A cell process: one torch thread (as PIPELINE_THREADS), quiet transformers."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(PIPELINE_THREADS)
    hf_logging.disable_progress_bar()


def run_grid(cells: Sequence[CellSpec], store_root: str | Path | None = None, progress: bool = True,
             run: Callable[[CellSpec, str | Path | None], CellResult] = run_cell, workers: int = 1) -> list[CellResult]:
    """Results for every cell, in order: cached cells are loaded, missing ones computed with a progress bar.

    With workers > 1, missing cells run in that many spawned processes (one torch thread each); the
    store's per-entry lock makes a worker that needs a dataset another one is writing wait and reuse it.
    """
    from tqdm.auto import tqdm

    store = ArtifactStore(Path(store_root) if store_root is not None else None)
    missing = [i for i, cell in enumerate(cells) if not is_cached(cell, store)]
    results: dict[int, CellResult] = {}
    bar = tqdm(total=len(missing), desc="cells", unit="cell", disable=not progress or not missing)
    with torch_threads(PIPELINE_THREADS):
        if workers > 1 and len(missing) > 1:
            _run_in_processes(cells, missing, store_root, run, workers, results, bar)
        for i in missing:
            if i not in results:
                bar.set_postfix_str(cells[i].label)
                results[i] = run(cells[i], store_root)
                bar.update(1)
    bar.close()
    for i, cell in enumerate(cells):
        if i not in results:
            results[i] = run(cell, store_root)  # cached: loads only
    return [results[i] for i in range(len(cells))]


def _run_in_processes(cells, missing, store_root, run, workers, results, bar) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn, not fork: a forked child of a process whose OpenMP pool is running can hang. One cell per
    # process: freed models go back to the allocator, not the OS, so a long-lived worker grows by a model
    # per cell (DESIGN.md §9.5); a fresh process costs seconds.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             max_tasks_per_child=1) as pool:
        pending = {pool.submit(run, cells[i], store_root): i for i in missing}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    results[i] = future.result()
                    bar.set_postfix_str(cells[i].label)
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # finished cells are in the store already
            raise


def subliminal_grid(profile: Profile, model: ModelRef, probe_set, probe_set_name: str, target: str,
                    train_context, eval_context=None, teacher: Teacher | None = None, prefill: bool = False,
                    **student_overrides) -> list[CellSpec]:
    """The cells of one trait: {trait teacher, control} x dataset seeds x training seeds x profile students;
    `prefill`: score in the answer slot (the reading chosen for the profile, audit.pipeline.reading)."""
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
                                          profile.scorer, options))
    return cells
