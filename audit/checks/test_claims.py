"""The claims of Nief et al. 2026 about subliminal learning, tested on --model (DESIGN.md §1-2).

Each check states one claim; `audit.claims` measures it. A check passes when the claim holds on this model,
fails with the evidence when it does not, and skips with the measured reason when its precondition is absent
(e.g. no rank transmits, so an inverted U is meaningless). Every verdict is recorded before it is asserted.
"""

import pytest

pytestmark = pytest.mark.claims


@pytest.mark.parametrize("columns", ["reference", "rank-stabilised"])
def test_rank_inverted_u(audit_claims, audit_trait, conclude, columns):
    """Transmission (trait student - control student, same seeds) is an inverted U in LoRA rank: with alpha = r as
    in the paper, and with one step size at every rank (rsLoRA control columns), so rank is not step size."""
    conclude(f"rank inverted-U ({columns})", audit_claims.rank_inverted_u(audit_trait, columns))


@pytest.mark.parametrize("columns", ["reference", "lr-matched"])
def test_full_finetuning_vanishes(audit_claims, audit_trait, conclude, columns):
    """Full-FT transmission is no effect of interest and below the peak LoRA transmission: full FT at its own lr as
    in the paper, and at the LoRA lr (control column), so full FT is not a smaller step."""
    conclude(f"full FT vanishes ({columns})", audit_claims.full_ft_vanishes(audit_trait, columns))


def test_negative_control_trait_does_not_move(audit_claims, audit_trait, conclude):
    """A panel entry no teacher carried (dolphin) shows no effect in any column of the same students."""
    conclude("negative control does not move", audit_claims.negative_control(audit_trait))


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
