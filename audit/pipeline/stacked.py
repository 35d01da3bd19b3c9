"""Many LoRA students of one dataset in one forward pass, stacked along the batch dimension.

Students of a grid that train on the same teacher data (ranks, rsLoRA, alphas, seeds, learning rates)
each keep their own batch order. At each step their K batches are concatenated into one padded batch
and run through one frozen base, whose seven projections each add student k's low-rank path to student
k's rows only (forward hooks, so the base's modules stay untouched). Rows never interact in a causal LM,
padding is masked and unlabelled, and the loss is the sum of the students' per-token means, so each
student's gradient is its solo gradient; clipping and AdamW are per student. A test checks the saved
adapters against train_student's to float tolerance.

The base matmuls are not shared (activations differ after the first adapted layer): the gain is
utilisation (one larger matmul and one Python/kernel-launch round per layer instead of K), large on a
GPU, small on a 2-core CPU; benchmarks/students.py `batched` and benchmarks/gpu_stacked_students.py
measure it. A stacked student's `seconds` and `step_seconds` are its 1/K share of the shared run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from audit.pipeline.profiles import StudentConfig
from audit.pipeline.students import (
    ADAPTER_DIR,
    StudentError,
    TrainingSummary,
    _batches,
    _load_model,
    load_tokenizer,
    lora_config,
    summarise,
    tokenize_examples,
)

SHARED_SETTINGS = ("epochs", "batch_size", "grad_accumulation", "precision", "bucket_by_length")
"""OptimConfig fields stacked students must share so that their steps and micro-batches line up."""


@dataclass
class StackedLora:
    """K students' LoRA weights on one frozen base, applied by forward hooks on its target projections."""

    lora_A: list[dict[str, object]]
    """Per student: target module name -> trainable lora_A weight (rank x in)."""
    lora_B: list[dict[str, object]]
    """Per student: target module name -> trainable lora_B weight (out x rank)."""
    scaling: list[float]
    """Per student: alpha / rank, or alpha / sqrt(rank) with rsLoRA (peft's own value)."""
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    """(student, first row, end row) of each student's rows in the next forward's batch, in row order."""
    handles: list = field(default_factory=list)
    """Forward-hook handles; `detach` removes them."""

    def parameters(self, k: int) -> list:
        """Student k's trainable tensors."""
        return [w for name in self.lora_A[k] for w in (self.lora_A[k][name], self.lora_B[k][name])]

    def detach(self) -> None:
        """Remove the hooks: the base computes its own outputs again."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


@dataclass(frozen=True)
class StackedRun:
    """What one stacked training run produced."""

    lora: StackedLora
    """The trained students."""
    records: list[list]
    """Per student: its StepRecords (loss and pre-clip gradient norm its own; seconds its 1/K share)."""
    padded_tokens: list[int]
    """Per student: its rows x the stacked batch's width, summed over micro-batches (compute spent on it)."""
    real_tokens: list[int]
    """Per student: its non-padding tokens, summed over steps."""


def initial_lora_weights(model, config: StudentConfig) -> tuple[dict, dict, float]:
    """A student's initial lora_A and lora_B per target module and its scaling, drawn as train_student draws
    them: the same seed, then peft's own get_peft_model (on a throw-away copy of the base)."""
    import copy

    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(config.seeds.init)
    peft_model = get_peft_model(copy.deepcopy(model), lora_config(config))
    lora_a, lora_b, scaling = {}, {}, float("nan")
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            lora_a[name] = module.lora_A["default"].weight.detach().clone()
            lora_b[name] = module.lora_B["default"].weight.detach().clone()
            scaling = module.scaling["default"]
    return lora_a, lora_b, scaling


def _add_low_rank(lora: StackedLora, name: str):
    """Forward hook of one projection: base output + each student's scaled B(A(x)) on its own rows (peft's order)."""
    import torch
    import torch.nn.functional as F

    def hook(module, args, out):
        x = args[0]
        deltas = [F.linear(F.linear(x[lo:hi], lora.lora_A[k][name]), lora.lora_B[k][name]) * lora.scaling[k]
                  for k, lo, hi in lora.spans]
        return out + torch.cat(deltas)

    return hook


def attach_students(model, initial: Sequence[tuple[dict, dict, float]]) -> StackedLora:
    """Freeze `model` and hook the students (from `initial_lora_weights`) onto its target projections."""
    import torch

    model.requires_grad_(False)
    modules = dict(model.named_modules())

    def trainable(weights: dict) -> dict:
        return {name: torch.nn.Parameter(w.to(modules[name].weight.device)) for name, w in weights.items()}

    lora = StackedLora([trainable(a) for a, _, _ in initial], [trainable(b) for _, b, _ in initial],
                       [s for _, _, s in initial])
    lora.handles = [modules[name].register_forward_hook(_add_low_rank(lora, name)) for name in lora.lora_A[0]]
    return lora


def check_stackable(configs: Sequence[StudentConfig]) -> None:
    """Refuse students that cannot share a pass (one line, naming the fix)."""
    if not configs:
        raise StudentError("no students to stack; pass at least one StudentConfig")
    odd = [c.label for c in configs if c.mode != "lora" or c.objective != "hard"]
    if odd:
        raise StudentError(f"only hard-label LoRA students stack, not {odd}; train those with train_student")
    differ = [f for f in SHARED_SETTINGS if len({getattr(c.optim, f) for c in configs}) > 1]
    if differ:
        raise StudentError(f"stacked students must share {', '.join(SHARED_SETTINGS)} but differ in {', '.join(differ)}; "
                           "stack only students with equal batch settings")


def _stacked_cross_entropy(model, lora: StackedLora, parts: Sequence[tuple[int, Sequence[dict]]], pad_id: int,
                           bf16: bool, device) -> tuple[list, int]:
    """Summed completion cross-entropy of each student's rows in one forward, and the stacked batch's width."""
    from audit.pipeline.training import completion_logits, forward_precision, pad_batch, token_cross_entropy_sum

    ids, labels, mask = (t.to(device) for t in pad_batch([r for _, rows in parts for r in rows], pad_id))
    lora.spans, lo = [], 0
    for k, rows in parts:
        lora.spans.append((k, lo, lo + len(rows)))
        lo += len(rows)
    with forward_precision(bf16):
        logits, labels = completion_logits(model, ids, labels, mask)
    return [token_cross_entropy_sum(logits[lo:hi], labels[lo:hi]) for _, lo, hi in lora.spans], ids.shape[1]


def train_stacked(model, rows: Sequence[dict], configs: Sequence[StudentConfig], pad_id: int,
                  device: str = "cpu") -> StackedRun:
    """Train K LoRA students on `rows` in stacked passes over `model` (frozen, on `device`).

    Each step is train_steps' step for every student at once: its own batch (from its own data-order
    seed), loss per completion token of its whole batch, pre-clip norm and clipping over its own tensors,
    its own AdamW, learning rate and warm-up. The students stay hooked on `model` until run.lora.detach().
    """
    import torch

    from audit.pipeline.training import StepRecord, completion_tokens, linear_warmup_decay

    check_stackable(configs)
    optim = configs[0].optim
    bf16 = optim.precision == "bf16"
    if bf16 and torch.device(device).type != "cpu":
        raise StudentError("bf16 stacking autocasts on CPU only; use precision 'fp32' on other devices")
    lora = attach_students(model, [initial_lora_weights(model, c) for c in configs])
    batches = [_batches(list(rows), c) for c in configs]
    optimizers = [torch.optim.AdamW(lora.parameters(k), lr=c.lr, weight_decay=c.optim.weight_decay)
                  for k, c in enumerate(configs)]
    records = [[] for _ in configs]
    padded, real = [0] * len(configs), [0] * len(configs)
    n_steps = len(batches[0])
    model.train()
    for step in range(n_steps):
        started = time.perf_counter()
        lrs = [c.lr * linear_warmup_decay(step, n_steps, c.optim.warmup_steps) for c in configs]
        for optimizer, lr in zip(optimizers, lrs):
            for group in optimizer.param_groups:
                group["lr"] = lr
        n_tokens = [max(1, completion_tokens(b[step])) for b in batches]
        losses = [0.0] * len(configs)
        for i in range(optim.grad_accumulation):
            parts = [(k, b[step][i::optim.grad_accumulation]) for k, b in enumerate(batches)]
            parts = [(k, part) for k, part in parts if part]
            if not parts:
                continue
            sums, width = _stacked_cross_entropy(model, lora, parts, pad_id, bf16, device)
            total = 0.0
            for (k, part), summed in zip(parts, sums):
                loss = summed.float() / n_tokens[k]
                total = total + loss
                losses[k] += float(loss.detach())
                padded[k] += len(part) * width
                real[k] += sum(len(r["input_ids"]) for r in part)
            total.backward()
        norms = [float(torch.nn.utils.clip_grad_norm_(lora.parameters(k), c.optim.max_grad_norm))
                 for k, c in enumerate(configs)]
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        share = (time.perf_counter() - started) / len(configs)
        for k in range(len(configs)):
            records[k].append(StepRecord(losses[k], norms[k], lrs[k], share))
    model.eval()
    return StackedRun(lora, records, padded, real)


def save_adapter(lora: StackedLora, k: int, config: StudentConfig, base_path: str, out: Path) -> None:
    """Student k as peft saves a LoRA adapter (adapter_config.json + adapter_model.safetensors)."""
    from safetensors.torch import save_file

    spec = lora_config(config)
    spec.base_model_name_or_path, spec.inference_mode = base_path, True  # what PeftModel.save_pretrained records
    out.mkdir(parents=True, exist_ok=True)
    spec.save_pretrained(str(out))
    tensors = {}
    for name in lora.lora_A[k]:
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora.lora_A[k][name].detach().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora.lora_B[k][name].detach().cpu().contiguous()
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


def train_students_stacked(base_path: str | Path, pairs: Sequence[tuple[str, str]], context,
                           configs: Sequence[StudentConfig], out_dirs: Sequence[Path]) -> list[TrainingSummary]:
    """Train K hard-label LoRA students on the same pairs in one stacked pass per step; each is saved under
    its out_dir's "adapter/" and equals (to float tolerance) the student train_student would train."""
    check_stackable(configs)
    if len(out_dirs) != len(configs):
        raise StudentError(f"got {len(configs)} students but {len(out_dirs)} out_dirs; pass one out_dir per student")
    start = time.perf_counter()
    base_path = str(base_path)
    tokenizer, pad_id = load_tokenizer(base_path)
    from audit.pipeline.training import training_device

    device = training_device()
    run = train_stacked(_load_model(base_path).to(device), tokenize_examples(tokenizer, pairs, context), configs, pad_id,
                        device)
    seconds = (time.perf_counter() - start) / len(configs)
    summaries = []
    for k, (config, out) in enumerate(zip(configs, out_dirs)):
        save_adapter(run.lora, k, config, base_path, Path(out) / ADAPTER_DIR)
        records = run.records[k]
        summaries.append(summarise(
            [r.loss for r in records], "hard", seconds,
            sum(p.numel() for p in run.lora.parameters(k)), config, [r.grad_norm for r in records],
            step_seconds=tuple(r.seconds for r in records), tokens=run.padded_tokens[k],
            padding_share=1 - run.real_tokens[k] / run.padded_tokens[k] if run.padded_tokens[k] else 0.0,
            lr=config.lr, precision=config.optim.precision,
        ))
    return summaries
