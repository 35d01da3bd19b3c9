import importlib.util
import pickle

import pytest
import torch

from audit.cache import ArtifactStore
from audit.pipeline.analysis import AnalysisError, paired_cells, student_table
from audit.pipeline.runner import CellResult, run_grid
from audit.scoring import TraitScores
from tests.engine_support import build_random_qwen
from tests.pipeline_support import PROBES, small_grid


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    return build_random_qwen(tmp_path_factory.mktemp("base") / "m")


def test_grid_pairs_every_student_with_a_control_and_cells_are_picklable(base, tmp_path):
    cells = small_grid(base, tmp_path)
    assert [c.label for c in cells] == ["sys-cat/d0/t0/lora-r2", "control/d0/t0/lora-r2",
                                        "sys-cat/d0/t0/full", "control/d0/t0/full"]
    assert pickle.loads(pickle.dumps(cells)) == cells
    assert len({c.scores_key for c in cells}) == 4 and len({c.dataset.key for c in cells}) == 2
    # trait and control datasets share prompts and sampling seeds
    assert cells[0].student_key != cells[1].student_key


def test_prefilled_profile_scores_after_the_answer_prefix_under_its_own_key(base, tmp_path):
    from dataclasses import replace

    from audit.chat import qwen_context
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.runner import ModelRef, subliminal_grid

    def grid(prefill=False, **changes):
        profile = replace(get_profile("tiny"), **changes)
        return subliminal_grid(profile, ModelRef(str(base), "random-qwen"), PROBES, "test-animal", "cat", qwen_context(),
                               prefill=prefill)

    plain, prefilled, sampled = grid(), grid(True), grid(True, scorer="sampled", samples_per_question=7)
    assert [dict(c.scorer_options) for c in plain] == [{}] * len(plain)
    assert all(dict(c.scorer_options) == {"prefill": True} for c in prefilled)
    assert all(dict(c.scorer_options) == {"n": 7, "prefill": True} for c in sampled)
    # the same students, scored anew
    assert [c.student_key for c in prefilled] == [c.student_key for c in plain]
    assert not {c.scores_key for c in prefilled} & {c.scores_key for c in plain}


def fake_result(cell, p):
    scores = TraitScores("exact", "cat", PROBES.names, PROBES.questions, tuple((p + 0.01 * q, 0.2, 0.1) for q in range(3)))
    return CellResult(cell, scores, {"diverged": False})


def test_run_grid_computes_only_missing_cells(base, tmp_path):
    cells = small_grid(base, tmp_path)
    calls = []

    def run(cell, root):
        calls.append(cell.label)
        store = ArtifactStore(root)
        store.get_or_build("scores", cell.scores_key, lambda d: (d / "x").write_text("1") and None)
        return fake_result(cell, 0.1)

    run_grid(cells[:2], tmp_path, progress=False, run=run)
    calls.clear()
    results = run_grid(cells, tmp_path, progress=False, run=run)
    # missing cells first (computed), then the cached ones (loaded)
    assert calls == [c.label for c in cells[2:]] + [c.label for c in cells[:2]]
    assert [r.cell for r in results] == cells


def test_paired_cells_pair_trait_and_control_per_question(base, tmp_path):
    cells = small_grid(base, tmp_path)
    results = [fake_result(c, 0.3 if c.teacher.kind != "control" else 0.1) for c in cells]
    table = paired_cells(results)
    assert set(table) == {"lora-r2", "full"}
    assert table["full"].estimate().value == pytest.approx(0.2)
    assert table["full"].n_seed_pairs == 1 and table["full"].diverged_pairs == 0
    with pytest.raises(AnalysisError, match="control"):
        paired_cells(results[:1])


def test_student_table_has_a_row_per_student_with_fifth_means_and_its_statistic(base, tmp_path):
    cells = small_grid(base, tmp_path)
    healthy = {"steps": 10, "losses": [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2], "heldout_kl_before": 0.0,
               "heldout_kl_after": 0.25, "grad_norm_max": 1.5, "padding_share": 0.026, "seconds": 12.0}
    results = [fake_result(cells[0], 0.3), CellResult(cells[1], fake_result(cells[1], 0.1).scores, healthy),
               CellResult(cells[2], fake_result(cells[2], 0.1).scores, {**healthy, "losses": [1.0] * 5 + [9.0] * 5})]
    rows = student_table(results, "probability").splitlines()
    assert len(rows) == 2 + 3
    assert rows[3] == ("| control/d0/t0/lora-r2 | 10 | 1.000 -> 0.200 | 0.0000 -> 0.2500 | 1.50 | 2.6% | 12 | no "
                       "| 0.1100 |")
    assert rows[2] == "| sys-cat/d0/t0/lora-r2 | - | - | - -> - | - | - | - | no | 0.3100 |"  # nothing recorded
    assert rows[4].endswith("| yes | 0.1100 |")  # last fifth 9.0 > 1.5 x first fifth


@pytest.mark.slow
def test_end_to_end_grid_is_cached_and_reproducible(base, tmp_path):
    cells = small_grid(base, tmp_path)
    first = run_grid(cells, tmp_path, progress=False)
    assert all(r.stage_seconds.get("student", 0) > 0 for r in first)
    again = run_grid(cells, tmp_path, progress=False)
    assert all(r.stage_seconds == {} for r in again)
    assert [r.scores for r in again] == [r.scores for r in first]
    assert all(0 <= p <= 1 for r in first for p in r.scores.p_target)
    assert first[0].training["seeds"]["data_order"] != first[0].training["seeds"]["init"]


def test_the_grid_reading_is_measured_on_the_base_once_then_read_from_the_store(base, tmp_path, monkeypatch):
    import dataclasses

    import audit.engines
    from audit.chat import qwen_context
    from audit.engines.hf import HfEngine
    from audit.pipeline.reading import base_reading
    from audit.pipeline.runner import ModelRef
    from audit.scoring import measure_reading

    probes = PROBES.model_copy(update={"answer_prefix": "My favorite animal is the"})
    ref, context = ModelRef(str(base), "random-qwen"), qwen_context()
    first = base_reading(ref, probes, context, store_root=tmp_path)
    want = measure_reading(HfEngine(base), probes, context)
    assert first.slot == want.slot and first.n == len(probes.questions)
    assert first.one_word_mass == pytest.approx(want.one_word_mass, rel=1e-4)
    assert first.slot_mass == pytest.approx(want.slot_mass, rel=1e-4)

    def no_engine(*_args, **_kwargs):
        raise AssertionError("a stored reading must not open an engine")

    monkeypatch.setattr(audit.engines, "open_engine", no_engine)
    assert base_reading(ref, probes, context, store_root=tmp_path) == first
    monkeypatch.undo()
    declared = base_reading(ref, probes, context, declared="one-word", store_root=tmp_path / "other")
    assert dataclasses.replace(declared, declared="auto", slot=first.slot) == first  # same rates, fixed choice


def test_one_control_set_serves_every_trait_and_probe_set(base):
    """Controls do not depend on the trait: the datasets, students and scores of a 3-trait grid's controls are one
    set, and a control dataset does not depend on the probe set; trait teachers stay apart."""
    from dataclasses import replace

    from audit.chat import qwen_context
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.runner import ModelRef, subliminal_grid

    profile = get_profile("tiny")
    model = ModelRef(str(base), "random-qwen")
    grids = {t: subliminal_grid(profile, model, PROBES, "test-animal", t, qwen_context()) for t in PROBES.names}
    cells = [c for grid in grids.values() for c in grid]
    controls = [c for c in cells if c.teacher.kind == "control"]
    traits = [c for c in cells if c.teacher.kind != "control"]
    columns = len(profile.students(0))
    assert len(traits) == len(controls) == 3 * columns
    assert len({c.dataset.key for c in controls}) == 1 and len({c.dataset.key for c in traits}) == 3
    assert len({c.student_key for c in controls}) == columns and len({c.scores_key for c in controls}) == columns
    assert len({c.scores_key for c in traits}) == 3 * columns
    # computed once: 4 datasets, not 6; 4 x columns students and scoring passes, not 6 x columns
    elsewhere = subliminal_grid(profile, model, PROBES, "other-set", "cat", qwen_context())
    assert {c.dataset.key for c in elsewhere if c.teacher.kind == "control"} == {controls[0].dataset.key}
    assert {c.dataset.key for c in elsewhere if c.teacher.kind != "control"}.isdisjoint(c.dataset.key for c in traits)
    assert replace(controls[0].dataset, probe_set="x").key == controls[0].dataset.key


def test_a_stacked_grid_gives_the_one_by_one_numbers(base, tmp_path):
    """run_grid(stack=True), the GPU hosts' default, trains the LoRA students of each dataset in one pass; the scores
    equal those of students trained one by one (float tolerance), and the full-FT students train as before."""
    from audit.pipeline.runner import stack_groups

    def grid(root):
        return small_grid(base, root, ranks=(2, 4))

    solo = run_grid(grid(tmp_path / "solo"), tmp_path / "solo", progress=False, stack=False)
    cells = grid(tmp_path / "stacked")
    groups = stack_groups(cells, ArtifactStore(tmp_path / "stacked"))
    assert sorted(len(g) for g in groups) == [2, 2]  # per teacher dataset: the r2 and r4 students
    stacked = run_grid(cells, tmp_path / "stacked", progress=False, stack=True)
    manifests = [ArtifactStore(tmp_path / "stacked").manifest("student", c.student_key) for c in cells]
    assert [m["meta"].get("stacked") for m in manifests] == [2, 2, 2, 2, None, None]
    for a, b in zip(stacked, solo):
        assert a.cell.label == b.cell.label
        assert a.scores.p_target == pytest.approx(b.scores.p_target, abs=1e-5)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_a_vllm_grid_scores_its_lora_students_in_one_engine_with_the_hf_numbers(base, tmp_path, monkeypatch):
    """With engine vllm the grid's LoRA students train first, then one multi-LoRA engine scores them all (one engine
    start instead of one per cell); their scores are the HF engine's (fp32, 1e-3), and a second run opens nothing."""
    import audit.engines
    from audit.pipeline.runner import scoring_groups

    lora = [c for c in small_grid(base, tmp_path / "vllm", ranks=(2, 4), engine="vllm") if c.student.mode == "lora"]
    assert [len(g) for g in scoring_groups(lora, ArtifactStore(tmp_path / "vllm"))] == [4]
    opened, real_open = [], audit.engines.open_engine

    def counting_open(kind, *args, **kwargs):
        opened.append((kind, len(kwargs.get("adapters", ()))))
        return real_open(kind, *args, **kwargs)

    monkeypatch.setattr(audit.engines, "open_engine", counting_open)
    scored = run_grid(lora, tmp_path / "vllm", progress=False)
    assert opened == [("vllm", 4)]
    assert all(r.stage_seconds.get("student", 0) > 0 for r in scored)
    again = run_grid(lora, tmp_path / "vllm", progress=False)
    assert opened == [("vllm", 4)] and [r.scores for r in again] == [r.scores for r in scored]

    hf = [c for c in small_grid(base, tmp_path / "hf", ranks=(2, 4)) if c.student.mode == "lora"]
    for a, b in zip(scored, run_grid(hf, tmp_path / "hf", progress=False)):
        assert a.cell.label == b.cell.label
        assert a.scores.p_target == pytest.approx(b.scores.p_target, abs=1e-3)
