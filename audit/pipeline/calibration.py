"""What each stage of a cell costs on this machine, measured by running a few real steps of the model here.

`calibrate` times, with one torch thread (as grid cells run): loading the model, sampling a chunk of teacher
prompts, a few optimiser steps of a LoRA student at the grid's smallest and largest rank and of a fully
finetuned one (with the profile's batch size, precision and objective, on number completions of the profile's
length), and one exact scoring pass over the probe questions. The result is cached per model, profile shape and
machine, so only the first plan of a configuration pays for it (seconds on tiny-qwen, ~5 min on
SmolLM2-135M, 7 with soft labels in fp32). `audit.plan` turns it into an estimate of the grid's wall time.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from audit.cache import ArtifactStore, content_key

KIND = "calibration"
CALIBRATION_FILE = "calibration.json"
TIMED_STEPS = 3
"""Optimiser steps timed per student kind (after one untimed warm-up step)."""
GENERATED_PROMPTS = 8
"""Teacher prompts sampled to time generation."""


@dataclass(frozen=True)
class StageCosts:
    """Seconds per unit of work of each stage, on this machine with one torch thread."""

    model_load: float
    """Loading the model and tokenizer (each stage of a cell does it once)."""
    generate_per_prompt: float
    """Sampling one teacher completion of up to the profile's max tokens."""
    acceptance: float
    """Share of the sampled completions the number filter accepted (at least 0.05)."""
    lora_step: dict[int, float]
    """Seconds per optimiser step of a LoRA student, by rank (the grid's smallest and largest)."""
    full_step: float
    """Seconds per optimiser step of a fully finetuned student (0 when the grid has none)."""
    student_overhead: dict[str, float]
    """Seconds of a student's training outside its steps, by mode (lora, full): loading the student and its
    teacher, tokenizing, the held-out KL before and after (on the profile's held-out size), saving."""
    scoring_pass: float
    """One exact scoring pass: every probe question, every panel form."""
    example_tokens: float
    """Mean tokens of one training example (prompt and completion)."""
    process_start: float
    """Starting a cell's process (Python, torch, transformers, peft imports)."""

    def lora(self, rank: int) -> float:
        """Step seconds at `rank`, linear between the measured ranks (LoRA's cost grows with r)."""
        (r0, s0), (r1, s1) = min(self.lora_step.items()), max(self.lora_step.items())
        if r1 == r0:
            return s0
        return s0 + (s1 - s0) * (rank - r0) / (r1 - r0)

    def to_dict(self) -> dict:
        return {**asdict(self), "lora_step": {str(k): v for k, v in self.lora_step.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "StageCosts":
        return cls(**{**data, "lora_step": {int(k): v for k, v in data["lora_step"].items()}})


def machine() -> dict:
    """What the measured seconds depend on besides the model and the profile (no torch import: a warm plan reads
    its costs without loading it)."""
    import importlib.metadata
    import shutil

    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "torch": importlib.metadata.version("torch"), "gpu": bool(shutil.which("nvidia-smi"))}


def _number_completion(rng: random.Random) -> str:
    return ", ".join(str(rng.randint(100, 999)) for _ in range(rng.randint(5, 10)))


def _time_steps(model_path: str, profile, config, context, pairs, teacher) -> tuple[float, float]:
    """(median seconds of TIMED_STEPS optimiser steps after an untimed one, seconds outside the steps) of one
    student trained as a cell trains it: with its teacher view and the profile's held-out examples."""
    import tempfile

    from audit.pipeline.students import train_student

    def repeat(n: int) -> list:
        return (pairs * (n // len(pairs) + 1))[:n]

    n = config.optim.batch_size * (TIMED_STEPS + 1)
    config = replace(config, optim=replace(config.optim, epochs=1))  # TIMED_STEPS + 1 steps, whatever the profile's epochs
    with tempfile.TemporaryDirectory() as out:
        summary = train_student(model_path, repeat(n), context, config, Path(out), teacher,
                                heldout=repeat(profile.data.n_heldout) if profile.data.n_heldout else ())
    return statistics.median(summary.step_seconds[1:]), summary.seconds - sum(summary.step_seconds)


def measure(model, profile, probes, context, slot: bool, progress: bool = False) -> StageCosts:
    """Time each stage once (see the module docstring); `model` is a ModelRef, `context` the training context;
    `progress` shows a bar over the stages."""
    import subprocess
    import sys

    from tqdm.auto import tqdm

    from audit.engines import GenerateRequest, open_engine
    from audit.numbers import NUMBER_CHARSET, filter_completions, number_prompts
    from audit.pipeline.executors import torch_threads
    from audit.pipeline.students import TeacherView, _load_model, load_tokenizer
    from audit.scoring import ExactScorer

    ranks = sorted({min(profile.ranks), max(profile.ranks)})
    bar = tqdm(total=4 + len(ranks) + profile.include_full, desc=f"timing stage costs ({profile.name}, once)",
               unit="stage", disable=not progress)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft"], check=True)
    process_start = time.perf_counter() - start
    bar.update()
    rng = random.Random(0)
    prompts = number_prompts(GENERATED_PROMPTS, seed=12345)
    pairs = [(p.text, _number_completion(rng)) for p in prompts]
    with torch_threads(1):
        start = time.perf_counter()
        _load_model(model.path)
        model_load = time.perf_counter() - start
        bar.update()
        engine = open_engine("hf", model.path, dtype=profile.data.dtype)
        try:
            requests = [GenerateRequest(context.render_prompt(p.text), temperature=profile.data.temperature,
                                        max_tokens=profile.data.max_tokens, seed=i,
                                        charset=NUMBER_CHARSET if profile.data.constrained else None)
                        for i, p in enumerate(prompts)]
            start = time.perf_counter()
            texts = [r.completions[0].text for r in engine.generate(requests)]
            generate = (time.perf_counter() - start) / len(prompts)
            bar.update()
            start = time.perf_counter()
            ExactScorer(prefill=slot).score(engine, probes, context, probes.names[0])
            scoring = time.perf_counter() - start
            bar.update()
        finally:
            engine.close()
        verdicts, _ = filter_completions(texts)
        acceptance = max(0.05, sum(v.accepted for v in verdicts) / len(verdicts))
        tokenizer, _ = load_tokenizer(model.path)
        example_tokens = statistics.mean(len(tokenizer("".join(context.render_example(p, c)))["input_ids"])
                                         for p, c in pairs)
        teacher = TeacherView(model.path, context)  # a cell always passes its teacher's view
        seed = profile.training_seeds[0]

        def timed(mode: str, rank: int | None) -> tuple[float, float]:
            result = _time_steps(model.path, profile, profile.student(mode, rank, seed), context, pairs, teacher)
            bar.update()
            return result

        lora = {r: timed("lora", r) for r in ranks}
        full = timed("full", None) if profile.include_full else (0.0, 0.0)
    bar.close()
    overhead = {"lora": statistics.mean(o for _, o in lora.values()), "full": full[1]}
    return StageCosts(model_load, generate, acceptance, {r: step for r, (step, _) in lora.items()}, full[0], overhead,
                      scoring, example_tokens, process_start)


def calibration_key(model, profile, probes, context, slot: bool) -> str:
    """What the measured seconds depend on: the model, the shapes the profile trains and samples, the machine."""
    shape = {"data": profile.data, "lora": profile.lora, "full": profile.full, "include_full": profile.include_full,
             "ranks": (min(profile.ranks), max(profile.ranks)), "objective": profile.objective}
    return content_key({"model": model.content_hash, "shape": shape, "questions": len(probes.questions),
                        "forms": sum(len(e.surface_forms) for e in probes.panel), "slot": slot,
                        "template": content_key(context.template.source), "machine": machine(), "v": 4})


def calibrate(model, profile, probes, context, slot: bool, store_root: Path | None = None,
              progress: bool = False) -> StageCosts:
    """The stage costs of this model and profile here, measured once (with a bar over the stages when `progress`) and
    cached."""
    def build(out: Path) -> dict:
        costs = measure(model, profile, probes, context, slot, progress)
        (out / CALIBRATION_FILE).write_text(json.dumps(costs.to_dict(), indent=2, sort_keys=True))
        return {"lora_step": costs.to_dict()["lora_step"], "full_step": costs.full_step}

    store = ArtifactStore(store_root)
    folder = store.get_or_build(KIND, calibration_key(model, profile, probes, context, slot), build)
    return StageCosts.from_dict(json.loads((folder / CALIBRATION_FILE).read_text()))
