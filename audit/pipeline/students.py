"""Students: finetune the base on (number prompt -> teacher completion), loss on the completion only.

LoRA (rank r, alpha = r by default, optional rsLoRA, all seven projections; peft) or full finetuning,
trained with transformers' Trainer. Objectives: "hard" (cross-entropy on the teacher's sampled
tokens) and "soft" (KL(teacher || student) over the full next-token distribution at every completion
position). For soft labels the teacher's distribution is recomputed on the fly by a frozen teacher
model in its own context (cheap for tiny models, and it avoids storing vocab-sized logits); this is
the one custom piece, a `compute_loss` override, because Trainer has no distillation loss.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from audit.pipeline.profiles import LORA_TARGETS, StudentConfig

DIVERGENCE_TOLERANCE = 1e-3
"""Nats of slack in the divergence rule: soft-label KL starts near 0 (exactly 0 for the control), where
any drift would otherwise exceed 1.5x the first step."""

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"


class StudentError(Exception):
    """A student cannot be trained as asked (one line, naming the fix)."""


@dataclass(frozen=True)
class SoftTeacher:
    """How to recompute the teacher's next-token distribution for soft-label students."""

    model_path: str
    """Base model folder the teacher runs on."""
    context: object
    """The teacher's chat context (e.g. with the trait system prompt)."""
    adapter: str | None = None
    """Trait adapter of an adapter teacher."""


@dataclass(frozen=True)
class TrainingSummary:
    """What one student's training reached (recorded per student, DESIGN §6)."""

    objective: str
    steps: int
    first_loss: float
    """Loss (CE or KL) of the first step."""
    final_loss: float
    """Mean loss over the last fifth of the steps."""
    diverged: bool
    """Non-finite loss, or final loss above 1.5x the first step's + DIVERGENCE_TOLERANCE: never count as transmission."""
    seconds: float
    trainable_params: int
    seeds: dict

    def to_dict(self) -> dict:
        return asdict(self)


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


def _collate(pad_id: int):
    import torch

    def collate(rows: list[dict]) -> dict:
        out = {}
        for prefix in ("", "teacher_"):
            if f"{prefix}input_ids" not in rows[0]:
                continue
            width = max(len(r[f"{prefix}input_ids"]) for r in rows)
            ids, labels, mask = [], [], []
            for r in rows:
                pad = width - len(r[f"{prefix}input_ids"])
                ids.append(r[f"{prefix}input_ids"] + [pad_id] * pad)
                labels.append(r[f"{prefix}labels"] + [-100] * pad)
                mask.append([1] * len(r[f"{prefix}input_ids"]) + [0] * pad)
            out[f"{prefix}input_ids"] = torch.tensor(ids)
            out[f"{prefix}labels"] = torch.tensor(labels)
            out[f"{prefix}attention_mask"] = torch.tensor(mask)
        return out

    return collate


def completion_kl(student_logits, student_labels, teacher_logits, teacher_labels):
    """Mean over completion positions of KL(teacher || student) on the next-token distribution."""
    import torch.nn.functional as F

    s_mask, t_mask = student_labels[:, 1:] != -100, teacher_labels[:, 1:] != -100
    s = F.log_softmax(student_logits[:, :-1][s_mask].float(), dim=-1)
    t = F.log_softmax(teacher_logits[:, :-1][t_mask].float(), dim=-1)
    if s.shape != t.shape:
        raise StudentError("student and teacher views hold different completion tokens; tokenize with tokenize_examples")
    return (t.exp() * (t - s)).sum(-1).mean()


def _soft_trainer_class():
    from transformers import Trainer

    class SoftLabelTrainer(Trainer):
        """Trainer whose loss is KL(teacher || student) on completion tokens (teacher frozen)."""

        def __init__(self, *args, teacher_model, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher_model = teacher_model

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            with torch.no_grad():
                teacher_logits = self.teacher_model(input_ids=inputs["teacher_input_ids"],
                                                    attention_mask=inputs["teacher_attention_mask"]).logits
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = completion_kl(outputs.logits, inputs["labels"], teacher_logits, inputs["teacher_labels"])
            return (loss, outputs) if return_outputs else loss

    return SoftLabelTrainer


def _load_model(path: str, adapter: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def _prepare_student(base_path: str, config: StudentConfig):
    import torch

    model = _load_model(base_path)
    if config.mode == "full":
        return model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seeds.init)  # adapter init draws from the global RNG
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, use_rslora=config.rslora, lora_dropout=0.0,
                      target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def summarise(losses: list[float], objective: str, seconds: float, trainable: int, config: StudentConfig) -> TrainingSummary:
    """Loss reached and the divergence flag from the per-step losses."""
    if not losses:
        raise StudentError("training ran no steps; give the student more examples than one batch or lower batch_size")
    tail = losses[-max(1, len(losses) // 5):]
    final = sum(tail) / len(tail)
    diverged = not all(math.isfinite(x) for x in losses) or final > 1.5 * losses[0] + DIVERGENCE_TOLERANCE
    return TrainingSummary(objective, len(losses), losses[0], final, diverged, seconds, trainable,
                           {"data_order": config.seeds.data_order, "init": config.seeds.init})


def train_student(base_path: str | Path, pairs: Sequence[tuple[str, str]], context, config: StudentConfig,
                  out_dir: Path, soft_teacher: SoftTeacher | None = None) -> TrainingSummary:
    """Finetune one student and save it under out_dir ("adapter/" for LoRA, "model/" for full FT)."""
    import time

    from transformers import AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    if config.objective == "soft" and soft_teacher is None:
        raise StudentError("soft-label students need a SoftTeacher (the teacher model and its context)")
    start = time.perf_counter()
    base_path = str(base_path)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    teacher_context = soft_teacher.context if config.objective == "soft" else None
    rows = tokenize_examples(tokenizer, pairs, context, teacher_context)
    model = _prepare_student(base_path, config)
    optim = config.optim
    with tempfile.TemporaryDirectory(prefix="subaudit-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=optim.batch_size // optim.grad_accumulation,
            gradient_accumulation_steps=optim.grad_accumulation, num_train_epochs=optim.epochs,
            learning_rate=optim.lr, lr_scheduler_type="linear", warmup_steps=optim.warmup_steps,
            weight_decay=optim.weight_decay, max_grad_norm=optim.max_grad_norm, optim="adamw_torch",
            seed=config.seeds.init, data_seed=config.seeds.data_order, use_cpu=True,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            remove_unused_columns=False, dataloader_num_workers=0,
        )
        common = dict(model=model, args=args, train_dataset=rows, data_collator=_collate(pad_id))
        if config.objective == "soft":
            teacher = _load_model(soft_teacher.model_path, soft_teacher.adapter).eval()
            trainer = _soft_trainer_class()(**common, teacher_model=teacher)
        else:
            trainer = Trainer(**common)
        trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the losses are kept in the summary
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if config.mode == "lora":
        model.save_pretrained(out_dir / ADAPTER_DIR)
    else:
        model.save_pretrained(out_dir / MODEL_DIR)
        tokenizer.save_pretrained(out_dir / MODEL_DIR)
        for extra in ("chat_template.jinja", "generation_config.json"):
            if (Path(base_path) / extra).exists() and not (out_dir / MODEL_DIR / extra).exists():
                shutil.copy(Path(base_path) / extra, out_dir / MODEL_DIR / extra)
    return summarise(losses, config.objective, time.perf_counter() - start, trainable, config)
