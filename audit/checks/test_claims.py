"""Claims of Nief et al. 2026 about subliminal learning, tested on --model (DESIGN §1-2).

Each check records what it measured before asserting, so the report shows the evidence whatever the
verdict. A check skips (with the measured reason) when its precondition is absent.
"""

import pytest

from audit.experiments import HEADLINE_CELL

pytestmark = pytest.mark.claims


def _conclude(record, verdict, name: str, trait: str) -> None:
    record(name=name, trait=trait, context=verdict.context, effect=verdict.effect,
           explanation=verdict.explanation, properties=verdict.properties)
    if verdict.passed is None:
        pytest.skip(verdict.explanation)
    assert verdict.passed, verdict.explanation


@pytest.fixture(scope="session")
def rank_verdict(audit_experiment, audit_session, audit_trait):
    from audit.verdicts import rank_inverted_u

    p = audit_experiment.profile
    audit_session.data[f"rank grid ({audit_trait})"] = (
        f"profile {p.name}: LoRA ranks {list(p.ranks)}, full FT {p.include_full}, dataset seeds "
        f"{list(p.dataset_seeds)}, training seeds {list(p.training_seeds)}, {p.data.n_keep} teacher examples each, "
        f"{p.lora.epochs} epoch(s), {p.objective} labels, {p.lora.precision}, {p.scorer} scorer, statistic: "
        f"{p.statistic}" + (f", answers read after the prefill {audit_experiment.probes.answer_prefix!r}" if p.prefill else ""))
    diverged = audit_experiment.diverged_students(audit_trait)
    if diverged:
        audit_session.data[f"diverged students ({audit_trait})"] = diverged
    audit_session.collector.rank_curves.append(audit_experiment.rank_curve(audit_trait))
    lora, _ = audit_experiment.rank_cells(audit_trait)
    return rank_inverted_u(lora)


def test_rank_inverted_u(rank_verdict, audit_record, audit_trait):
    """Transmission (trait student - control student, same seeds) is an inverted U in LoRA rank."""
    _conclude(audit_record, rank_verdict, "rank inverted-U", audit_trait)


def test_full_finetuning_vanishes(audit_experiment, audit_config, audit_record, audit_trait):
    """Full-FT transmission is equivalent to zero and below the peak LoRA transmission."""
    from audit.verdicts import full_ft_vanishes

    lora, full = audit_experiment.rank_cells(audit_trait)
    if full is None:
        reason = (f"profile {audit_config.profile!r} has no full-finetuning students" if not audit_experiment.profile.include_full
                  else "every full-finetuning seed pair has a diverged student; nothing to measure")
        pytest.skip(reason)
    _conclude(audit_record, full_ft_vanishes(full, lora, audit_config.margin), "full FT vanishes", audit_trait)


@pytest.fixture(scope="session")
def context_verdicts(audit_experiment, audit_config, audit_session, audit_trait, rank_verdict):
    from audit.verdicts import system_prompt_verdicts

    peak = rank_verdict.properties.get("peak_rank")
    if peak is None:
        pytest.skip("no peak rank measured for the rank curve")
    lora, _ = audit_experiment.rank_cells(audit_trait)
    from audit.verdicts import transmits

    if not transmits(lora[peak].estimate()):
        return {"reason": f"no rank transmits in the default context ({rank_verdict.explanation})"}
    grid = audit_experiment.context_grid(audit_trait, peak)
    audit_session.collector.heatmaps.append(audit_experiment.heatmap(audit_trait, grid))
    return system_prompt_verdicts(grid, audit_config.margin, HEADLINE_CELL)


def _context_check(verdicts, key, record, name, trait):
    if "reason" in verdicts:
        record(name=name, trait=trait, explanation=verdicts["reason"])
        pytest.skip(verdicts["reason"])
    _conclude(record, verdicts[key], name, trait)


def test_system_prompt_matched_transmits(context_verdicts, audit_record, audit_trait):
    """Students transmit when evaluated in the system-prompt context they were trained in."""
    _context_check(context_verdicts, "matched", audit_record, "system prompt: matched cells transmit", audit_trait)


def test_system_prompt_mismatched_vanishes(context_verdicts, audit_record, audit_trait):
    """Students do not transmit (TOST, Holm) in any other context than their training one."""
    _context_check(context_verdicts, "mismatched", audit_record, "system prompt: mismatched cells vanish", audit_trait)


def test_trained_default_evaluated_empty_vanishes(context_verdicts, audit_record, audit_trait):
    """The paper's headline: trained with the template-default prompt, evaluated with an empty one -> nothing."""
    _context_check(context_verdicts, "headline", audit_record,
                   "system prompt: trained template-default, evaluated empty", audit_trait)


@pytest.fixture(scope="session")
def localisation_cells(audit_experiment, audit_session, audit_trait, rank_verdict):
    from audit.verdicts import transmits

    peak = rank_verdict.properties.get("peak_rank")
    lora, _ = audit_experiment.rank_cells(audit_trait)
    if peak is None or not transmits(lora[peak].estimate()):
        return {"reason": f"no rank transmits in the default context ({rank_verdict.explanation})"}
    cells = audit_experiment.localisation(audit_trait, peak)
    audit_session.collector.localisations.append(audit_experiment.localisation_bars(audit_trait, cells))
    return cells


@pytest.mark.parametrize("only, without", [("entity only", "all but entity"), ("template only", "content only")],
                         ids=["entity", "template"])
def test_localised_to_shared_tokens(localisation_cells, audit_config, audit_record, audit_trait, only, without):
    """Position-gated LoRA: on `only` it recovers the stated share of the effect; on `without` it vanishes."""
    from audit.verdicts import localisation_verdict

    name = f"localisation: {only}"
    if "reason" in localisation_cells:
        audit_record(name=name, trait=audit_trait, explanation=localisation_cells["reason"])
        pytest.skip(localisation_cells["reason"])
    verdict = localisation_verdict(localisation_cells, only, without, audit_config.localisation_share, audit_config.margin)
    _conclude(audit_record, verdict, name, audit_trait)
