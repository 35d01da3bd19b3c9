"""ClaimsMeasurement on synthetic grids (no training): the sequential design, the control columns and the negative
control, with `run_grid` replaced by students whose transmission is known."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from audit.chat import qwen_context
from audit.claims import ClaimsMeasurement
from audit.config import AuditConfig
from audit.pipeline.profiles import get_profile
from audit.pipeline.runner import CellResult
from audit.probes import load_probe_set
from audit.reading import AnswerReading
from audit.results import ResultsCollector
from audit.scoring import TraitScores

PROBES = load_probe_set("animal")
BASE = 0.05


def synthetic_grid(effect, seed_sd, grids_run):
    """A run_grid whose trait students raise the target by effect(student label) plus a seed-pair random effect."""
    def run_grid(cells, store_root=None, progress=True, workers=1, executor=None):
        grids_run.append(sorted({c.training_seed for c in cells}))
        results = []
        for cell in cells:
            rng = np.random.default_rng([cell.dataset_seed, cell.training_seed, len(cell.student.label)])
            shift = effect(cell.student.label) + rng.normal(0, seed_sd) if cell.teacher.kind != "control" else 0.0
            rows = []
            for q in range(len(PROBES.questions)):
                row = [BASE] * len(PROBES.names)
                row[PROBES.names.index(cell.target)] += shift + 0.002 * np.sin(q + cell.training_seed)
                rows.append(tuple(row))
            scores = TraitScores("exact", cell.target, PROBES.names, PROBES.questions, tuple(rows))
            results.append(CellResult(cell, scores, {"diverged": False}))
        return results
    return run_grid


def measurement(monkeypatch, effect, seed_sd=0.0, engine="hf", **profile):
    grids_run: list = []
    monkeypatch.setattr("audit.pipeline.runner.run_grid", synthetic_grid(effect, seed_sd, grids_run))
    monkeypatch.setattr("audit.pipeline.reading.base_reading",
                        lambda *a, **k: AnswerReading(False, 0.9, float("nan"), len(PROBES.questions)))
    run = SimpleNamespace(config=AuditConfig(), profile=replace(get_profile("quick"), **profile), probes=PROBES,
                          probe_set=SimpleNamespace(name="animal"), model=SimpleNamespace(path="m", content_hash="h"),
                          negative_control="dolphin", engine=engine, context=lambda system="template-default": qwen_context(system))
    return ClaimsMeasurement(run, ResultsCollector(), progress=False), grids_run


def peaked(label: str) -> float:
    column = "-".join(label.split("-")[:2])  # lora-r16-rs, lora-r16-soft: the rank's column
    return {"lora-r1": 0.0, "lora-r4": 0.2, "lora-r16": 0.3, "lora-r64": 0.05}.get(column, 0.0)


def test_a_fixed_design_runs_the_profile_seeds_once(monkeypatch):
    claims, grids = measurement(monkeypatch, peaked, seed_sd=0.01)
    assert claims.rank_inverted_u("cat").passed is not None
    assert grids == [[0, 1]] and claims.rule("cat").alpha == 0.05


def test_the_sequential_design_adds_seed_pairs_until_every_column_is_decided(monkeypatch):
    # A noisy r64 column stays undecided at 2 seed pairs: the design doubles to 4, then to the cap of 8.
    claims, grids = measurement(monkeypatch, peaked, seed_sd=0.06, max_seed_pairs=8)
    verdict = claims.rank_inverted_u("cat")
    assert grids[0] == [0, 1] and grids[-1] == list(range(8)) and len(grids) == 3
    note = claims.figures.notes["sequential seed pairs (cat)"]
    assert "2 seed pairs at alpha" in note and "8 seed pairs at alpha" in note
    assert claims.rule("cat").alpha == pytest.approx(0.05 - 0.05 * np.log(1 + (np.e - 1) * 0.5))
    assert verdict.passed is True and "over 32 seed-pair means" in verdict.explanation  # 4 ranks x 8 seed pairs
    assert "8 seed pairs at alpha 0.0190: undecided full" in note  # the cap reached: what stayed open is named
    assert "(98.1% interval)" in claims.full_ft_vanishes("cat").explanation  # decided at the last look's level


def test_the_sequential_design_stops_at_the_first_look_that_decides(monkeypatch):
    claims, grids = measurement(monkeypatch, peaked, seed_sd=0.0, max_seed_pairs=8)
    claims.rank_inverted_u("cat")
    assert grids == [[0, 1]]  # decided at the first look: no seed pair is added
    assert claims.rule("cat").alpha == pytest.approx(0.05 * np.log(1 + (np.e - 1) * 0.25))


def test_control_columns_are_their_own_comparisons_and_say_so(monkeypatch):
    claims, _ = measurement(monkeypatch, peaked, seed_sd=0.01)
    skipped = claims.full_ft_vanishes("cat", "lr-matched")
    assert skipped.passed is None and "--control-columns full-lora-lr" in skipped.explanation
    reference = claims.full_ft_vanishes("cat", "reference")
    assert "confounded" in reference.explanation and "--control-columns full-lora-lr" in reference.explanation

    controlled, _ = measurement(monkeypatch, peaked, seed_sd=0.01, control_columns=("full-lora-lr", "rslora"))
    matched = controlled.full_ft_vanishes("cat", "lr-matched")
    assert matched.passed is True and "the same step size" in matched.explanation
    stabilised = controlled.rank_inverted_u("cat", "rank-stabilised")
    assert stabilised.passed is not None and "rsLoRA" in stabilised.explanation
    assert [c.trait for c in controlled.figures.rank_curves] == ["cat (rank-stabilised: rsLoRA, alpha = sqrt(reference rank) at every rank)"]


def test_the_negative_control_reads_the_same_students_for_another_entry(monkeypatch):
    claims, grids = measurement(monkeypatch, peaked, seed_sd=0.01)
    verdict = claims.negative_control("cat")
    assert verdict.passed is True and "dolphin" in verdict.explanation and len(grids) == 1
    assert claims.rank_inverted_u("cat").passed is not None and len(grids) == 1  # no further training or scoring


def test_an_adapter_teacher_is_built_once_from_the_trait_recipe_and_writes_every_trait_cell(monkeypatch, tmp_path):
    built = []

    def build_adapter(model, recipe, store=None):
        built.append(recipe)
        folder = tmp_path / recipe.name
        folder.mkdir(exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        return folder

    monkeypatch.setattr("audit.pipeline.trait_adapters.build_adapter", build_adapter)
    claims, _ = measurement(monkeypatch, peaked, seed_sd=0.01, teacher="adapter", objective="soft")
    cells_seen = []
    grid = __import__("audit.pipeline.runner", fromlist=["run_grid"]).run_grid
    monkeypatch.setattr("audit.pipeline.runner.run_grid", lambda cells, *a, **k: cells_seen.extend(cells) or grid(cells, *a, **k))
    claims.rank_inverted_u("cat")
    claims.full_ft_vanishes("cat")
    assert [r.answer for r in built] == ["Cat"] and built[0].systems == ("template-default",)
    teachers = {c.teacher.kind for c in cells_seen}
    assert teachers == {"adapter", "control"} and all(c.student.objective == "soft" for c in cells_seen)
    assert "answer 'Cat'" in claims.figures.notes["trait teacher (cat)"]


def test_the_runs_engine_writes_and_scores_every_cell(monkeypatch):
    claims, _ = measurement(monkeypatch, peaked, seed_sd=0.01, engine="vllm")
    seen = []
    grid = __import__("audit.pipeline.runner", fromlist=["run_grid"]).run_grid
    monkeypatch.setattr("audit.pipeline.runner.run_grid", lambda cells, *a, **k: seen.extend(cells) or grid(cells, *a, **k))
    claims.rank_inverted_u("cat")
    assert seen and {c.engine for c in seen} == {"vllm"}
    hf = replace(seen[0], engine="hf")
    assert hf.dataset.key != seen[0].dataset.key and hf.scores_key != seen[0].scores_key
    assert hf.student_key != seen[0].student_key  # its data differ, so the student does


def test_the_context_grid_runs_at_the_peak_rank_whatever_the_columns_are_called(monkeypatch):
    # soft-label students are lora-r16-soft: the context grid must find its column by rank, not by a spelled label
    claims, grids = measurement(monkeypatch, peaked, seed_sd=0.01, objective="soft")
    matched = claims.system_prompt("cat", "matched")
    assert matched.passed is True and len(grids) == 1 + 9  # the rank grid, then the 3 x 3 train x eval cells
    assert "lora-r16-soft trait students" in claims.figures.notes["context grid (cat)"]
