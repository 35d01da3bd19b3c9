"""How answers are read: the measured one-word vs answer-slot rule, and words from next tokens."""

import math

import pytest

from hypothesis import given
from hypothesis import strategies as st

from audit.reading import choose_reading, word_distribution, word_of


def test_the_rule_reads_where_the_base_puts_its_panel_mass():
    one_word = choose_reading([0.9, 0.95], [0.1, 0.2])
    assert not one_word.slot and one_word.mode == "one-word answer" and one_word.n == 2
    chatty = choose_reading([0.004, 0.006], [0.6, 0.5])  # SmolLM2-like: under 1% lone words
    assert chatty.slot and "0.005" in chatty.describe() and "0.550" in chatty.describe()
    no_prefix = choose_reading([0.01], None)
    assert not no_prefix.slot and "no answer prefix" in no_prefix.describe()


def test_tokens_merge_into_the_word_they_start():
    dist = word_distribution((" Owl", "owl", " cat", "\n", "<|im_end|>", " caterp"),
                             tuple(math.log(p) for p in (0.3, 0.1, 0.2, 0.1, 0.1, 0.05)))
    assert set(dist) == {"owl", "cat", "caterp"}  # whitespace and special tokens start no word
    assert math.isclose(dist["owl"], 0.4) and math.isclose(dist["cat"], 0.2) and math.isclose(dist["caterp"], 0.05)


@given(st.text())
def test_word_of_is_a_lower_case_word_or_empty(token):
    word = word_of(token)
    assert word == word.lower() and word == word.strip()
    assert not word or word[0].isalnum()


def test_a_declared_reading_is_fixed_but_still_measured():
    slot = choose_reading([0.9], [0.1], declared="slot")
    assert slot.slot and "declared 'slot'" in slot.describe() and "0.900" in slot.describe()
    assert not choose_reading([0.001], [0.9], declared="one-word").slot
    with pytest.raises(ValueError, match="answer_prefix"):
        choose_reading([0.1], None, declared="slot")
    with pytest.raises(ValueError, match="auto, one-word, slot"):
        choose_reading([0.1], [0.2], declared="sentence")
