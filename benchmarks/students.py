"""Student training throughput, measured in one run.

    python benchmarks/students.py optimised [--model smollm2] [--steps 6] [--threads 2]

`optimised`: plain (fp32 forward, random batches) vs optimised (bf16 autocast, length-grouped batches)
training of the same student on the same data: real (non-padding) training tokens per second for a
LoRA r8 and a fully finetuned student, then whether the optimised path trains the same student: the
loss curves and the exact P(cat) of the two students, next to the spread between two plain students
that differ only in their seeds (the yardstick for "within tolerance"). Both paths run our training
loop, which already applies the LM head only from the first completion token; the transformers
Trainer it replaced is not timed here.

    python benchmarks/students.py batched [--model tiny-qwen] [--ranks 4,8,16,32] [--steps 4] [--threads 1]

`batched`: K LoRA students of one dataset (ranks --ranks, training seeds 0..K-1, the LoRA settings of the
model's profile: quick for tiny-qwen, real-cpu for smollm2) trained one at a time with train_student vs
in one stacked pass per step with audit.pipeline.stacked: wall and CPU seconds of each path (loading and
saving included), step seconds (process CPU time by default: on a shared machine wall time measures the
scheduler), real tokens/s, padding, and the speed-up per round (one step of every student: the same
batches in both paths) with its 95% t CI over rounds; then the largest relative gap between a stacked
and a solo student's per-step loss (float noise, not a tolerance to tune). The GPU counterpart, with no
repository data, is benchmarks/gpu_stacked_students.py.

    python benchmarks/students.py soft [--model smollm2] [--precision fp32] [--rounds 2] [--threads 1]

`soft`: one batch of a soft-label LoRA r4 student (the positive profile's student) taken apart, per round: the
student's forward, the teacher's forward, the KL, the backward; then a hard-label step on the same batch, and the
peak memory. Where a soft-label step's time goes (DESIGN.md §9.8).

Data: number-continuation prompts of the pipeline and synthetic completions of 3-10 three-digit numbers
(seeded), in the model's template with its default system prompt, so lengths vary as teacher data does.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 1
"""Untimed first steps (allocator and oneDNN kernel warm-up)."""


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(number prompt, completion of 3-10 numbers) pairs, seeded."""
    from audit.numbers import format_numbers, number_prompts

    rng = random.Random(seed)
    return [(p.text, format_numbers(rng.randrange(100, 1000) for _ in range(rng.randint(3, 10))))
            for p in number_prompts(n, seed)]


def _optim(precision: str, bucket: bool, batch: int, lr: float):
    from audit.pipeline.profiles import OptimConfig

    return OptimConfig(lr=lr, epochs=1, batch_size=batch, warmup_steps=1, precision=precision, bucket_by_length=bucket)


def train_timed(model_path: str, pairs, context, mode: str, precision: str, bucket: bool, seed: int, out: Path,
                batch: int) -> dict:
    """Train one student on `pairs`; tokens/s over the steps after the warm-up."""
    from audit.pipeline.profiles import StudentConfig, TrainSeeds
    from audit.pipeline.students import train_student

    lr = 1e-3 if mode == "lora" else 1e-4
    config = StudentConfig(mode=mode, rank=8 if mode == "lora" else None, optim=_optim(precision, bucket, batch, lr),
                           seeds=TrainSeeds.from_training_seed(seed))
    summary = train_student(model_path, pairs, context, config, out)
    timed = summary.step_seconds[WARMUP_STEPS:]
    real_tokens = summary.tokens * (1 - summary.padding_share)
    per_step_tokens = real_tokens / summary.steps
    return {"summary": summary, "seconds": sum(timed), "tokens_per_s": per_step_tokens * len(timed) / sum(timed),
            "padding": summary.padding_share, "dir": out}


def p_cat(model_path: str, student_dir: Path, mode: str, context, probes) -> tuple[float, list[float]]:
    from audit.engines import open_engine
    from audit.pipeline.students import ADAPTER_DIR, MODEL_DIR
    from audit.scoring import ExactScorer

    path, adapter = (model_path, str(student_dir / ADAPTER_DIR)) if mode == "lora" else (str(student_dir / MODEL_DIR), None)
    with open_engine("hf", path) as engine:
        scores = ExactScorer().score(engine, probes, context, "cat", adapter)
    return scores.mean_p_target, list(scores.p_target)


def optimised(args) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    from audit.models import resolve_model
    from audit.probes import load_probe_set
    from audit.stats import paired_difference

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    context = model.context("template-default")
    probes = load_probe_set("animal")
    pairs = synthetic_pairs(args.batch * (args.steps + WARMUP_STEPS))
    print(f"{model.name}: {len(pairs)} examples, batch {args.batch}, {args.steps} timed steps after {WARMUP_STEPS} "
          f"warm-up, {args.threads} torch threads")
    print(f"{'student':<10}{'path':<28}{'real tok/s':>11}{'padding':>9}{'timed s':>9}{'final loss':>12}{'speed-up':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-students-") as scratch:
        runs = {}
        for mode in ("lora", "full"):
            for name, precision, bucket in (("plain fp32", "fp32", False), ("bf16 + length buckets", "bf16", True)):
                r = train_timed(str(model.path), pairs, context, mode, precision, bucket, 0,
                                Path(scratch) / f"{mode}-{precision}", args.batch)
                runs[(mode, name)] = r
                base = runs[(mode, "plain fp32")]["tokens_per_s"]
                print(f"{mode:<10}{name:<28}{r['tokens_per_s']:>11.1f}{r['padding']:>9.1%}{r['seconds']:>9.1f}"
                      f"{r['summary'].final_loss:>12.4f}{r['tokens_per_s'] / base:>9.2f}x", flush=True)
        # Same student? Compare with two plain students that differ only in their seeds.
        other = train_timed(str(model.path), pairs, context, "lora", "fp32", False, 1, Path(scratch) / "lora-seed1",
                            args.batch)
        plain, fast = runs[("lora", "plain fp32")], runs[("lora", "bf16 + length buckets")]
        curve = lambda r: r["summary"].losses  # noqa: E731
        gap = lambda a, b: max(abs(x - y) / abs(x) for x, y in zip(curve(a), curve(b)))  # noqa: E731
        print(f"\nLoRA r8 loss curves, max relative gap per step: optimised vs plain {gap(plain, fast):.3f}; "
              f"plain seed 1 vs plain seed 0 {gap(plain, other):.3f}")
        scores = {name: p_cat(str(model.path), r["dir"], "lora", context, probes)
                  for name, r in (("plain", plain), ("optimised", fast), ("plain seed 1", other))}
        for name in ("optimised", "plain seed 1"):
            d = paired_difference(scores[name][1], scores["plain"][1], method="bootstrap", n_boot=4000, seed=0)
            print(f"P(cat) {name} {scores[name][0]:.5f} vs plain {scores['plain'][0]:.5f}: difference {d.value:+.5f} "
                  f"[{d.ci_low:+.5f}, {d.ci_high:+.5f}] (n={d.n} questions)")


BATCHED_PROFILES = {"tiny-qwen": "quick", "smollm2": "real-cpu"}
"""Profile whose LoRA settings (precision, buckets, lr, batch) the `batched` section uses per model."""


def _use_cpu_clock() -> None:
    """Time the training steps in process CPU seconds, not wall seconds: on a shared machine (niced, under
    another job's load) wall time measures the scheduler. With one torch thread the two agree when idle."""
    import types

    import audit.pipeline.stacked
    import audit.pipeline.training

    audit.pipeline.training.time = audit.pipeline.stacked.time = types.SimpleNamespace(perf_counter=time.process_time)


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval (the rounds are treated as independent)."""
    from scipy import stats

    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def _batched_configs(args) -> list:
    from dataclasses import replace

    from audit.pipeline.profiles import get_profile

    profile = get_profile(BATCHED_PROFILES[args.model])
    optim = replace(profile.lora, epochs=1, batch_size=args.batch)
    ranks = [int(r) for r in args.ranks.split(",")]
    return [replace(profile.student("lora", rank, seed), optim=optim) for seed, rank in enumerate(ranks)]


def batched(args) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    from audit.models import resolve_model
    from audit.pipeline.stacked import train_students_stacked
    from audit.pipeline.students import train_student

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        _use_cpu_clock()
    model = resolve_model(args.model)
    context = model.context("template-default")
    configs = _batched_configs(args)
    pairs = synthetic_pairs(args.batch * (args.steps + WARMUP_STEPS))
    optim = configs[0].optim
    print(f"{model.name}: K={len(configs)} LoRA students (ranks {args.ranks}), {len(pairs)} examples, batch {args.batch}, "
          f"{optim.precision}{' + length buckets' if optim.bucket_by_length else ''}, {args.steps} timed rounds after "
          f"{WARMUP_STEPS} warm-up, {args.threads} torch threads, step times in {args.clock} seconds")
    with tempfile.TemporaryDirectory(prefix="bench-batched-") as scratch:
        clocks = [(time.perf_counter(), time.process_time())]
        solo = [train_student(str(model.path), pairs, context, c, Path(scratch) / f"solo{k}") for k, c in enumerate(configs)]
        clocks.append((time.perf_counter(), time.process_time()))
        stacked = train_students_stacked(str(model.path), pairs, context, configs,
                                         [Path(scratch) / f"stacked{k}" for k in range(len(configs))])
        clocks.append((time.perf_counter(), time.process_time()))
    (wall_solo, cpu_solo), (wall_stacked, cpu_stacked) = ((b[0] - a[0], b[1] - a[1]) for a, b in zip(clocks, clocks[1:]))
    # A round: one step of every student (the same batches in both paths); stacked step_seconds are 1/K shares.
    rounds = {name: [sum(s.step_seconds[i] for s in runs) for i in range(WARMUP_STEPS, runs[0].steps)]
              for name, runs in (("one at a time", solo), ("stacked", stacked))}
    real_tokens = sum(s.tokens * (1 - s.padding_share) / s.steps for s in solo) * args.steps
    padding = {name: 1 - sum(s.tokens * (1 - s.padding_share) for s in runs) / sum(s.tokens for s in runs)
               for name, runs in (("one at a time", solo), ("stacked", stacked))}
    print(f"{'path':<16}{'wall s':>8}{'cpu s':>8}{'timed s':>9}{'real tok/s':>12}{'padding':>9}"
          f"  (whole call: wall, cpu; timed rounds: {args.clock})")
    for name, wall, cpu in (("one at a time", wall_solo, cpu_solo), ("stacked", wall_stacked, cpu_stacked)):
        print(f"{name:<16}{wall:>8.1f}{cpu:>8.1f}{sum(rounds[name]):>9.2f}{real_tokens / sum(rounds[name]):>12.1f}"
              f"{padding[name]:>9.1%}")
    mean, low, high = _mean_ci([a / b for a, b in zip(rounds["one at a time"], rounds["stacked"])])
    print(f"speed-up per round {mean:.2f}x [95% CI {low:.2f}, {high:.2f}] (n={args.steps} rounds); whole call: "
          f"wall {wall_solo / wall_stacked:.2f}x, cpu {cpu_solo / cpu_stacked:.2f}x")
    gap = max(abs(x - y) / abs(y) for a, b in zip(stacked, solo) for x, y in zip(a.losses, b.losses))
    print(f"largest relative gap, stacked vs solo per-step loss: {gap:.1e} ({len(configs)} students x {solo[0].steps} steps)")


def soft(args) -> None:
    import resource

    import torch
    from transformers.utils import logging as hf_logging

    from audit.models import resolve_model
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.students import _load_model, _prepare_student, load_tokenizer, tokenize_examples
    from audit.pipeline.training import completion_logits, forward_precision, pad_batch, token_cross_entropy_sum, token_kl_sum

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    context = model.context("template-default")
    config = get_profile("positive").student("lora", 4, 0)
    tokenizer, pad_id = load_tokenizer(str(model.path))
    rows = tokenize_examples(tokenizer, synthetic_pairs(args.batch), context, context)
    teacher = _load_model(str(model.path)).eval()
    student = _prepare_student(str(model.path), config).train()
    view, teacher_view = pad_batch(rows, pad_id), pad_batch(rows, pad_id, "teacher_")
    bf16 = args.precision == "bf16"
    print(f"{model.name}: batch {tuple(view[0].shape)} tokens, {int((view[1] != -100).sum())} completion tokens, "
          f"{args.precision}, {args.threads} torch threads")
    print(f"{'round':<7}{'student fwd':>12}{'teacher fwd':>12}{'KL':>8}{'backward':>10}{'hard step':>11}")
    for k in range(args.rounds):
        clock = [time.perf_counter()]
        with forward_precision(bf16):
            logits, labels = completion_logits(student, *view)
        clock.append(time.perf_counter())
        with torch.no_grad(), forward_precision(bf16):
            t_logits, t_labels = completion_logits(teacher, *teacher_view)
        clock.append(time.perf_counter())
        loss = token_kl_sum(logits, labels, t_logits, t_labels)
        clock.append(time.perf_counter())
        loss.backward()
        clock.append(time.perf_counter())
        student.zero_grad()
        with forward_precision(bf16):
            hard = token_cross_entropy_sum(*completion_logits(student, *view))
        hard.backward()
        student.zero_grad()
        clock.append(time.perf_counter())
        print(f"{k:<7}" + "".join(f"{b - a:>{w}.2f}" for (a, b), w in zip(zip(clock, clock[1:]), (12, 12, 8, 10, 11))))
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="section", required=True)
    opt = sub.add_parser("optimised", help="plain vs optimised training of one student")
    opt.add_argument("--model", default="smollm2")
    opt.add_argument("--steps", type=int, default=6)
    opt.add_argument("--batch", type=int, default=16)
    opt.add_argument("--threads", type=int, default=2)
    bat = sub.add_parser("batched", help="K LoRA students one at a time vs stacked in one pass")
    bat.add_argument("--model", default="tiny-qwen", choices=sorted(BATCHED_PROFILES))
    bat.add_argument("--ranks", default="4,8,16,32")
    bat.add_argument("--steps", type=int, default=4)
    bat.add_argument("--batch", type=int, default=16)
    bat.add_argument("--threads", type=int, default=1)
    bat.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                     help="step times in process CPU seconds (a shared machine) or wall seconds (a quiet one)")
    sof = sub.add_parser("soft", help="where a soft-label student's step spends its time")
    sof.add_argument("--model", default="smollm2")
    sof.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    sof.add_argument("--rounds", type=int, default=2)
    sof.add_argument("--batch", type=int, default=16)
    sof.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    {"optimised": optimised, "batched": batched, "soft": soft}[args.section](args)


if __name__ == "__main__":
    main()
