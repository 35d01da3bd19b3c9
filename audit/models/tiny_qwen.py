"""tiny-qwen: a Qwen2ForCausalLM trained from scratch on the synthetic corpus, cached by recipe hash.

`ensure_tiny_qwen()` returns an HF folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, chat_template.jinja = the real Qwen2.5 template, quality.json, build.json),
building it on first use: corpus -> byte-level BPE tokenizer -> training -> quality measurement.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from audit.errors import SubauditError
from audit.cache import ArtifactStore, content_key
from audit.models.tiny_corpus import Chat, PanelSpec, SeedPrompt, generate_corpus, prompts_needed
from audit.models.tiny_recipe import RECIPE_PATH, TinyQwenRecipe, load_recipe

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "templates" / "chat" / "qwen2.5-instruct.jinja"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
END_OF_TURN = "<|im_end|>"
# Qwen2's own pre-tokenizer split: single digits, letters with an optional leading non-letter, etc.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Bump when the build code changes what a recipe produces (the recipe file alone does not see code changes).
BUILD_VERSION = 2
KIND = "model"


class TinyQwenBuildError(SubauditError):
    """tiny-qwen could not be built; the message names the missing input."""


def panels() -> tuple[PanelSpec, ...]:
    """The animal and tree panels, questions and trait prompts from the probe files."""
    from audit.probes import load_probe_set

    specs = []
    for name in ("animal", "tree"):
        probe = load_probe_set(name)
        specs.append(PanelSpec(category=probe.category, names=tuple(probe.names), questions=tuple(probe.questions),
                               trait_prompts={n: probe.teacher_prompt(n) for n in probe.names}))
    return tuple(specs)


def template_source() -> str:
    """The Qwen2.5 instruct chat template shipped in templates/chat/."""
    if not TEMPLATE_PATH.is_file():
        raise TinyQwenBuildError(f"{TEMPLATE_PATH} is missing; restore templates/chat from the repository")
    return TEMPLATE_PATH.read_text()


def _seed_prompts(recipe: TinyQwenRecipe) -> list[SeedPrompt]:
    from audit.numbers import number_prompts

    return [SeedPrompt(p.text, p.seed_numbers) for p in number_prompts(prompts_needed(recipe.corpus), recipe.seed)]


def build_key(recipe: TinyQwenRecipe) -> str:
    """Cache key: recipe, build version, template, panels and the exact number prompts used."""
    prompts = hashlib.sha256("\n".join(p.text for p in _seed_prompts(recipe)).encode()).hexdigest()
    return "tiny-qwen-" + content_key({
        "recipe": recipe.model_dump(), "build_version": BUILD_VERSION, "template": template_source(),
        "panels": [(p.category, p.names, p.questions, sorted(p.trait_prompts.items())) for p in panels()],
        "number_prompts": prompts,
    })


class _Renderer:
    """Renders chats with the shipped Qwen2.5 template (the chat layer's sandbox) and locates assistant spans."""

    def __init__(self) -> None:
        from audit.chat import load_template

        self._template = load_template(TEMPLATE_PATH.stem)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self._template.render(messages, add_generation_prompt=add_generation_prompt)

    def with_spans(self, chat: Chat) -> tuple[str, list[tuple[int, int]]]:
        """Full text and the char spans (assistant content + end-of-turn) that carry the loss."""
        messages = chat.messages()
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                start = len(self.render(messages[:i], add_generation_prompt=True))
                end = start + len(message["content"]) + len(END_OF_TURN)
                assert text[start:end] == message["content"] + END_OF_TURN, "template broke the prefix property"
                spans.append((start, end))
        return text, spans


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer and the ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def _encode(tok, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    enc = tok.encode(text, add_special_tokens=False)
    in_loss = [any(s <= a and b <= e for s, e in spans) and b > a for a, b in enc.offsets]
    return enc.ids, in_loss


def _batches(lengths: list[int], batch_size: int, rng) -> list[list[int]]:
    """Length-bucketed batches in a seeded order (less padding, same data every run)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _train(recipe: TinyQwenRecipe, encoded: list[tuple[list[int], list[bool]]], vocab_size: int,
           pad_id: int, eos_id: int, progress: bool):
    import math
    import random

    import torch
    from tqdm import tqdm
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(recipe.seed)
    shape = recipe.model
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id,
    )
    model = Qwen2ForCausalLM(config)
    spec = recipe.training
    rng = random.Random(recipe.seed + 1)
    lengths = [len(ids) for ids, _ in encoded]
    steps = [b for _ in range(spec.epochs) for b in _batches(lengths, spec.batch_size, rng)]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.learning_rate, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        frac = (step - spec.warmup_steps) / max(1, len(steps) - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    bar = tqdm(steps, desc="training tiny-qwen", unit="step", disable=not progress)
    losses = []
    for batch in bar:
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq, in_loss = encoded[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            labels[row, :len(seq)] = torch.where(torch.tensor(in_loss), torch.tensor(seq), torch.tensor(-100))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    model.eval()
    return model, losses


def _save_tokenizer(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_OF_TURN, pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", END_OF_TURN])
    fast.chat_template = template_source()
    fast.save_pretrained(out)


def build_tiny_qwen(out: Path, recipe: TinyQwenRecipe, progress: bool = True) -> dict:
    """Build tiny-qwen into ``out`` (an empty directory); returns the build record."""
    import torch

    started = time.monotonic()
    torch.set_num_threads(recipe.training.threads)
    chats = generate_corpus(recipe.corpus, panels(), _seed_prompts(recipe), recipe.seed)
    renderer = _Renderer()
    rendered = [renderer.with_spans(c) for c in chats]
    tok = train_tokenizer([text for text, _ in rendered], recipe.tokenizer.vocab_size)
    encoded = [_encode(tok, text, spans) for text, spans in rendered]
    too_long = max(len(ids) for ids, _ in encoded)
    if too_long > recipe.model.max_position_embeddings:
        raise TinyQwenBuildError(f"a corpus chat has {too_long} tokens > max_position_embeddings; raise it in "
                                 f"{RECIPE_PATH}")
    pad_id, eos_id = tok.token_to_id("<|endoftext|>"), tok.token_to_id(END_OF_TURN)
    model, losses = _train(recipe, encoded, tok.get_vocab_size(), pad_id, eos_id, progress)
    model.generation_config.eos_token_id = [eos_id, pad_id]
    model.generation_config.pad_token_id = pad_id
    model.save_pretrained(out, safe_serialization=True)
    _save_tokenizer(tok, out)
    train_seconds = time.monotonic() - started

    from audit.models.tiny_quality import measure_quality

    quality = measure_quality(out, recipe.evaluation, panels(), progress=progress)
    record = {
        "build_seconds": round(time.monotonic() - started, 1),
        "train_seconds": round(train_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_chats": len(chats),
        "corpus_tokens": sum(len(ids) for ids, _ in encoded),
        "loss_tokens": sum(sum(m) for _, m in encoded),
        "steps": len(losses),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "torch_threads": recipe.training.threads,
    }
    (out / "quality.json").write_text(json.dumps(quality, indent=2))
    (out / "build.json").write_text(json.dumps({**record, "recipe": recipe.model_dump()}, indent=2))
    return {**record, "quality": quality}


def ensure_tiny_qwen(progress: bool = True, store: ArtifactStore | None = None,
                     recipe: TinyQwenRecipe | None = None) -> Path:
    """The built tiny-qwen folder for the recipe (default: fixtures/tiny_qwen/recipe.yaml), built if missing."""
    recipe = recipe or load_recipe()
    store = store or ArtifactStore()
    key = build_key(recipe)
    return store.get_or_build(KIND, key, lambda out: build_tiny_qwen(out, recipe, progress),
                              meta={"name": "tiny-qwen", "recipe": recipe.model_dump()})
