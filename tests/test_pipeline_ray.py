"""The grid on a local Ray cluster (2 CPUs): the same numbers as the local runner, with a worker killed mid-cell;
and the bad inputs of --executor ray, each one line before any work."""

import functools

import pytest
import torch

from audit.pipeline.executors import ExecutorError, RayExecutor
from audit.pipeline.runner import run_grid
from tests.engine_support import build_random_qwen
from tests.pipeline_support import run_cell_killed_once, small_grid

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    return build_random_qwen(tmp_path_factory.mktemp("base") / "m")


@pytest.fixture
def cluster():
    yield RayExecutor(num_cpus=2)
    ray.shutdown()


def test_a_killed_worker_is_retried_and_the_run_ends_with_the_local_numbers(base, tmp_path, cluster):
    local = run_grid(small_grid(base, tmp_path / "local"), tmp_path / "local", progress=False)
    marker = tmp_path / "killed"
    cells = small_grid(base, tmp_path / "ray")
    distributed = run_grid(cells, tmp_path / "ray", progress=False, executor=cluster,
                           run=functools.partial(run_cell_killed_once, marker=str(marker)))
    assert marker.read_text() in {c.label for c in cells}  # a worker did die mid-cell
    assert [r.scores for r in distributed] == [r.scores for r in local]
    assert [r.training["final_loss"] for r in distributed] == [r.training["final_loss"] for r in local]
    assert not list((tmp_path / "ray").glob("*/.*.tmp"))  # the killed cell left nothing half-written


def test_an_address_that_does_not_answer_and_a_store_no_node_sees_are_one_line(tmp_path, cluster, monkeypatch):
    with pytest.raises(ExecutorError, match=r"--ray-address 127.0.0.1:9: no Ray cluster answers there; start one with "
                                            r"`ray start --head`"):
        RayExecutor("127.0.0.1:9").connect(tmp_path)
    cluster.connect(tmp_path)  # a local cluster sees the local store
    monkeypatch.setattr("audit.pipeline.executors._sees", lambda path: False)
    with pytest.raises(ExecutorError, match=r"the artefact store .* is not visible on node .*; put it on a path every node "
                                            "mounts"):
        RayExecutor.check_shared_store(tmp_path)
