"""The completion filter: reference behaviour on tricky inputs, reasons for every rejection, round trips."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.numbers import (
    FilterStats,
    RejectReason,
    filter_completion,
    filter_completions,
    format_numbers,
)

REASONS = {reason.value for reason in RejectReason}


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("(1 2)", (1, 2)),  # brackets stripped, space separator
        ("[1, 2, 3]", (1, 2, 3)),
        ("[1, 2].", (1, 2)),  # trailing '.' first, then brackets
        ("1; 2; 3.", (1, 2, 3)),
        ("7", (7,)),  # a single bare number
        ("1\n2\n3", (1, 2, 3)),  # one per line
        ("1 ,2 ,3", (1, 2, 3)),  # separator is whatever sits between the first two numbers
        ("1,2,3", (1, 2, 3)),
        ("007, 10", (7, 10)),  # leading zeros are digits; int() reads them
        ("0, 999", (0, 999)),
        (", ".join(["5"] * 10), (5,) * 10),  # exactly 10 is allowed
        ("  1, 2\n", (1, 2)),  # surrounding whitespace is stripped (deliberate deviation)
    ],
)
def test_accepts_clean_lists(text, numbers):
    result = filter_completion(text)
    assert result.accepted and result.numbers == numbers and result.reason is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1, 2; 3", "non-digit-part"),  # mixed separators: split on ", " leaves "2; 3"
        ("1.5", "invalid-format"),  # '.' between numbers is not a separator
        ("1-2-3", "invalid-format"),
        ("１２３", "non-ascii-digit"),  # full-width digits (the reference checks string.digits)
        ("1, ２", "non-ascii-digit"),
        ("1, 2,", "non-digit-part"),  # trailing comma with ", " separator leaves "2,"
        ("1,2,", "empty-part"),  # trailing comma with "," separator leaves ""
        ("1 2  3", "empty-part"),  # uneven whitespace
        (", ".join(map(str, range(11))), "too-many-numbers"),
        ("1000", "out-of-range"),
        ("5, 1000", "out-of-range"),
        ("", "empty"),
        ("  \n", "empty"),
        ("[]", "empty"),
        ("no numbers here", "no-numbers"),
        ("I pick 5", "non-digit-part"),  # a single number must be the whole answer
        ("Sure: 1, 2", "non-digit-part"),
        ("1, 2, three", "non-digit-part"),
        ("-1, 2", "non-digit-part"),  # signs are not digits
        ("1²", "non-digit-part"),
        ("[1, 2", "non-digit-part"),  # unbalanced bracket is not stripped
        ("1, 2..", "non-digit-part"),  # only one trailing '.' goes, leaving the part "2."
    ],
)
def test_rejects_with_reason(text, reason):
    result = filter_completion(text)
    assert not result.accepted and result.numbers == () and result.reason == reason


def test_too_many_takes_precedence_over_out_of_range():
    assert filter_completion(", ".join(["1000"] * 11)).reason == "too-many-numbers"


messy_text = st.text(
    alphabet=st.sampled_from(list("0123456789 ,;.\n[]()-ab１٣x")) | st.characters(), max_size=60
)


@given(messy_text)
def test_every_verdict_is_consistent(text):
    result = filter_completion(text)
    if result.accepted:
        assert result.reason is None
        assert 1 <= len(result.numbers) <= 10
        assert all(isinstance(n, int) and 0 <= n <= 999 for n in result.numbers)
    else:
        assert result.reason in REASONS
        assert result.numbers == ()


@given(messy_text)
def test_accepted_text_contains_its_numbers_in_order(text):
    result = filter_completion(text)
    if result.accepted:
        digits = "".join(ch if ch.isdigit() else " " for ch in text).split()
        assert tuple(int(d) for d in digits) == result.numbers


number_lists = st.lists(st.integers(0, 999), min_size=1, max_size=10)
separators = st.sampled_from([", ", ",", " ", ";", "; ", "\n", ",\n", " , ", "\t"])
brackets = st.sampled_from(["", "[]", "()"])


@given(number_lists, separators, brackets, st.booleans())
def test_formatted_valid_lists_round_trip(values, separator, bracket, period):
    text = format_numbers(values, separator, bracket, period)
    assert filter_completion(text).numbers == tuple(values)


@given(st.lists(st.integers(0, 999), min_size=11, max_size=40), separators)
def test_more_than_ten_numbers_are_rejected(values, separator):
    assert filter_completion(format_numbers(values, separator)).reason == "too-many-numbers"


@given(number_lists, st.integers(1000, 10**6), separators)
def test_values_above_999_are_rejected(values, big, separator):
    values = (values + [big])[-10:]
    assert filter_completion(format_numbers(values, separator)).reason == "out-of-range"


@pytest.mark.parametrize(("separator", "bracket"), [("-", ""), ("", ""), (", ", "{}")])
def test_format_numbers_refuses_what_the_filter_would_reject(separator, bracket):
    with pytest.raises(ValueError, match="format_numbers"):
        format_numbers([1, 2], separator, bracket)


def test_filter_completions_counts_reasons_and_rate():
    texts = ["1, 2", "(3 4)", "x", "1.5", "1.5", "1000", "5", "6", "7", "8"]
    results, stats = filter_completions(texts)
    assert [r.accepted for r in results] == [True, True, False, False, False, False, True, True, True, True]
    assert stats == FilterStats(
        total=10, accepted=6, rejected_by_reason={"no-numbers": 1, "invalid-format": 2, "out-of-range": 1}
    )
    assert stats.rejected == 4
    assert stats.acceptance_rate == pytest.approx(0.6)
    assert stats.to_dict()["rejected_by_reason"] == {"invalid-format": 2, "no-numbers": 1, "out-of-range": 1}


def test_acceptance_interval_is_wilson():
    low, high = FilterStats(total=10, accepted=8).acceptance_interval()
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert FilterStats(total=5, accepted=5).acceptance_interval()[1] == 1.0


def test_empty_stats_have_no_rate():
    _, stats = filter_completions([])
    assert math.isnan(stats.acceptance_rate)
    assert stats.acceptance_interval() == (0.0, 1.0)
    assert stats.to_dict()["acceptance_rate"] is None


@given(st.lists(messy_text, max_size=20))
def test_stats_add_up(texts):
    results, stats = filter_completions(texts)
    assert stats.accepted + sum(stats.rejected_by_reason.values()) == stats.total == len(results)
