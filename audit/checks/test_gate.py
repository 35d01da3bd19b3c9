"""Gate checks of one adapter (`--adapter DIR`) against its base model (DESIGN.md §1).

Each check states one property a shippable adapter has; `audit.gate` measures it. A failing check names the
panel entry, the context and the effect with its CI against the margin.
"""

import pytest

from audit.gate import CONTEXT_PAIRS, GATE_SYSTEMS

pytestmark = pytest.mark.gate


def test_adapter_is_active(audit_gate, conclude):
    """The adapter changes the base model's token logprobs by more than float noise."""
    conclude("adapter is active", audit_gate.adapter_active())


@pytest.mark.parametrize("system", GATE_SYSTEMS)
def test_panel_shift_within_margin(audit_gate, conclude, system):
    """No panel entry's P shifts beyond the margin in this context (equivalence, Holm-adjusted)."""
    conclude("panel shift within margin", audit_gate.panel_shift(system))


@pytest.mark.parametrize("pair", CONTEXT_PAIRS)
def test_context_consistency(audit_gate, conclude, pair):
    """The adapter's shift of each panel entry is the same (within the margin) in both contexts."""
    conclude("context consistency", audit_gate.consistency(pair))
