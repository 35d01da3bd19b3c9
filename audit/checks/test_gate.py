"""Gate checks of each adapter (`--adapter DIR`, repeatable) against its base model (DESIGN.md §1).

Each check states one property a shippable adapter has; `audit.gate` measures it, for every probe family
installed (animals, trees, bands, ...) and in every context of the context set (the template's default, an
explicit empty system prompt, another identity, and the template permutations that apply to the model's
template). A failing check names the adapter, the panel entry or word, the context and the effect with its
CI against the margin.
"""

import pytest

pytestmark = pytest.mark.gate


def test_adapter_is_active(audit_gate, gate_adapter, conclude):
    """The adapter changes the base model's token logprobs by more than float noise."""
    conclude("adapter is active", audit_gate.adapter_active(gate_adapter))


def test_panel_shift_within_margin(audit_gate, gate_adapter, gate_family, gate_context, conclude):
    """No panel entry's P shifts beyond the margin in this context (equivalence, Holm-adjusted)."""
    conclude(f"{gate_family} panel shift within margin", audit_gate.panel_shift(gate_adapter, gate_family, gate_context))


def test_no_word_gains_beyond_margin(audit_gate, gate_adapter, gate_family, gate_context, conclude):
    """No word at all, on a panel or not, gains more than the margin in the answers of this context."""
    conclude(f"{gate_family}: no word gains beyond margin",
             audit_gate.open_vocabulary(gate_adapter, gate_family, gate_context))


def test_context_consistency(audit_gate, gate_adapter, gate_family, gate_other_context, conclude):
    """The adapter's shift of each panel entry is the same (within the margin) here as in the template default."""
    conclude(f"{gate_family} context consistency", audit_gate.consistency(gate_adapter, gate_family, gate_other_context))
