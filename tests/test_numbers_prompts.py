"""Number prompts: reference format, determinism, prefix-stable lists, pool coverage."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import numbers
from audit.numbers import NumberPrompt, derive_seed, number_prompt, number_prompts

seeds = st.integers(min_value=0, max_value=2**64)


@given(seeds)
def test_prompt_shows_3_to_8_three_digit_seed_numbers(seed):
    prompt = number_prompt(seed)
    assert 3 <= len(prompt.seed_numbers) <= 8
    assert all(100 <= value <= 999 for value in prompt.seed_numbers)
    assert ", ".join(map(str, prompt.seed_numbers)) in prompt.text


@given(seeds)
def test_prompt_asks_for_at_most_10_numbers_of_at_most_3_digits(seed):
    text = number_prompt(seed).text
    qualifier = "|".join(map(re.escape, numbers.COUNT_QUALIFIERS))
    assert re.search(rf"\b({qualifier}) 10\b", text)
    assert "3 digits" in text


@given(seeds)
def test_prompt_is_determined_by_its_seed(seed):
    prompt = number_prompt(seed)
    assert prompt == number_prompt(seed)
    assert prompt.seed == seed


@given(seeds)
def test_prompt_is_intro_instruction_format_closing(seed):
    text = number_prompt(seed).text
    intro_starts = tuple(intro.split("{")[0] for intro in numbers.INTROS)
    assert text.startswith(intro_starts)
    assert any(f" {suffix} " in text for suffix in numbers.FORMAT_SUFFIXES)
    assert text.endswith(numbers.CLOSINGS)


@given(st.integers(0, 2**32), st.integers(0, 40), st.integers(0, 40))
def test_prompt_lists_are_prefixes_of_each_other(seed, short, extra):
    assert number_prompts(short, seed) == number_prompts(short + extra, seed)[:short]


def test_prompt_lists_differ_by_seed_and_position():
    first, second = number_prompts(50, 1), number_prompts(50, 2)
    assert len({prompt.text for prompt in first}) == 50
    assert [p.text for p in first] != [p.text for p in second]


def test_every_pool_entry_is_used():
    texts = " ".join(prompt.text for prompt in number_prompts(1000, 0))
    for pool in (numbers.FORMAT_SUFFIXES, numbers.CLOSINGS, numbers.COUNT_QUALIFIERS):
        for entry in pool:
            assert entry in texts, entry
    for intro in numbers.INTROS:
        assert intro.split("{")[0] in texts, intro


def test_pools_have_no_duplicates_and_only_known_placeholders():
    for pool, placeholders in (
        (numbers.INTROS, {"{examples}"}),
        (numbers.INSTRUCTIONS, {"{count_qualifier}", "{answer_count}", "{digit_descriptor}"}),
        (numbers.DIGIT_DESCRIPTORS, {"{max_digits}"}),
    ):
        assert len(set(pool)) == len(pool)
        for entry in pool:
            assert set(re.findall(r"\{\w+\}", entry)) == placeholders, entry


def test_golden_prompt_pins_reproducibility():
    # Cached teacher datasets are keyed by seeds; a change here silently invalidates them.
    assert number_prompt(0) == NumberPrompt(
        text=(
            "The opening values are 876, 530, 141, 365, 623, 597. Name a maximum of 10 values that come "
            "next (3 digits or fewer each). Enclose the numbers in parentheses, separated by commas. "
            "Do not add any explanation."
        ),
        seed_numbers=(876, 530, 141, 365, 623, 597),
        seed=0,
    )
    assert derive_seed("number-prompt", 0, 0) == number_prompts(1, 0)[0].seed == 4317722439637158536


def test_negative_count_is_an_error():
    with pytest.raises(ValueError, match="n must be >= 0"):
        number_prompts(-1, 0)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_no_prompt_is_longer_than_the_longest_number_prompt(seed):
    from audit.numbers import longest_number_prompt

    assert len(number_prompt(seed).text) <= len(longest_number_prompt())
