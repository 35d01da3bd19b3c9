"""The cost model's arithmetic: anchored on Nief's full finetune, savings where the design removes work."""

import pytest

from audit import cost_model as cm


def test_the_anchor_is_nief_s_full_finetune_time_and_the_savings_come_from_removed_work():
    assert cm.finetune_flops(True) / (cm.ANCHOR_TFLOPS * 1e12) == pytest.approx(25 * 60)
    assert cm.finetune_flops(False) == pytest.approx(cm.finetune_flops(True) * 4 / 6)
    naive, ours = cm.naive(5), cm.project(5, cm.SEED_PAIRS)
    # at the full 9 seed pairs the saving is the shared controls alone: 9 + 9/5 instead of 2 x 9 per column
    assert ours.training / naive.training == pytest.approx((9 + 9 / 5) / 18)
    assert cm.project(5, 6.2).total < ours.total and cm.project(5, 6.2, 3.0).total < cm.project(5, 6.2).total
    assert ours.scoring < naive.scoring / 10  # one teacher-forced pass per question instead of 100 samples
    assert cm.project(1, 9).training == pytest.approx(naive.training)  # one trait shares nothing
    assert "ratio subaudit / naive: 0.445" in cm.report(5, 6.2, 1.0, cm.ANCHOR_TFLOPS)
