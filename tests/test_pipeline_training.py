"""The training loop's pure parts: batch order, length buckets and the LR schedule (Hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.pipeline.training import BUCKET_BATCHES, epoch_batches, linear_warmup_decay

lengths_st = st.lists(st.integers(1, 200), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(lengths_st, st.integers(1, 20), st.integers(0, 5), st.integers(0, 2**31), st.booleans())
def test_every_row_once_per_epoch_in_full_batches_but_at_most_one_short_batch_per_window(lengths, size, epoch, seed, bucket):
    batches = epoch_batches(lengths, size, epoch, seed, bucket)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    short = [b for b in batches if len(b) < size]
    windows = -(-len(lengths) // (size * BUCKET_BATCHES)) if bucket else 1
    assert len(short) <= windows and all(len(b) <= size for b in batches)
    assert epoch_batches(lengths, size, epoch, seed, bucket) == batches  # seeded


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=64, max_size=300), st.integers(0, 2**31))
def test_buckets_pad_no_more_than_random_batches(lengths, seed):
    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(epoch_batches(lengths, 8, 0, seed, True)) <= padding(epoch_batches(lengths, 8, 0, seed, False))


def test_epochs_and_seeds_change_the_order():
    lengths = list(range(100))
    assert epoch_batches(lengths, 10, 0, 1, False) != epoch_batches(lengths, 10, 1, 1, False)
    assert epoch_batches(lengths, 10, 0, 1, False) != epoch_batches(lengths, 10, 0, 2, False)


def test_schedule_matches_transformers_linear_warmup():
    import torch
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=11)
    for step in range(11):
        assert abs(opt.param_groups[0]["lr"] - linear_warmup_decay(step, 11, 3)) < 1e-12
        opt.step()
        sched.step()
