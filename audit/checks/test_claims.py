"""The claims of Nief et al. 2026 about subliminal learning, tested on --model (DESIGN.md §1-2).

Each check states one claim; `audit.claims` measures it. A check passes when the claim holds on this model,
fails with the evidence when it does not, and skips with the measured reason when its precondition is absent
(e.g. no rank transmits, so an inverted U is meaningless). Every verdict is recorded before it is asserted.
"""

import pytest

pytestmark = pytest.mark.claims


def test_rank_inverted_u(audit_claims, audit_trait, conclude):
    """Transmission (trait student - control student, same seeds) is an inverted U in LoRA rank."""
    conclude("rank inverted-U", audit_claims.rank_inverted_u(audit_trait))


def test_full_finetuning_vanishes(audit_claims, audit_trait, conclude):
    """Full-FT transmission is equivalent to zero and below the peak LoRA transmission."""
    conclude("full FT vanishes", audit_claims.full_ft_vanishes(audit_trait))


def test_system_prompt_matched_transmits(audit_claims, audit_trait, conclude):
    """Students transmit when evaluated in the system-prompt context they were trained in."""
    conclude("system prompt: matched cells transmit", audit_claims.system_prompt(audit_trait, "matched"))


def test_system_prompt_mismatched_vanishes(audit_claims, audit_trait, conclude):
    """Students do not transmit (TOST, Holm) in any other context than their training one."""
    conclude("system prompt: mismatched cells vanish", audit_claims.system_prompt(audit_trait, "mismatched"))


def test_trained_default_evaluated_empty_vanishes(audit_claims, audit_trait, conclude):
    """The paper's headline: trained with the template-default prompt, evaluated with an empty one -> nothing."""
    conclude("system prompt: trained template-default, evaluated empty", audit_claims.system_prompt(audit_trait, "headline"))


@pytest.mark.parametrize("only, without", [("entity only", "all but entity"), ("template only", "content only")],
                         ids=["entity", "template"])
def test_localised_to_shared_tokens(audit_claims, audit_trait, conclude, only, without):
    """Position-gated LoRA: on `only` it recovers the stated share of the effect; on `without` it vanishes."""
    conclude(f"localisation: {only}", audit_claims.localised(audit_trait, only, without))
