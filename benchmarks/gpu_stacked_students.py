"""K LoRA students one at a time vs stacked in one pass per step, on a GPU.

    python benchmarks/gpu_stacked_students.py [--students 8] [--steps 20] [--batch 16] [--repeats 3]

Needs only torch, transformers and peft (and this repository, found from the script's own path): the
base is a from-scratch Qwen2 (hidden 256, 4 layers, vocab 4096, random init from its config; nothing is
downloaded) and the data random token rows (a 20-60 token prompt, a 5-40 token completion that carries
the loss). Both paths run the pipeline's code on the device: one at a time is train_student's recipe
(peft model seeded by the student's init seed, audit.pipeline.training.train_steps); stacked is
audit.pipeline.stacked.train_stacked. fp32, TF32 off, so the check can ask for float agreement: every
student's stacked loss must match its solo loss on the first steps (exit status 1 otherwise).

Timing: a warm-up of both paths first (CUDA context, cuBLAS plans), then --repeats alternating runs of
each path, synchronised wall seconds from the first student's init to the last optimiser step; the
speed-up is the mean of the per-repeat ratios with a 95% t interval. Without a GPU it runs on the CPU
and says so.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAD = 0
RANKS = (4, 8, 16, 32)
"""Ranks of the students, cycled (student k has rank RANKS[k % 4] and training seed k)."""
CHECKED_STEPS = 3
"""Steps on which the stacked losses must match the solo ones."""
LOSS_TOLERANCE = 1e-4
"""Relative loss gap allowed on those steps (fp32 on different batch shapes differs at ~1e-6)."""


def build_base(device):
    """A random-init Qwen2 from its config (seeded)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=PAD, bos_token_id=None, eos_token_id=1)
    return Qwen2ForCausalLM(config).float().to(device).eval()


def random_rows(n: int, seed: int = 0) -> list[dict]:
    """Token rows with a prompt (labels -100) and a completion (the loss), of varying lengths."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(2, 4096) for _ in range(rng.randint(20, 60))]
        completion = [rng.randrange(2, 4096) for _ in range(rng.randint(5, 40))]
        rows.append({"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion})
    return rows


def student_configs(k: int, batch: int):
    from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds

    optim = OptimConfig(lr=1e-3, epochs=1, batch_size=batch, warmup_steps=2)
    return [StudentConfig(mode="lora", rank=RANKS[i % len(RANKS)], optim=optim, seeds=TrainSeeds.from_training_seed(i))
            for i in range(k)]


def train_solo(base, rows, config, device) -> list[float]:
    """One student as train_student trains it, on `device`: its per-step losses."""
    import torch
    from peft import get_peft_model

    from audit.pipeline.students import _batches, lora_config
    from audit.pipeline.training import completion_logits, pad_batch, token_cross_entropy_sum, train_steps

    torch.manual_seed(config.seeds.init)
    model = get_peft_model(copy.deepcopy(base), lora_config(config)).train()

    def loss(batch_rows):
        ids, labels, mask = (t.to(device) for t in pad_batch(batch_rows, PAD))
        return token_cross_entropy_sum(*completion_logits(model, ids, labels, mask))

    optim = config.optim
    records = train_steps([p for p in model.parameters() if p.requires_grad], _batches(rows, config), loss,
                          lr=config.lr, warmup_steps=optim.warmup_steps, weight_decay=optim.weight_decay,
                          max_grad_norm=optim.max_grad_norm, grad_accumulation=optim.grad_accumulation)
    return [r.loss for r in records]


def train_all_stacked(base, rows, configs, device) -> list[list[float]]:
    """All students in stacked passes: per student, its per-step losses (the base is left unhooked)."""
    from audit.pipeline.stacked import train_stacked

    run = train_stacked(base, rows, configs, PAD, device)
    run.lora.detach()
    return [[r.loss for r in records] for records in run.records]


def timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - started


T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
"""Two-sided 95% Student t quantiles for 1-10 degrees of freedom (no scipy needed)."""


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t interval (NaN half-width for one value; z beyond 10 df, slightly narrow)."""
    if len(values) < 2:
        return values[0], float("nan")
    t = T_975[len(values) - 2] if len(values) <= len(T_975) + 1 else 1.96
    return statistics.fmean(values), t * statistics.stdev(values) / len(values) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 for the loss check
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if device.type != "cuda":
        print("NOTICE: no CUDA device; running on the CPU (the stacked path's GPU gain is not measured)")
    base = build_base(device)
    rows = random_rows(args.batch * args.steps)
    configs = student_configs(args.students, args.batch)
    real_tokens = len(configs) * sum(len(r["input_ids"]) for r in rows)
    print(f"{name}: random Qwen2 (hidden 256, 4 layers, vocab 4096), K={len(configs)} LoRA students "
          f"(ranks {[c.rank for c in configs]}), batch {args.batch}, {args.steps} steps, fp32, {args.repeats} repeats")

    warm = rows[:2 * args.batch]
    train_solo(base, warm, configs[0], device)
    train_all_stacked(base, warm, configs, device)
    seconds = {"one at a time": [], "stacked": []}
    for _ in range(args.repeats):
        solo, s = timed(lambda: [train_solo(base, rows, c, device) for c in configs], device)
        seconds["one at a time"].append(s)
        stacked, s = timed(lambda: train_all_stacked(base, rows, configs, device), device)
        seconds["stacked"].append(s)

    print(f"\n{'path':<16}{'seconds':>18}{'real tok/s':>12}")
    for path, values in seconds.items():
        mean, half = mean_ci(values)
        print(f"{path:<16}{mean:>10.2f} ± {half:<5.2f}{real_tokens / mean:>12.0f}")
    mean, half = mean_ci([a / b for a, b in zip(seconds["one at a time"], seconds["stacked"])])
    print(f"{'speed-up':<16}{mean:>9.2f}x ± {half:<5.2f}   (95% t CI, n={args.repeats} repeats)")

    gaps = [abs(x - y) / abs(y) for a, b in zip(stacked, solo) for x, y in zip(a[:CHECKED_STEPS], b[:CHECKED_STEPS])]
    gap_all = max(abs(x - y) / abs(y) for a, b in zip(stacked, solo) for x, y in zip(a, b))
    ok = max(gaps) <= LOSS_TOLERANCE
    print(f"\nloss check: largest relative gap stacked vs solo, first {CHECKED_STEPS} steps of {len(configs)} students: "
          f"{max(gaps):.1e} ({'ok' if ok else 'MISMATCH'}, tolerance {LOSS_TOLERANCE:g}); all {args.steps} steps: {gap_all:.1e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
