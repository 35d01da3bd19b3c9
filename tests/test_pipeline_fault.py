"""Fault test: a grid run SIGKILLed while a student trains resumes, retrains only that cell (and the cells
it never reached), and ends with results identical to an uninterrupted run with the same seeds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.cache import ArtifactStore
from tests.engine_support import build_random_qwen

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
import torch
torch.set_num_threads(1)
from transformers.utils import logging
logging.disable_progress_bar()
import audit.pipeline.runner as runner
from audit.pipeline.runner import run_grid
from tests.pipeline_support import small_grid

base, store, log, kill_at, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
real_train, calls = runner.train_student, []

def train(*args, **kwargs):
    calls.append(1)
    with open(log, "a") as f:
        f.write(f"start {len(calls)}\n")
    summary = real_train(*args, **kwargs)
    if len(calls) == kill_at:
        with open(log, "a") as f:
            f.write("trained\n")
        time.sleep(600)  # the parent kills us before the student artefact is committed
    return summary

runner.train_student = train

# Hold the kill_at-th student after its first optimiser step, so the kill lands mid-training however fast
# the machine is (a tiny student trains in well under a second).
import audit.pipeline.training as training
real_schedule = training.linear_warmup_decay

def schedule(step, total, warmup):
    if len(calls) == kill_at and step == 1:
        with open(log, "a") as f:
            f.write("mid-training\n")
        time.sleep(600)
    return real_schedule(step, total, warmup)

training.linear_warmup_decay = schedule
results = run_grid(small_grid(base, store), store, progress=False)
json.dump({"trained": len(calls),
           "cached": [r.stage_seconds == {} for r in results],
           "scores": [r.scores.to_dict() for r in results],
           "training": [{k: v for k, v in r.training.items() if k not in ("seconds", "step_seconds")} for r in results]},
          open(out, "w"))
'''


def run_child(base, store, log, kill_at, out):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(base), str(store), str(log), str(kill_at), str(out)],
                            cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc, timeout=300):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.slow
def test_sigkill_during_training_resumes_and_matches_uninterrupted_run(tmp_path):
    base = build_random_qwen(tmp_path / "base")
    log = tmp_path / "kill.log"
    killed = run_child(base, tmp_path / "store", log, kill_at=2, out=tmp_path / "unused.json")
    deadline = time.time() + 240
    while "mid-training" not in (log.read_text() if log.exists() else ""):
        assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the second student never reached its second step"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert "trained" not in log.read_text(), "the kill landed after training; it must land during it"

    store = ArtifactStore(tmp_path / "store")
    assert len([p for p in (tmp_path / "store" / "student").iterdir() if not p.name.startswith(".")]) == 1
    assert all(store.get("student", p.name) for p in (tmp_path / "store" / "student").iterdir() if not p.name.startswith("."))

    finish(run_child(base, tmp_path / "store", tmp_path / "resume.log", 0, tmp_path / "resumed.json"))
    finish(run_child(base, tmp_path / "clean", tmp_path / "clean.log", 0, tmp_path / "clean.json"))
    resumed, clean = json.loads((tmp_path / "resumed.json").read_text()), json.loads((tmp_path / "clean.json").read_text())
    assert clean["trained"] == 4
    assert resumed["trained"] == 3  # the killed cell and the two it never reached; cell 0 is reused
    assert resumed["cached"] == [True, False, False, False]
    assert resumed["scores"] == clean["scores"]
    assert resumed["training"] == clean["training"]
