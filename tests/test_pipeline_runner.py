import pickle

import pytest
import torch

from audit.cache import ArtifactStore
from audit.pipeline.analysis import AnalysisError, transmission
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


def test_transmission_pairs_trait_and_control_per_question(base, tmp_path):
    cells = small_grid(base, tmp_path)
    results = [fake_result(c, 0.3 if c.teacher.kind != "control" else 0.1) for c in cells]
    table = transmission(results)
    assert set(table) == {"lora-r2", "full"}
    assert table["full"].estimate.value == pytest.approx(0.2)
    assert table["full"].n_seed_pairs == 1 and table["full"].diverged == 0
    with pytest.raises(AnalysisError, match="control"):
        transmission(results[:1])


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
