"""The GPU check: run it whenever a GPU machine is at hand (one short script; torch, transformers and peft only).

    python benchmarks/gpu_check.py [--out gpu_check.json]        # on the GPU machine
    python benchmarks/gpu_check.py --smoke                        # on a CPU, small shapes: that the script runs

1. Stacked vs one-by-one LoRA training (benchmarks/gpu_stacked_students.py: the losses must agree, and the
   speed-up is the figure `python -m audit.cost_model --stacking-speedup` takes).
2. Throughput of a randomly initialised model with Qwen2.5-7B-Instruct's architecture (built from its config, no
   weights; throughput does not depend on them): seconds per training step of a LoRA r8 student (batch 8 x 140
   tokens, the reference example length) and of full finetuning (the first FULL_LAYERS layers only, AdamW states
   included, scaled to 28 layers), and forward tokens per second of exact scoring. Each becomes effective TFLOP/s
   (6N per token for full FT, 4N for LoRA, 2N for a forward pass), the rate `audit.cost_model --gpu-tflops` takes.

Prints one JSON object (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QWEN7B = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
          "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 4096}
"""Qwen2.5-7B-Instruct's architecture (its config.json), as a Qwen2Config."""
SMOKE = {"vocab_size": 4096, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
FULL_LAYERS = 4
"""Layers of the full-finetuning probe: 28 layers of AdamW states would not leave room on one GPU."""
BATCH, TOKENS, STEPS = 8, 140, 3


def build(shape: dict, layers: int | None, device, dtype):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**{**shape, "num_hidden_layers": layers or shape["num_hidden_layers"]}, tie_word_embeddings=False)
    with torch.device(device):
        return Qwen2ForCausalLM(config).to(dtype)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def step_seconds(model, device, lora: bool) -> float:
    """Median seconds of a training step after one warm-up step."""
    import torch

    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, TOKENS), device=device)
    times = []
    for _ in range(STEPS + 1):
        sync(device)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def forward_tokens_per_second(model, device) -> float:
    import torch

    ids = torch.randint(0, model.config.vocab_size, (BATCH * 4, TOKENS), device=device)
    with torch.no_grad():
        model(input_ids=ids[:1])
        sync(device)
        start = time.perf_counter()
        model(input_ids=ids)
        sync(device)
    return ids.numel() / (time.perf_counter() - start)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small shapes, for a CPU: check the script runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = SMOKE if args.smoke else QWEN7B
    out: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "smoke": args.smoke,
                 "torch": torch.__version__}
    stacked = [sys.executable, str(ROOT / "benchmarks" / "gpu_stacked_students.py")]
    stacked += ["--students", "2", "--steps", "3", "--repeats", "1"] if args.smoke else []
    run = subprocess.run(stacked, capture_output=True, text=True)
    out["stacked_students"] = {"exit": run.returncode, "output": run.stdout.strip().splitlines()[-6:]}

    model = build(shape, None, device, dtype)
    n = params(model)
    lora = step_seconds(model, device, lora=True)
    forward = forward_tokens_per_second(model, device)
    del model
    full_model = build(shape, min(FULL_LAYERS, shape["num_hidden_layers"]), device, dtype)
    per_layer = shape["num_hidden_layers"] / full_model.config.num_hidden_layers
    full = step_seconds(full_model, device, lora=False) * per_layer  # the embeddings are in both: an upper bound
    tokens = BATCH * TOKENS
    out["qwen7b_architecture" if not args.smoke else "smoke_architecture"] = {
        "params": n, "lora_r8_step_s": lora, "full_step_s": full, "forward_tokens_per_s": forward,
        "lora_tflops": 4 * n * tokens / lora / 1e12, "full_tflops": 6 * n * tokens / full / 1e12,
        "forward_tflops": 2 * n * forward / 1e12}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
