"""Verdicts on synthetic measurements with known truth: each verdict can pass, fail and skip."""

import numpy as np
import pytest

from audit.pipeline.analysis import EffectRule, PairedCell
from audit.verdicts.claims import full_ft_vanishes, rank_inverted_u, system_prompt_verdicts
from audit.verdicts.gate import gate_consistency_verdicts, gate_panel_verdicts

PANEL = ("cat", "dog", "owl")
N_Q = 50
RULE = EffectRule(relative=1.0, floor=0.01)


def cell(mean: float, sd: float = 0.01, seeds: int = 6, seed: int = 0) -> PairedCell:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(N_Q * seeds)
    diffs = mean + sd * (noise - noise.mean())  # exact mean: the tests are about the logic, not luck
    return PairedCell(tuple(diffs), tuple(list(range(N_Q)) * seeds), tuple(np.repeat(range(seeds), N_Q)))


def panel_rows(rng, shift=(0.0, 0.0, 0.0)):
    base = rng.dirichlet([2, 2, 2], size=N_Q) * 0.5
    return base, base + np.asarray(shift) + 0.002 * rng.standard_normal(base.shape)


def test_gate_fails_only_in_the_context_where_cat_shifts_and_names_it():
    rng = np.random.default_rng(1)
    base, adapter = {}, {}
    for ctx in ("template-default", "empty", "custom:chatgpt"):
        base[ctx], adapter[ctx] = panel_rows(rng, (0.15, -0.05, 0.0) if ctx == "template-default" else (0, 0, 0))
    verdicts = gate_panel_verdicts(PANEL, base, adapter, margin=0.02)
    assert verdicts["empty"].passed and verdicts["custom:chatgpt"].passed
    failing = verdicts["template-default"]
    assert failing.passed is False and failing.context == "template-default"
    assert "'cat'" in failing.explanation and "template-default" in failing.explanation
    assert failing.effect.ci_low > 0.1 and failing.effect.p_adjusted >= 0.05
    consistency = gate_consistency_verdicts(PANEL, base, adapter, margin=0.02)
    assert consistency["empty-vs-custom:chatgpt"].passed
    assert not consistency["template-default-vs-empty"].passed


def test_gate_passes_a_neutral_adapter():
    rng = np.random.default_rng(2)
    base, adapter = {}, {}
    for ctx in ("template-default", "empty"):
        base[ctx], adapter[ctx] = panel_rows(rng)
    assert all(v.passed for v in gate_panel_verdicts(PANEL, base, adapter, margin=0.02).values())
    assert all(v.passed for v in gate_consistency_verdicts(PANEL, base, adapter, margin=0.02).values())


def test_rank_inverted_u_passes_on_a_peak_and_skips_without_transmission():
    peaked = {r: cell(m, seed=i) for i, (r, m) in enumerate([(1, 0.0), (2, 0.02), (4, 0.05), (8, 0.08), (16, 0.05),
                                                              (32, 0.02), (64, 0.0)])}
    verdict = rank_inverted_u(peaked, RULE)
    assert verdict.passed is True and verdict.properties["peak_rank"] == 8, verdict.explanation
    flat = {r: cell(0.0, seed=r) for r in (1, 4, 16, 64)}  # every rank equivalent to 0: the claim does not hold
    absent = rank_inverted_u(flat, RULE)
    assert absent.passed is False and absent.explanation.startswith("no rank transmits")
    two_pairs = {r: cell(0.005 * (r == 4), sd=0.05, seeds=2, seed=r) for r in (1, 4, 16)}
    undecided = rank_inverted_u(two_pairs, RULE)
    assert undecided.passed is None and undecided.explanation.startswith("undecided")
    assert undecided.properties["seed_pairs_needed"] > 2


def test_rank_monotone_rise_is_not_an_inverted_u():
    rising = {r: cell(0.01 * i, seed=i) for i, r in enumerate((1, 2, 4, 8, 16, 32, 64))}
    assert rank_inverted_u(rising, RULE).passed is False


def test_full_ft_vanishes_needs_no_effect_and_a_lower_value_than_the_peak():
    lora = {1: cell(0.01, seed=1), 4: cell(0.06, seed=2), 16: cell(0.02, seed=3)}
    vanishes = full_ft_vanishes(cell(0.0, seed=9), lora, RULE, "compared: full FT at lr 2e-05 with LoRA at lr 0.0002")
    assert vanishes.passed is True and vanishes.explanation.endswith("(compared: full FT at lr 2e-05 with LoRA at lr 0.0002)")
    transmitting_full = full_ft_vanishes(cell(0.05, seed=9), lora, RULE)
    assert transmitting_full.passed is False and transmitting_full.explanation.startswith("full FT transmits")
    no_lora = {r: cell(0.0, seed=r) for r in (1, 4)}
    assert full_ft_vanishes(cell(0.0), no_lora, RULE).passed is None
    full_alone = full_ft_vanishes(cell(0.06, seed=9), no_lora, RULE)  # the opposite of the claim
    assert full_alone.passed is False and "while no LoRA rank does" in full_alone.explanation
    noisy_full = full_ft_vanishes(cell(0.0, sd=0.3, seeds=2, seed=9), lora, RULE)
    assert noisy_full.passed is None and noisy_full.explanation.startswith("undecided")


@pytest.mark.parametrize("leak, expect", [(0.0, True), (0.05, False)])
def test_system_prompt_grid(leak, expect):
    systems = ("template-default", "empty", "custom:chatgpt")
    grid = {(t, e): cell(0.06 if t == e else (leak if (t, e) == ("template-default", "empty") else 0.0), seed=i)
            for i, (t, e) in enumerate((t, e) for t in systems for e in systems)}
    verdicts = system_prompt_verdicts(grid, RULE, headline=("template-default", "empty"))
    assert verdicts["matched"].passed is True
    assert verdicts["mismatched"].passed is expect and verdicts["headline"].passed is expect
    assert verdicts["headline"].context == "empty"


def test_system_prompt_grid_skips_without_matched_transmission():
    systems = ("a", "b")
    grid = {(t, e): cell(0.0, seed=i) for i, (t, e) in enumerate((t, e) for t in systems for e in systems)}
    verdicts = system_prompt_verdicts(grid, RULE, headline=("a", "b"))
    assert all(v.passed is None for v in verdicts.values())
    assert verdicts["matched"].explanation.startswith("no matched cell transmits")


def test_localisation_needs_the_share_and_nothing_elsewhere():
    from audit.verdicts.claims import localisation_verdict

    base = {"everywhere": cell(0.06, seed=1), "entity only": cell(0.045, seed=2), "all but entity": cell(0.0, seed=3)}
    ok = localisation_verdict(base, "entity only", "all but entity", share=0.7, rule=RULE)
    assert ok.passed is True and ok.properties["recovered_share"] == pytest.approx(0.75)
    too_small = localisation_verdict(base, "entity only", "all but entity", share=0.9, rule=RULE)
    assert too_small.passed is False and "needs 90%" in too_small.explanation
    leaking = localisation_verdict({**base, "all but entity": cell(0.04, seed=3)}, "entity only", "all but entity",
                                   share=0.7, rule=RULE)
    assert leaking.passed is False
    none = localisation_verdict({**base, "everywhere": cell(0.0)}, "entity only", "all but entity", 0.7, RULE)
    assert none.passed is None


def test_entity_of_the_default_prompt_and_gates():
    from audit.chat import qwen_context
    from audit.engines import LoraGate
    from audit.claims import LocalisationError, default_prompt_entity, gate_for

    assert default_prompt_entity(qwen_context("template-default")) == "Qwen"
    with pytest.raises(LocalisationError):
        default_prompt_entity(qwen_context("empty"))

    class Map:
        template = (0, 1, 2)

        def entity(self, text):
            return (5, 6)

    assert gate_for("everywhere", Map(), "Qwen") is None
    assert gate_for("entity only", Map(), "Qwen") == LoraGate(frozenset({5, 6}), generated="off")
    assert gate_for("all but entity", Map(), "Qwen") == LoraGate(frozenset({5, 6}), generated="on", invert=True)
    assert gate_for("template only", Map(), "Qwen") == LoraGate(frozenset({0, 1, 2}), generated="off")
    assert gate_for("content only", Map(), "Qwen") == LoraGate(frozenset({0, 1, 2}), generated="on", invert=True)


def test_transmission_is_decided_on_seed_pair_means():
    # Two seed pairs whose means differ by 0.03: questions alone would call this "equivalent to 0 at
    # +-0.02"; with the seed pair as the unit (df = 1) it is undecided, and says how many pairs would decide it.
    diffs = tuple([-0.015] * N_Q + [0.015] * N_Q)
    two_seeds = PairedCell(diffs, tuple(list(range(N_Q)) * 2), tuple([0] * N_Q + [1] * N_Q))
    decision = two_seeds.decision(EffectRule(1.0, 0.02))
    assert decision.outcome == "undecided" and decision.n_replicates == 2 and decision.replicates_needed > 2
    assert two_seeds.estimate().n_clusters == 2


def test_the_smallest_effect_follows_the_control_rate():
    control = (0.3,) * (2 * N_Q)
    cell_ = PairedCell((0.1,) * (2 * N_Q), tuple(list(range(N_Q)) * 2), tuple([0] * N_Q + [1] * N_Q), 0,
                       tuple(c + 0.1 for c in control), control)
    assert cell_.control_rate == pytest.approx(0.3)
    assert cell_.decision(EffectRule(1.0, 0.01)).smallest_effect == pytest.approx(0.3)
    assert cell_.decision(EffectRule(0.1, 0.01)).smallest_effect == pytest.approx(0.03)


def test_paired_cells_leave_out_seed_pairs_with_a_diverged_student():
    from types import SimpleNamespace as NS

    from audit.pipeline.analysis import paired_cells

    def result(kind, seed, p, diverged=False):
        cell = NS(teacher=NS(kind=kind), student=NS(label="lora-r8"), dataset_seed=0, training_seed=seed)
        return NS(cell=cell, scores=NS(values=lambda statistic: (p, p)), training={"diverged": diverged})

    results = [result("system_prompt", 0, 0.3), result("control", 0, 0.1),
               result("system_prompt", 1, 0.9, diverged=True), result("control", 1, 0.1)]
    cell = paired_cells(results)["lora-r8"]
    assert cell.diverged_pairs == 1 and cell.measured
    assert cell.diffs == pytest.approx((0.2, 0.2))  # the diverged pair's +0.8 is not transmission
    everything_diverged = paired_cells([result("system_prompt", 0, 0.9, True), result("control", 0, 0.1)])["lora-r8"]
    assert not everything_diverged.measured and everything_diverged.diverged_pairs == 1


@pytest.mark.parametrize("prefill", [False, True])
def test_gated_values_everywhere_is_the_exact_scorer(prefill):
    """The localisation grid's ungated condition scores exactly what ExactScorer does (prefill included)."""
    import math

    from audit.chat.context import qwen_context
    from audit.engines.fake import FakeEngine
    from audit.claims import gated_values
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer

    probes, context = load_probe_set("animal"), qwen_context()
    engine = FakeEngine(score_fn=lambda request, continuation: math.log(0.3 if "cat" in continuation else 0.01))
    got = gated_values(engine, None, probes, context, "cat", "/a", "everywhere", "share", prefill)
    want = ExactScorer(prefill=prefill).score(FakeEngine(score_fn=engine._score_fn), probes, context, "cat", "/a")
    assert got == want.values("share")
    assert all(r.gate is None and r.adapter == "/a" and r.word_end is prefill for r in engine.score_requests)


def _word_rows(n, gain_word=None, gain=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = {w: float(p) for w, p in zip(("cat", "dog", "owl"), rng.dirichlet([5, 5, 5]) * 0.9)}
        if gain_word:
            row[gain_word] = row.get(gain_word, 0.0) + gain
        rows.append(row)
    return rows


def test_open_vocabulary_names_a_word_on_no_panel_in_its_context():
    from audit.verdicts.gate import open_vocabulary_verdict

    base = _word_rows(50)
    adapter = [{**row, "oak": 0.4} for row in base]
    verdict, shifts = open_vocabulary_verdict(base, adapter, 0.02, "sys=template-default/perm=identity")
    assert verdict.passed is False and verdict.trait == "oak" and shifts[0].word == "oak"
    assert "'oak' gains +0.4000" in verdict.explanation and "sys=template-default/perm=identity" in verdict.explanation
    assert verdict.effect.n == 25 and verdict.properties["js_divergence"] > 0.05


def test_open_vocabulary_passes_noise_below_the_margin_and_skips_too_few_questions():
    from audit.verdicts.gate import open_vocabulary_verdict

    base = _word_rows(50, seed=1)
    noisy = [{w: max(0.0, p + 0.005 * np.sin(7 * i + len(w))) for w, p in row.items()} for i, row in enumerate(base)]
    verdict, shifts = open_vocabulary_verdict(base, noisy, 0.02, "c")
    assert verdict.passed is True and len(shifts) <= 10 and all(s.p_adjusted >= 0.05 for s in shifts)
    assert open_vocabulary_verdict(base[:5], noisy[:5], 0.02, "c")[0].passed is None


def test_open_vocabulary_candidates_are_chosen_on_other_questions_than_they_are_tested_on():
    from audit.verdicts.gate import open_vocabulary_verdict

    base = _word_rows(40, seed=2)
    # 'lucky' gains only on the even (selection) questions: chosen, but its test on the odd ones finds nothing.
    adapter = [{**row, "lucky": 0.5 if i % 2 == 0 else 0.0} for i, row in enumerate(base)]
    verdict, shifts = open_vocabulary_verdict(base, adapter, 0.02, "c")
    assert shifts[0].word == "lucky" and abs(shifts[0].estimate.value) < 1e-12 and verdict.passed is True


def test_consistency_against_a_reference_context_pairs_each_other_context_with_it():
    base = {c: [[0.1, 0.2, 0.3]] * N_Q for c in ("ref", "a", "b")}
    verdicts = gate_consistency_verdicts(PANEL, base, base, 0.02, reference="ref")
    assert set(verdicts) == {"a-vs-ref", "b-vs-ref"} and all(v.passed for v in verdicts.values())


def test_negative_control_passes_when_still_fails_when_it_moves_and_is_undecided_when_noisy():
    from audit.verdicts.claims import negative_control

    def with_control(c: PairedCell, rate: float) -> PairedCell:
        return PairedCell(c.diffs, c.questions, c.seed_pairs, 0, tuple(rate + d for d in c.diffs),
                          tuple(rate for _ in c.diffs))

    still = {"lora-r4": with_control(cell(0.0, seed=1), 0.05), "full": with_control(cell(0.001, seed=2), 0.05)}
    verdict = negative_control(still, "dolphin", RULE)
    assert verdict.passed is True and "all 2 columns" in verdict.explanation
    moving = {**still, "lora-r16": with_control(cell(0.2, seed=3), 0.05)}
    failed = negative_control(moving, "dolphin", RULE)
    assert failed.passed is False and "lora-r16" in failed.explanation and failed.effect.value == pytest.approx(0.2)
    noisy = {**still, "lora-r64": with_control(cell(0.0, sd=0.5, seeds=2, seed=4), 0.05)}
    undecided = negative_control(noisy, "dolphin", RULE)
    assert undecided.passed is None and undecided.explanation.startswith("undecided")
    assert undecided.properties["seed_pairs_needed"] > 2
