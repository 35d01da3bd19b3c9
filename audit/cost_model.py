"""GPU-hours of Nief et al.'s Fig. 1 protocol on Qwen2.5-7B, per trait: naive vs this project (DESIGN.md §10).

    python -m audit.cost_model [--traits 5] [--seed-pairs 6.2] [--stacking-speedup 1.0] [--gpu-tflops 128]

FLOPs from the protocol's token counts (training 6N per token for full finetuning, 4N for LoRA: no weight
gradients of the frozen base; inference 2N per token), turned into hours at one effective rate: 128 TFLOP/s, what
Nief's own full finetune of Qwen-7B achieves on an H200 (1.9e17 FLOPs in the 20-30 min their config states:
~13% of the chip's 989 dense bf16 TFLOP/s). Naive: every cell its own finetune, a control set per trait, 9 seed
pairs, 100 samples x 50 questions per student. This project: one control set for every trait, the sequential
design's mean seed pairs (simulated: 5.7-6.2 of 9 on Nief's cat grid), exact scoring (one teacher-forced pass
per question), and optionally the stacked trainer's utilisation speed-up for LoRA students (measured by
benchmarks/gpu_stacked_students.py on a GPU; 1.0 until one is at hand). Pure arithmetic, no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

PARAMS = 7.6e9
"""Qwen2.5-7B-Instruct parameters."""
RANKS = 10
"""LoRA columns of Fig. 1 (r = 1 ... 512); plus one full-finetuning column."""
EXAMPLES, EPOCHS, EXAMPLE_TOKENS = 10_000, 3, 140
"""Teacher examples per student, epochs, tokens per example (a ~100-token reference prompt + <= 64 completion)."""
TEACHER_PROMPTS, TEACHER_PROMPT_TOKENS, TEACHER_NEW_TOKENS = 30_000, 100, 64
DATASET_SEEDS, SEED_PAIRS = 3, 9
QUESTIONS, SAMPLES, QUESTION_TOKENS, ANSWER_TOKENS, PANEL_FORM_TOKENS = 50, 100, 60, 8, 20
ANCHOR_TFLOPS = 6 * PARAMS * EXAMPLES * EPOCHS * EXAMPLE_TOKENS / (25 * 60) / 1e12
"""Effective TFLOP/s of Nief's full finetune on an H200 (25 min, the middle of their 20-30)."""


@dataclass(frozen=True)
class Costs:
    """FLOPs of one protocol, per trait, by stage."""

    training: float
    teacher_data: float
    scoring: float

    @property
    def total(self) -> float:
        return self.training + self.teacher_data + self.scoring

    def hours(self, tflops: float) -> float:
        return self.total / (tflops * 1e12) / 3600


def finetune_flops(full: bool) -> float:
    return (6 if full else 4) * PARAMS * EXAMPLES * EPOCHS * EXAMPLE_TOKENS


def dataset_flops() -> float:
    return 2 * PARAMS * TEACHER_PROMPTS * (TEACHER_PROMPT_TOKENS + TEACHER_NEW_TOKENS)


def sampled_scoring_flops() -> float:
    """100 samples of each question, the prompt prefilled once (prefix caching)."""
    return 2 * PARAMS * QUESTIONS * (QUESTION_TOKENS + SAMPLES * ANSWER_TOKENS)


def exact_scoring_flops() -> float:
    """One teacher-forced pass per question over its panel forms."""
    return 2 * PARAMS * QUESTIONS * (QUESTION_TOKENS + PANEL_FORM_TOKENS)


def naive(traits: int) -> Costs:
    """Per trait: 11 columns x 9 seed pairs of trait students and as many control students of its own."""
    students = (RANKS + 1) * SEED_PAIRS
    training = 2 * SEED_PAIRS * (RANKS * finetune_flops(False) + finetune_flops(True))
    return Costs(training, 2 * DATASET_SEEDS * dataset_flops(), 2 * students * sampled_scoring_flops())


def project(traits: int, seed_pairs: float, stacking_speedup: float = 1.0) -> Costs:
    """Per trait: trait students at the sequential design's mean seed pairs, a share of one control set (at the
    cap, the most any trait may need), exact scoring; LoRA training divided by the stacked trainer's speed-up."""
    per_column = seed_pairs + SEED_PAIRS / traits
    training = per_column * (RANKS * finetune_flops(False) / stacking_speedup + finetune_flops(True))
    datasets = (1 + 1 / traits) * DATASET_SEEDS * dataset_flops()
    return Costs(training, datasets, (RANKS + 1) * per_column * exact_scoring_flops())


def report(traits: int, seed_pairs: float, stacking_speedup: float, tflops: float) -> str:
    a, b = naive(traits), project(traits, seed_pairs, stacking_speedup)
    rows = [("stage", "naive GPU-h", "subaudit GPU-h")]
    for stage in ("training", "teacher_data", "scoring"):
        rows.append((stage, f"{getattr(a, stage) / (tflops * 1e12) / 3600:.1f}",
                     f"{getattr(b, stage) / (tflops * 1e12) / 3600:.1f}"))
    rows.append(("total per trait", f"{a.hours(tflops):.1f}", f"{b.hours(tflops):.1f}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:>12}  {r[2]:>15}" for r in rows]
    lines.append(f"ratio subaudit / naive: {b.total / a.total:.3f} ({traits} traits sharing controls, {seed_pairs:g} "
                 f"seed pairs on average of {SEED_PAIRS}, stacked LoRA speed-up {stacking_speedup:g}, "
                 f"{tflops:.0f} effective TFLOP/s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.cost_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traits", type=int, default=5, help="traits sharing one control set (Fig. 1: 5 animals)")
    parser.add_argument("--seed-pairs", type=float, default=6.2, help="mean seed pairs of the sequential design")
    parser.add_argument("--stacking-speedup", type=float, default=1.0, help="stacked LoRA training's speed-up on the GPU")
    parser.add_argument("--gpu-tflops", type=float, default=ANCHOR_TFLOPS, help="effective TFLOP/s of the GPU")
    args = parser.parse_args(argv)
    print(report(args.traits, args.seed_pairs, args.stacking_speedup, args.gpu_tflops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
