"""The student training loop: batches, schedule, loss and the optimiser step (one place for all students).

Our own loop rather than transformers' Trainer because three things the profile showed on SmolLM2
need control of the step itself: bf16 autocast of the forward pass (fp32 master weights, AdamW and
loss), length-grouped batches (less padding), and the LM head applied only from the
first completion position (the prompt's logits are never used). It also records the pre-clip gradient
norm of every step, a divergence diagnostic Trainer logs only when asked.

Pure pieces (`epoch_batches`, `linear_warmup_decay`) are plain functions; `train_steps` does the I/O-free
but torch-bound work on a model it is given.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from audit.numbers import derive_seed

BUCKET_BATCHES = 16
"""Batches per length-sorting window: long enough to group similar lengths, short enough to keep the
order random (a window is shuffled, sorted by length, cut into batches, and the batches shuffled)."""


def epoch_batches(lengths: Sequence[int], batch_size: int, epoch: int, seed: int, bucket: bool) -> list[list[int]]:
    """Row indices of each batch of one epoch: a seeded permutation, optionally grouped by length.

    Every row appears exactly once per epoch; the last batch may be short. With `bucket`, rows within a
    window of BUCKET_BATCHES batches are sorted by length before being cut, so a batch pads little.
    """
    rng = random.Random(derive_seed("epoch-order", seed, epoch))
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * BUCKET_BATCHES
    batches = []
    for lo in range(0, len(order), window):
        chunk = sorted(order[lo:lo + window], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rng.shuffle(full)
    return full + [b for b in batches if len(b) < batch_size]  # at most one short batch per window, kept last


def linear_warmup_decay(step: int, total: int, warmup: int) -> float:
    """LR multiplier at 0-based `step`: linear warm-up from 0, then linear decay to 0 (as transformers'
    get_linear_schedule_with_warmup, so results match the reference protocol's schedule)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass(frozen=True)
class StepRecord:
    """What one optimiser step measured."""

    loss: float
    """Mean loss per completion token of the step (before the update)."""
    grad_norm: float
    """Total gradient norm before clipping."""
    lr: float
    """Learning rate used by the step."""
    seconds: float
    """Wall time of the step."""


def pad_batch(rows: Sequence[dict], pad_id: int, prefix: str = ""):
    """Right-padded ids, labels (-100 on padding) and attention mask of one view of `rows`."""
    import torch

    width = max(len(r[f"{prefix}input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r[f"{prefix}input_ids"])
        ids[i, :n] = torch.tensor(r[f"{prefix}input_ids"])
        labels[i, :n] = torch.tensor(r[f"{prefix}labels"])
        mask[i, :n] = 1
    return ids, labels, mask


def completion_logits(model, ids, labels, mask):
    """Logits and labels from the first position that predicts a completion token to the end.

    The LM head (vocab x width, the largest matmul of a small model) runs only where a loss is taken;
    logits[:, j] predicts labels[:, j + 1] as in the full-length view.
    """
    first = int((labels != -100).float().argmax(-1).min())
    keep = ids.shape[1] - max(0, first - 1)
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep)
    return out.logits.float(), labels[:, -keep:]


def token_cross_entropy_sum(logits, labels):
    """Summed cross-entropy of the completion tokens (labels != -100)."""
    import torch.nn.functional as F

    target = labels[:, 1:]
    keep = target != -100
    return F.cross_entropy(logits[:, :-1][keep], target[keep], reduction="sum")


def token_kl_sum(student_logits, student_labels, teacher_logits, teacher_labels):
    """Summed KL(teacher || student) over completion positions (the two views hold the same completion
    tokens at different offsets)."""
    import torch.nn.functional as F

    s_mask, t_mask = student_labels[:, 1:] != -100, teacher_labels[:, 1:] != -100
    s = F.log_softmax(student_logits[:, :-1][s_mask], dim=-1)
    t = F.log_softmax(teacher_logits[:, :-1][t_mask], dim=-1)
    if s.shape != t.shape:
        raise ValueError("student and teacher views hold different completion tokens; tokenize both from the same pairs")
    return (t.exp() * (t - s)).sum()


LossFn = Callable[[Sequence[dict]], object]
"""Rows of one micro-batch -> summed loss over their completion tokens (a scalar tensor)."""


def training_device() -> str:
    """Where students train: the GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def forward_precision(bf16: bool, device: str = "cpu"):
    """Context for a model's forward pass: bf16 autocast on `device`, or nothing. Losses are reduced outside it."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


def completion_tokens(rows: Sequence[dict]) -> int:
    """Tokens that carry a loss in `rows` (labels != -100)."""
    return sum(sum(label != -100 for label in r["labels"]) for r in rows)


def train_steps(params: Sequence, batches: Sequence[Sequence[dict]], loss_fn: LossFn, *, lr: float,
                warmup_steps: int, weight_decay: float, max_grad_norm: float, grad_accumulation: int,
                on_step: Callable[[StepRecord], None] | None = None) -> list[StepRecord]:
    """AdamW over `params`, one step per batch (split into `grad_accumulation` micro-batches).

    The step's loss is the mean over all its completion tokens, as if the batch were one forward pass:
    each micro-batch's summed loss is divided by the whole batch's token count before its backward.
    """
    import torch

    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    records = []
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        scale = linear_warmup_decay(step, len(batches), warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        n_tokens = max(1, completion_tokens(batch))
        step_loss = 0.0
        for i in range(grad_accumulation):
            rows = batch[i::grad_accumulation]
            if rows:
                loss = loss_fn(rows).float() / n_tokens
                loss.backward()
                step_loss += float(loss.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        records.append(StepRecord(step_loss, grad_norm, lr * scale, time.perf_counter() - started))
        if on_step is not None:
            on_step(records[-1])
    return records
