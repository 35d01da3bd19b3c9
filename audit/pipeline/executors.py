"""Where a grid's missing cells compute: in this process, in local worker processes, or as Ray tasks.

An executor takes the cells to compute and calls back as each finishes; `run_grid` owns the cache check and the
progress bar. Every executor writes through the same content-addressed store, whose atomic entries make a cell
killed at any moment safe to run again: the Ray executor retries a cell whose worker died, and an interrupted
run resumes from the store like a local one.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from audit.errors import UsageError

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3
"""Times Ray reruns a cell whose worker process died (killed, out of memory, node lost)."""
RAY_CONNECT_TIMEOUT_S = 5.0
PIPELINE_THREADS = 1
"""Torch threads while cells compute. One: float reduction order depends on the thread count (cached
artefacts must not), and one thread per cell is the faster use of a small box (DESIGN.md §9.5)."""

RunCell = Callable[[object, "str | Path | None"], object]
Done = Callable[[int, object], None]


class ExecutorError(UsageError):
    """An executor cannot start (one line, naming the fix)."""


class Executor(Protocol):
    def run(self, run: RunCell, cells: Sequence[object], indices: Sequence[int], store_root, done: Done) -> None:
        """Compute `cells[i]` for each i in `indices` with `run(cell, store_root)`, calling `done(i, result)`."""


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


def _worker_init() -> None:
    """A cell process: one torch thread (PIPELINE_THREADS), quiet transformers."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(PIPELINE_THREADS)
    hf_logging.disable_progress_bar()


@dataclass(frozen=True)
class LocalExecutor:
    """In this process (workers = 1), or in that many spawned processes with one torch thread each."""

    workers: int = 1

    def run(self, run, cells, indices, store_root, done) -> None:
        if self.workers <= 1 or len(indices) <= 1:
            for i in indices:
                done(i, run(cells[i], store_root))
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # spawn, not fork: a forked child of a process whose OpenMP pool is running can hang. One cell per
        # process: freed models go back to the allocator, not the OS, so a long-lived worker grows by a model
        # per cell (DESIGN.md §9.5); a fresh process costs seconds.
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                 max_tasks_per_child=1) as pool:
            pending = {pool.submit(run, cells[i], store_root): i for i in indices}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done(pending.pop(future), future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # finished cells are in the store already
                raise


def _ray_cell(run, cell, store_root):
    _worker_init()
    return run(cell, store_root)


def _answers(address: str) -> bool:
    """Whether something listens at a Ray GCS address host:port (a quick check before ray.init waits on it)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def _sees(path: str) -> bool:
    return Path(path).is_file()


@dataclass(frozen=True)
class RayExecutor:
    """Cells as Ray tasks: one CPU each (and one GPU each where the cluster has GPUs), retried when a worker dies."""

    address: str | None = None
    """host:port of a running cluster's head (`ray start --head`); None starts a local cluster in this process."""
    num_cpus: int | None = None
    """CPUs of the local cluster (None: all); ignored when joining one."""

    def connect(self, store_root) -> None:
        """Join or start the cluster, then check every node sees the artefact store; ExecutorError otherwise."""
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'subaudit[ray]' (or drop --executor ray)") from None
        if ray.is_initialized():
            return
        if self.address and self.address != "auto" and not self.address.startswith("ray://") and not _answers(self.address):
            raise ExecutorError(f"--ray-address {self.address}: no Ray cluster answers there; start one with "
                                "`ray start --head` (or leave --ray-address out for a local cluster)")
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
                            "SUBAUDIT_CACHE": str(store_root) if store_root else os.environ.get("SUBAUDIT_CACHE", "")}}
        try:
            if self.address:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            else:  # a short session folder: Ray's sockets live there, and a long $TMPDIR overflows AF_UNIX's 107 bytes
                ray.init(num_cpus=self.num_cpus, runtime_env=env, log_to_driver=False, include_dashboard=False,
                         _temp_dir=f"/tmp/subaudit-ray-{os.getuid()}")
        except (ConnectionError, RuntimeError) as exc:
            raise ExecutorError(f"--ray-address {self.address}: {' '.join(str(exc).split())[:200]}; check the address "
                                "or start the cluster with `ray start --head`") from None
        self.check_shared_store(store_root)

    @staticmethod
    def check_shared_store(store_root) -> None:
        """Every alive node must see the store: a file written here is looked for from a task on each node."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from audit.cache import ArtifactStore

        root = ArtifactStore(Path(store_root) if store_root else None).root
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".ray-probe-{uuid.uuid4().hex}"
        probe.write_text("subaudit")
        try:
            sees = ray.remote(num_cpus=0)(_sees)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            checks = {n["NodeManagerAddress"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["NodeID"], soft=False)).remote(str(probe)) for n in nodes}
            blind = [node for node, ref in checks.items() if not ray.get(ref)]
        finally:
            probe.unlink(missing_ok=True)
        if blind:
            raise ExecutorError(f"the artefact store {root} is not visible on node {blind[0]}; put it on a path every "
                                "node mounts (set SUBAUDIT_CACHE to it) before --executor ray")

    def run(self, run, cells, indices, store_root, done) -> None:
        import ray

        self.connect(store_root)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RAY_RETRIES)(_ray_cell)
        pending = {task.remote(run, cells[i], store_root): i for i in indices}
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    done(pending.pop(ref), ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)  # finished cells are in the store already
            raise


def make_executor(kind: str, workers: int = 1, address: str | None = None) -> Executor:
    """The executor of `kind` ("local" or "ray")."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise ExecutorError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
