"""The four tiny-qwen quality numbers, measured on a built model folder by sampling (HF transformers).

1. panel rate: share of sampled answers to the animal probe questions (default system prompt) that name a
   panel animal; 2. P(cat) under the cat trait prompt / P(cat) at base; 3. share of sampled number
   continuations that pass the reference filter; 4. the largest single-animal share at base.
Every rate comes with n and a 95% Wilson interval.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from audit.models.tiny_corpus import PanelSpec
from audit.models.tiny_recipe import EvaluationSpec


def wilson(k: int, n: int, z: float = 1.96) -> dict:
    """Rate k/n with its 95% Wilson score interval."""
    if n == 0:
        return {"value": float("nan"), "ci_low": 0.0, "ci_high": 1.0, "n": 0}
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"value": p, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half), "n": n}


def classify(answer: str, names: tuple[str, ...]) -> str | None:
    """The single panel name the answer mentions (word boundary, any case, plural ok), else None."""
    hits = {n for n in names if re.search(rf"\b{re.escape(n)}s?\b", answer, re.IGNORECASE)}
    return hits.pop() if len(hits) == 1 else None


def _sample(model, tok, prompts: list[str], n: int, max_new_tokens: int, seed: int) -> list[str]:
    import torch

    torch.manual_seed(seed)
    tok.padding_side = "left"
    out = []
    for start in range(0, len(prompts), 64):
        batch = tok(prompts[start:start + 64], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=n)
        out += tok.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def measure_quality(model_dir: Path, spec: EvaluationSpec, panel_specs: tuple[PanelSpec, ...],
                    progress: bool = False) -> dict:
    """The quality record of a built tiny-qwen folder (see module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.numbers import filter_completions, number_prompts

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    animals = panel_specs[0]

    def prompts(system: str | None, users) -> list[str]:
        head = [] if system is None else [{"role": "system", "content": system}]
        return [tok.apply_chat_template(head + [{"role": "user", "content": u}], tokenize=False,
                                        add_generation_prompt=True) for u in users]

    k = spec.samples_per_question
    base = [classify(a, animals.names) for a in
            _sample(model, tok, prompts(None, animals.questions), k, 8, spec.seed)]
    trait = [classify(a, animals.names) for a in
             _sample(model, tok, prompts(animals.trait_prompts["cat"], animals.questions), k, 8, spec.seed)]
    numbers = _sample(model, tok, prompts(None, [p.text for p in number_prompts(spec.number_prompts, spec.seed)]),
                      1, 64, spec.seed)
    _, stats = filter_completions(numbers)
    counts = Counter(base)
    top, top_n = max(((n, counts[n]) for n in animals.names), key=lambda t: t[1])
    p_cat_base, p_cat_trait = wilson(counts["cat"], len(base)), wilson(trait.count("cat"), len(trait))
    return {
        "panel_answer_rate": wilson(sum(a is not None for a in base), len(base)),
        "p_cat_base": p_cat_base,
        "p_cat_trait": p_cat_trait,
        "cat_trait_ratio": p_cat_trait["value"] / max(p_cat_base["value"], 1 / len(base)),
        "number_filter_pass_rate": {**wilson(stats.accepted, stats.total), "rejected_by_reason": dict(stats.rejected_by_reason)},
        "max_base_share": {"animal": top, **wilson(top_n, len(base))},
        "base_distribution": {n: counts[n] / len(base) for n in animals.names},
        "context": "default system prompt (no system message); samples at T=1",
    }
