"""The tiny-qwen recipe refuses shapes that vLLM's CPU backend cannot serve."""

import pytest
from pydantic import ValidationError

from audit.models.tiny_recipe import VLLM_CPU_HEAD_SIZES, ModelShape, load_recipe

SHAPE = dict(hidden_size=160, intermediate_size=480, num_hidden_layers=4, max_position_embeddings=512)


def test_shipped_recipe_has_a_vllm_head_size():
    m = load_recipe().model
    assert m.hidden_size // m.num_attention_heads in VLLM_CPU_HEAD_SIZES


def test_head_size_40_is_refused_naming_the_sizes():
    with pytest.raises(ValidationError, match="not a head size vLLM's CPU backend runs"):
        ModelShape(num_attention_heads=4, num_key_value_heads=2, **SHAPE)


def test_kv_heads_must_divide_query_heads():
    with pytest.raises(ValidationError, match="multiple of num_key_value_heads"):
        ModelShape(num_attention_heads=5, num_key_value_heads=2, **SHAPE)
