"""The sequential design: its looks, the alpha each spends, and its error rate under the null (simulated)."""

import numpy as np
import pytest

from audit.stats._inputs import StatsInputError
from audit.stats.decision import decide_effect
from audit.stats.sequential import Look, looks, pocock_spending, stopping_look


def test_looks_double_in_steps_up_to_the_cap_and_spend_exactly_alpha():
    design = looks(2, 8)
    assert [look.replicates for look in design] == [2, 4, 8]
    assert sum(look.alpha for look in design) == pytest.approx(0.05)
    assert design[-1].spent == pytest.approx(0.05)
    assert all(look.alpha > 0 for look in design)
    assert [look.replicates for look in looks(3, 9, step=3)] == [3, 6, 9]  # whole training seeds of 3 dataset seeds
    assert [look.replicates for look in looks(2, 5)] == [2, 4, 5]
    assert looks(3, 3) == [Look(3, 0.05, 0.05)]  # a fixed design tests at the full alpha
    assert pocock_spending(0.0, 0.05) == 0 and pocock_spending(1.0, 0.05) == pytest.approx(0.05)
    with pytest.raises(StatsInputError):
        looks(0, 4)


def test_stopping_look_is_the_first_decided_one():
    design = looks(2, 8)
    seen = []
    assert stopping_look(design, lambda look: seen.append(look.replicates) or look.replicates >= 4).replicates == 4
    assert seen == [2, 4]
    assert stopping_look(design, lambda look: False) == design[-1]


def _transmits_sequentially(values: np.ndarray, design) -> bool:
    decision = {}

    def decided(look):
        decision["d"] = decide_effect(values[:look.replicates], 0.01, alpha=look.alpha)
        return decision["d"].outcome != "undecided"

    stopping_look(design, decided)
    return decision["d"].outcome == "effect"


def test_no_transmission_is_declared_at_most_at_the_nominal_rate_over_all_looks():
    rng = np.random.default_rng(11)
    design = looks(2, 8)
    # The null with a spread that leaves most looks undecided, the hardest case for the error rate.
    hits = sum(_transmits_sequentially(rng.normal(0.0, 0.03, 8), design) for _ in range(600))
    assert hits / 600 <= 0.04  # one-sided: an effect is a t interval above 0
    naive = sum(any(decide_effect(v[:n], 0.01).estimate.ci_low > 0 for n in (2, 4, 8))
                for v in rng.normal(0.0, 0.03, (600, 8)))
    assert naive / 600 > hits / 600  # testing every look at the full alpha errs more often
