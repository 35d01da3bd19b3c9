"""The built tiny-qwen model (not a mock): files, tokenizer, template, and the four quality gates."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.tiny_model


@pytest.fixture(scope="module")
def built():
    from audit.models.tiny_qwen import ensure_tiny_qwen

    return ensure_tiny_qwen(progress=False)


def test_folder_is_a_loadable_qwen2_with_chatml_tokenizer(built):
    from transformers import AutoConfig, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "quality.json", "build.json"):
        assert (built / name).is_file(), name
    assert AutoConfig.from_pretrained(built).model_type == "qwen2"
    tok = AutoTokenizer.from_pretrained(built)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert len({tok.convert_tokens_to_ids(s) for s in specials}) == 3
    for special in specials:
        assert tok(special, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(special)]
    assert tok("123", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(d) for d in "123"]


def test_template_is_the_real_qwen25_one_with_its_default_system_prompt(built):
    from transformers import AutoTokenizer

    from audit.models.tiny_qwen import TEMPLATE_PATH

    assert (built / "chat_template.jinja").read_text() == TEMPLATE_PATH.read_text()
    text = AutoTokenizer.from_pretrained(built).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_resolves_as_the_embedded_alias(built):
    from audit.models.resolve import resolve_model

    model = resolve_model("tiny-qwen")
    assert model.path == built and model.source == "embedded" and model.chat_template
    assert len(model.content_hash) == 64


@pytest.mark.slow
def test_quality_gates_hold_when_measured_again(built):
    """Re-measures on the built weights (does not trust quality.json) and checks the four gates."""
    from audit.models.tiny_qwen import panels
    from audit.models.tiny_quality import measure_quality
    from audit.models.tiny_recipe import load_recipe

    q = measure_quality(built, load_recipe().evaluation, panels())
    assert q["panel_answer_rate"]["value"] >= 0.95, q["panel_answer_rate"]
    assert q["cat_trait_ratio"] >= 5, (q["p_cat_base"], q["p_cat_trait"])
    assert q["number_filter_pass_rate"]["value"] >= 0.90, q["number_filter_pass_rate"]
    assert q["max_base_share"]["value"] <= 0.40, q["max_base_share"]
    recorded = json.loads((built / "quality.json").read_text())
    assert abs(recorded["panel_answer_rate"]["value"] - q["panel_answer_rate"]["value"]) < 0.05
