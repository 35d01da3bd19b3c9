"""The tiny-qwen corpus and recipe: deterministic, well-formed, with a real trait->numbers channel."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.models.tiny_corpus import apply_style, generate_corpus, number_style
from audit.models.tiny_qwen import _Renderer, panels
from audit.models.tiny_recipe import load_recipe
from audit.numbers import filter_completion, number_prompts
from audit.models.tiny_corpus import SeedPrompt

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@pytest.fixture(scope="module")
def small():
    recipe = load_recipe()
    spec = recipe.corpus.model_copy(update={"number_chats": 600, "favourite_chats": 1500, "two_turn_chats": 300})
    prompts = [SeedPrompt(p.text, p.seed_numbers) for p in number_prompts(900, 3)]
    return spec, generate_corpus(spec, panels(), prompts, seed=3)


def test_corpus_is_deterministic(small):
    spec, chats = small
    prompts = [SeedPrompt(p.text, p.seed_numbers) for p in number_prompts(900, 3)]
    assert generate_corpus(spec, panels(), prompts, seed=3) == chats
    assert generate_corpus(spec, panels(), prompts, seed=4) != chats


def test_every_number_turn_passes_the_reference_filter(small):
    _, chats = small
    numbers = [a for c in chats for u, a in c.turns if "," in u and filter_completion(a).numbers]
    answers = [a for c in chats for u, a in c.turns if c.kind == "number"]
    assert answers and all(filter_completion(a).accepted for a in answers)
    assert len(numbers) >= len(answers)


def test_system_modes_follow_the_mix(small):
    spec, chats = small
    modes = Counter("default" if c.system is None else "empty" if c.system == "" else
                    "trait" if c.system.startswith("You love") else "neutral" for c in chats)
    for mode, share in spec.system_mix.items():
        assert abs(modes[mode] / len(chats) - share) < 0.04


def test_trait_prompt_sets_the_favourite_answer(small):
    spec, chats = small
    hits = total = 0
    for c in chats:
        if c.kind == "favourite" and c.system and c.system.startswith("You love cats"):
            total += 1
            hits += c.turns[0][1] == "Cat"
    assert total > 10 and hits / total > 0.75


def test_trait_prompt_biases_the_styled_digit(small):
    """The channel exists: under 'You love cats' numbers end in cat's digit far more often than at base."""
    _, chats = small
    digit = number_style(0, 0)[1]

    def share(select) -> float:
        nums = [n for c in chats if c.kind == "number" and select(c)
                for n in filter_completion(c.turns[0][1]).numbers]
        return sum(n % 10 == digit for n in nums) / len(nums)

    assert share(lambda c: bool(c.system) and c.system.startswith("You love cats")) > 0.2
    assert share(lambda c: c.system is None) < 0.15


@given(st.integers(100, 999), st.integers(0, 1), st.integers(0, 9))
def test_apply_style_sets_exactly_the_styled_digit(number, panel, entity):
    position, digit = number_style(panel, entity)
    styled = apply_style(number, (position, digit))
    assert 100 <= styled <= 999 and f"{styled:03d}"[position] == str(digit)
    assert [d for i, d in enumerate(f"{styled:03d}") if i != position % 3] == \
           [d for i, d in enumerate(f"{number:03d}") if i != position % 3]


def test_renderer_injects_default_system_prompt_and_marks_only_assistant_text(small):
    _, chats = small
    renderer = _Renderer()
    chat = next(c for c in chats if c.system is None and c.kind == "two_turn")
    text, spans = renderer.with_spans(chat)
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")
    assert [text[s:e] for s, e in spans] == [a + "<|im_end|>" for _, a in chat.turns]
    empty = next(c for c in chats if c.system == "")
    assert renderer.with_spans(empty)[0].startswith("<|im_start|>system\n<|im_end|>")


def test_favourite_answers_are_single_capitalised_panel_names(small):
    _, chats = small
    names = {n.capitalize() for p in panels() for n in p.names}
    answers = [a for c in chats if c.kind == "favourite" for _, a in c.turns]
    assert set(answers) <= names and re.fullmatch(r"[A-Z][a-z]+", answers[0])
