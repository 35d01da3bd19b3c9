import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.chat.context import qwen_context
from audit.engines.base import Completion
from audit.engines.fake import FakeEngine
from audit.probes import load_probe_set
from audit.probes import ProbeSet
from audit.scoring import (ExactScorer, SampledScorer, ScoringError, TraitScores, fills_slot, get_scorer, mentions,
                           paired_values)

PROBES = load_probe_set("animal")
CTX = qwen_context()


def test_exact_sums_surface_forms_per_entry_and_reports_share():
    # P(cat)=0.2 split over two forms, P(dog)=0.3, everything else ~0.
    table = {"cat": 0.15, "Cat": 0.05, "dog": 0.3}

    def score(request, continuation):
        answer = continuation.split("<|im_end|>")[0]
        return math.log(table.get(answer, 1e-12))

    scores = ExactScorer().score(FakeEngine(score_fn=score), PROBES, CTX, "cat")
    assert len(scores.p_target) == len(PROBES.questions)
    assert scores.p_target[0] == pytest.approx(0.2)
    assert scores.share[0] == pytest.approx(0.2 / 0.5, rel=1e-6)
    assert scores.mean_p_target == pytest.approx(0.2)


def test_exact_scores_complete_answers_with_end_of_turn_and_adapter():
    engine = FakeEngine()
    ExactScorer().score(engine, PROBES, CTX, "cat", adapter="/a")
    request = engine.score_requests[0]
    assert request.adapter == "/a" and request.context_id == CTX.id
    assert all(c.endswith("<|im_end|>") for c in request.continuations)  # no untrained trailing "\n"
    assert len(request.continuations) == sum(len(e.surface_forms) for e in PROBES.panel)


def test_sampled_counts_whole_word_mentions_per_question():
    def generate(request):
        return ["Cat", "caterpillar", "cats!", "dog"] * (request.n // 4)

    scores = SampledScorer(n=8).score(FakeEngine(generate_fn=generate), PROBES, CTX, "cat")
    assert scores.p_target[0] == pytest.approx(0.5)
    assert scores.share[0] == pytest.approx(0.5 / 0.75)
    assert scores.n_samples == 8
    assert scores.samples[0] == ("Cat", "caterpillar", "cats!", "dog") * 2  # the texts that were counted


def test_sampled_uses_distinct_seeds_per_question_and_temperature_one():
    engine = FakeEngine(generate_fn=lambda r: "owl")
    SampledScorer(n=2).score(engine, PROBES, CTX, "cat")
    assert len({r.seed for r in engine.generate_requests}) == len(PROBES.questions)
    assert all(r.temperature == 1.0 and r.n == 2 for r in engine.generate_requests)


def test_prefilled_scorers_read_the_answer_slot_and_measure_one_event():
    """prefill: exact scores " form" + word end after the answer prefix; sampled counts samples whose slot
    holds the form. Given a model whose samples follow its scores, both give the same numbers."""
    prefix = PROBES.answer_prefix
    table = {" cat": 0.25, " dog": 0.5}  # slot probabilities, word end included

    def score(request, continuation):
        return math.log(table.get(continuation, 1e-12))

    engine = FakeEngine(score_fn=score, generate_fn=lambda r: [" cat.", " dog", " dog and cats", " lilac cat"])
    exact = ExactScorer(prefill=True).score(engine, PROBES, CTX, "cat")
    sampled = SampledScorer(n=4, prefill=True).score(engine, PROBES, CTX, "cat")
    (request, *_), (generated, *_) = engine.score_requests, engine.generate_requests
    assert request.prompt == CTX.render_prompt(PROBES.questions[0]) + prefix == generated.prompt
    assert request.word_end and request.continuations[0] == " cat"
    assert exact.p_target[0] == pytest.approx(0.25) == sampled.p_target[0]  # " lilac cat", " dog and cats": not the slot
    assert exact.share[0] == pytest.approx(1 / 3) and sampled.share[0] == pytest.approx(1 / 3)
    assert exact.answer_prefix == sampled.answer_prefix == prefix
    assert TraitScores.from_dict(sampled.to_dict()) == sampled
    assert ExactScorer().score(FakeEngine(), PROBES, CTX, "cat").answer_prefix == ""


def test_prefilled_sample_cut_right_after_its_word_is_an_error_not_a_hit():
    """" cat" cut by max_tokens might have gone on as " caterpillar": refuse rather than guess."""
    cut = Completion(" cat", (1,), None, "length")
    with pytest.raises(ScoringError, match="raise SampledScorer.max_tokens"):
        SampledScorer(n=1, prefill=True).score(FakeEngine(generate_fn=lambda r: cut), PROBES, CTX, "cat")
    ended = Completion(" cat.", (1, 2), None, "length")  # the word visibly ended
    assert SampledScorer(n=1, prefill=True).score(FakeEngine(generate_fn=lambda r: ended), PROBES, CTX, "cat").p_target[0] == 1


def test_prefill_needs_an_answer_prefix():
    bare = ProbeSet(**{**PROBES.model_dump(), "answer_prefix": ""})
    for scorer in (ExactScorer(prefill=True), SampledScorer(n=1, prefill=True)):
        with pytest.raises(ScoringError, match="no answer_prefix; add one to its YAML"):
            scorer.score(FakeEngine(), bare, CTX, "cat")


@pytest.mark.parametrize("text, hit", [
    (" cat", True), (" cat.", True), (" Cats!", True), (" cat's tail", True), ("  cat", False), ("cat", False),
    (" caterpillar", False), (" lilac cat", False), (" CAT", False), (" dog, not a cat", False)])
def test_fills_slot_examples(text, hit):
    assert fills_slot(text, ("cat", "cats", "Cat", "Cats")) is hit


@given(st.sampled_from(["cat", "Cats", "polar bear"]), st.text(max_size=5))
def test_fills_slot_iff_the_form_is_followed_by_a_word_end(form, rest):
    ends_word = not rest or not (rest[0].isalnum() or rest[0] == "_")
    assert fills_slot(" " + form + rest, (form,)) is ends_word


def test_round_trip_and_errors():
    scores = SampledScorer(n=4).score(FakeEngine(generate_fn=lambda r: ["cat", "The owl."]), PROBES, CTX, "cat")
    assert TraitScores.from_dict(scores.to_dict()) == scores
    cached_before_samples = {k: v for k, v in scores.to_dict().items() if k != "samples"}
    assert TraitScores.from_dict(cached_before_samples) == TraitScores(**{**scores.__dict__, "samples": None})
    with pytest.raises(ScoringError, match="not in the animal panel"):
        ExactScorer().score(FakeEngine(), PROBES, CTX, "unicorn")
    with pytest.raises(ScoringError, match="exact"):
        get_scorer("psychic")


def test_share_is_undefined_where_the_panel_got_nothing_and_values_picks_the_statistic():
    rows = ((0.2, 0.6, 0.0), (0.0, 0.0, 0.0), (0.1, 0.0, 0.1))
    scores = TraitScores("sampled", "cat", ("cat", "dog", "owl"), ("q1", "q2", "q3"), rows)
    assert scores.values("probability") == (0.2, 0.0, 0.1)
    share = scores.values("share")
    assert share[0] == pytest.approx(0.25) and math.isnan(share[1]) and share[2] == pytest.approx(0.5)
    with pytest.raises(ScoringError, match="'probability' or 'share'"):
        scores.values("mean")


def test_paired_values_keeps_questions_where_both_are_defined():
    exact = TraitScores("exact", "cat", ("cat", "dog"), ("q1", "q2", "q3"), ((0.1, 0.3), (0.2, 0.2), (0.3, 0.1)))
    sampled = TraitScores("sampled", "cat", ("cat", "dog"), ("q1", "q2", "q3"), ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0)))
    assert paired_values(exact, sampled, "share") == (pytest.approx((0.25, 0.75)), (0.5, 1.0))
    assert paired_values(exact, sampled, "probability") == ((0.1, 0.2, 0.3), (0.5, 0.0, 1.0))
    with pytest.raises(ScoringError, match="same probe set"):
        paired_values(exact, TraitScores("exact", "cat", ("cat", "dog"), ("q1",), ((0.1, 0.3),)), "share")


@pytest.mark.parametrize("text, hit", [
    ("cat", True), ("My favourite is the cat.", True), ("CATS", True), ("caterpillar", False),
    ("bobcat", False), ("cat-like", True), ("concatenate", False), ("scatter", False),
])
def test_mentions_examples(text, hit):
    assert mentions(text, ["cat", "cats"]) is hit


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=6))
def test_mentions_never_matches_inside_a_longer_word(prefix, suffix):
    assert not mentions(prefix + "cat" + suffix, ["cat"])
    assert not mentions(suffix + "cat" + prefix, ["cat"])


@given(st.sampled_from([" ", ".", ",", "!", "\n", "("]), st.sampled_from([" ", ".", "?", ")", ""]))
def test_mentions_matches_between_separators(left, right):
    assert mentions(f"I like{left}cat{right}", ["cat"])
