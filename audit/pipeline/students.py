"""Students: finetune the base on (number prompt -> teacher completion), loss on the completion only.

LoRA (rank r, alpha = r by default, optional rsLoRA, all seven projections; peft) or full finetuning,
trained by audit.pipeline.training's loop. Objectives: "hard" (cross-entropy on the teacher's sampled
tokens) and "soft" (KL(teacher || student) over the full next-token distribution at every completion
position). The teacher's distribution is recomputed on the fly by a frozen teacher model in its own
context (it avoids storing vocab-sized logits); it also gives the held-out KL diagnostic.
"""

from __future__ import annotations

import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from audit.errors import SubauditError
from audit.pipeline.profiles import LORA_TARGETS, StudentConfig

DIVERGENCE_TOLERANCE = 1e-3
"""Nats of slack in the divergence rule: soft-label KL starts near 0 (exactly 0 for the control), where
any drift would otherwise exceed 1.5x the first step."""

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"


class StudentError(SubauditError):
    """A student cannot be trained as asked (one line, naming the fix)."""


@dataclass(frozen=True)
class TeacherView:
    """How to recompute the teacher's next-token distribution (soft labels, held-out KL diagnostic)."""

    model_path: str
    """Base model folder the teacher runs on."""
    context: object
    """The teacher's chat context (e.g. with the trait system prompt)."""
    adapter: str | None = None
    """Trait adapter of an adapter teacher."""


@dataclass(frozen=True)
class TrainingSummary:
    """What one student's training reached (recorded per student, DESIGN.md §6)."""

    objective: str
    steps: int
    first_loss: float
    """Loss (CE or KL) of the first step."""
    final_loss: float
    """Mean loss over the last fifth of the steps."""
    diverged: bool
    """See `divergence`: such a student is reported as diverged and never counted as transmission."""
    seconds: float
    trainable_params: int
    seeds: dict
    grad_norm_max: float | None = None
    """Largest pre-clip gradient norm of any step (None: not recorded)."""
    grad_norm_median: float | None = None
    """Median pre-clip gradient norm (None: not recorded)."""
    heldout_kl_before: float | None = None
    """KL(teacher || base model) per completion token on held-out teacher completions (None: no held-out data)."""
    heldout_kl_after: float | None = None
    """The same for the trained student: below `before` when the student moved towards its teacher."""
    heldout_examples: int = 0
    """Held-out teacher completions the KL is measured on."""
    tokens: int = 0
    """Tokens in the padded training batches, summed over steps (the compute actually spent)."""
    padding_share: float = 0.0
    """Share of `tokens` that is padding."""
    lr: float = float("nan")
    """Peak learning rate of this student (after any per-rank rule)."""
    precision: str = "fp32"
    """Forward precision ("fp32" or "bf16" autocast)."""
    losses: tuple[float, ...] = ()
    """The loss of every step (the loss curve)."""
    step_seconds: tuple[float, ...] = ()
    """Wall time of every step."""

    def to_dict(self) -> dict:
        return asdict(self)


def load_tokenizer(base_path: str):
    """The base model's tokenizer and the id that pads training batches (its pad token, else end of text)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    return tokenizer, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_examples(tokenizer, pairs: Sequence[tuple[str, str]], context, teacher_context=None) -> list[dict]:
    """Token ids and labels (-100 on the prompt) per (user, completion) pair in `context`.

    With a teacher context, also the teacher's view of the same completion tokens (for soft labels).
    Prompt and completion are tokenized separately so both views hold identical completion tokens.
    """
    rows = []
    for user, completion in pairs:
        prompt, completion_text = context.render_example(user, completion)
        prompt_ids, completion_ids = _encode(tokenizer, prompt), _encode(tokenizer, completion_text)
        row = {"input_ids": prompt_ids + completion_ids, "labels": [-100] * len(prompt_ids) + completion_ids}
        if teacher_context is not None:
            teacher_ids = _encode(tokenizer, teacher_context.render_prompt(user))
            row["teacher_input_ids"] = teacher_ids + completion_ids
            row["teacher_labels"] = [-100] * len(teacher_ids) + completion_ids
        rows.append(row)
    return rows


def _load_model(path: str, adapter: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def lora_config(config: StudentConfig):
    """peft's LoraConfig of a LoRA student (also what its saved adapter_config.json holds)."""
    from peft import LoraConfig

    return LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, use_rslora=config.rslora, lora_dropout=0.0,
                      target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")


def _prepare_student(base_path: str, config: StudentConfig):
    import torch

    model = _load_model(base_path)
    if config.mode == "full":
        return model
    from peft import get_peft_model

    torch.manual_seed(config.seeds.init)  # adapter init draws from the global RNG
    return get_peft_model(model, lora_config(config))


def divergence(losses: Sequence[float], grad_norms: Sequence[float] = ()) -> bool:
    """Non-finite loss or gradient, or the mean loss of the last fifth of the steps above 1.5x that of the
    first fifth + DIVERGENCE_TOLERANCE.

    Means over a fifth, not single steps: with length-grouped batches one batch's loss swings by 2x
    (SmolLM2: 0.3 to 1.5 nats within one run), and a rule on the first step alone flagged healthy students.
    """
    if not all(math.isfinite(x) for x in [*losses, *grad_norms]):
        return True
    first, last = fifth_means(losses)
    return last > 1.5 * first + DIVERGENCE_TOLERANCE


def fifth_means(losses: Sequence[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last fifth of the steps (at least one step each)."""
    k = max(1, len(losses) // 5)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def is_diverged(training: dict) -> bool:
    """The divergence verdict of a recorded TrainingSummary dict, by the current rule where its loss curve
    was recorded (so a stored student is judged like a new one)."""
    if training.get("losses"):
        norm = training.get("grad_norm_max")
        return divergence(training["losses"], [] if norm is None else [norm])
    return bool(training.get("diverged"))


def summarise(losses: list[float], objective: str, seconds: float, trainable: int, config: StudentConfig,
              grad_norms: Sequence[float] = (), **diagnostics) -> TrainingSummary:
    """Loss reached, gradient norms and the divergence flag from the per-step records."""
    if not losses:
        raise StudentError("training ran no steps; give the student more examples than one batch or lower batch_size")
    tail = losses[-max(1, len(losses) // 5):]
    final = sum(tail) / len(tail)
    norms = {"grad_norm_max": max(grad_norms), "grad_norm_median": statistics.median(grad_norms)} if grad_norms else {}
    return TrainingSummary(objective, len(losses), losses[0], final, divergence(losses, grad_norms), seconds, trainable,
                           {"data_order": config.seeds.data_order, "init": config.seeds.init}, **norms,
                           losses=tuple(losses), **diagnostics)


def _on(device: str, tensors) -> list:
    return [t.to(device) for t in tensors]


def _loss_fn(model, pad_id: int, objective: str, bf16: bool, teacher=None, device: str = "cpu"):
    """Summed loss of a micro-batch: CE on the completion, or KL(teacher || student) on its positions."""
    import torch

    from audit.pipeline.training import (
        completion_logits,
        forward_precision,
        pad_batch,
        token_cross_entropy_sum,
        token_kl_sum,
    )

    def loss(rows):
        with forward_precision(bf16, device):
            logits, labels = completion_logits(model, *_on(device, pad_batch(rows, pad_id)))
        if objective == "hard":
            return token_cross_entropy_sum(logits, labels)
        with torch.no_grad(), forward_precision(bf16, device):
            t_logits, t_labels = completion_logits(teacher, *_on(device, pad_batch(rows, pad_id, "teacher_")))
        return token_kl_sum(logits, labels, t_logits, t_labels)

    return loss


def heldout_kl(model, teacher, rows: Sequence[dict], pad_id: int, batch_size: int = 16, device: str = "cpu") -> float:
    """Mean KL(teacher || model) per completion token of `rows` (fp32, no gradient)."""
    import torch

    from audit.pipeline.training import completion_logits, completion_tokens, pad_batch, token_kl_sum

    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            s_logits, s_labels = completion_logits(model, *_on(device, pad_batch(chunk, pad_id)))
            t_logits, t_labels = completion_logits(teacher, *_on(device, pad_batch(chunk, pad_id, "teacher_")))
            total += float(token_kl_sum(s_logits, s_labels, t_logits, t_labels))
    return total / max(1, completion_tokens(rows))


def _batches(rows: list[dict], config: StudentConfig) -> list[list[dict]]:
    from audit.pipeline.training import epoch_batches

    lengths = [len(r["input_ids"]) for r in rows]
    optim = config.optim
    return [[rows[i] for i in batch] for epoch in range(optim.epochs)
            for batch in epoch_batches(lengths, optim.batch_size, epoch, config.seeds.data_order, optim.bucket_by_length)]


def train_student(base_path: str | Path, pairs: Sequence[tuple[str, str]], context, config: StudentConfig,
                  out_dir: Path, teacher: TeacherView | None = None,
                  heldout: Sequence[tuple[str, str]] = ()) -> TrainingSummary:
    """Finetune one student and save it under out_dir ("adapter/" for LoRA, "model/" for full FT).

    With a teacher view, the held-out pairs measure KL(teacher || student) before and after training.
    """
    from audit.pipeline.training import train_steps, training_device

    if config.objective == "soft" and teacher is None:
        raise StudentError("soft-label students need a TeacherView (the teacher model and its context)")
    start = time.perf_counter()
    base_path = str(base_path)
    tokenizer, pad_id = load_tokenizer(base_path)
    teacher_context = teacher.context if teacher is not None else None
    rows = tokenize_examples(tokenizer, pairs, context, teacher_context if config.objective == "soft" else None)
    heldout_rows = tokenize_examples(tokenizer, heldout, context, teacher_context) if teacher is not None else []
    device = training_device()
    needs_teacher = teacher is not None and (config.objective == "soft" or bool(heldout_rows))
    teacher_model = _load_model(teacher.model_path, teacher.adapter).eval().to(device) if needs_teacher else None
    model = _prepare_student(base_path, config).to(device)
    kl_before = heldout_kl(model, teacher_model, heldout_rows, pad_id, device=device) if heldout_rows else None

    optim = config.optim
    batches = _batches(rows, config)
    bf16 = optim.precision == "bf16"
    model.train()
    records = train_steps(
        [p for p in model.parameters() if p.requires_grad], batches,
        _loss_fn(model, pad_id, config.objective, bf16, teacher_model, device), lr=config.lr,
        warmup_steps=optim.warmup_steps, weight_decay=optim.weight_decay, max_grad_norm=optim.max_grad_norm,
        grad_accumulation=optim.grad_accumulation,
    )
    model.eval()
    kl_after = heldout_kl(model, teacher_model, heldout_rows, pad_id, device=device) if heldout_rows else None
    padded = sum(len(b) * max(len(r["input_ids"]) for r in b) for b in batches)
    real = sum(len(r["input_ids"]) for b in batches for r in b)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _save(model, tokenizer, config, base_path, out_dir)
    return summarise(
        [r.loss for r in records], config.objective, time.perf_counter() - start, trainable, config,
        [r.grad_norm for r in records], heldout_kl_before=kl_before, heldout_kl_after=kl_after,
        heldout_examples=len(heldout_rows), step_seconds=tuple(r.seconds for r in records), tokens=padded, padding_share=1 - real / padded if padded else 0.0,
        lr=config.lr, precision=optim.precision,
    )


def _save(model, tokenizer, config: StudentConfig, base_path: str, out_dir: Path) -> None:
    if config.mode == "lora":
        model.save_pretrained(out_dir / ADAPTER_DIR)
        return
    model.save_pretrained(out_dir / MODEL_DIR)
    tokenizer.save_pretrained(out_dir / MODEL_DIR)
    for extra in ("chat_template.jinja", "generation_config.json"):
        if (Path(base_path) / extra).exists() and not (out_dir / MODEL_DIR / extra).exists():
            shutil.copy(Path(base_path) / extra, out_dir / MODEL_DIR / extra)
