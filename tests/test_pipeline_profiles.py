from dataclasses import replace

import pytest

from audit.pipeline.profiles import (
    PAPER,
    QUICK,
    OptimConfig,
    ProfileError,
    StudentConfig,
    TeacherDataConfig,
    TrainSeeds,
    get_profile,
)


def test_paper_profile_matches_reference_protocol():
    assert PAPER.lora.lr == 2e-4 and PAPER.lora.batch_size == 66 and PAPER.lora.epochs == 3
    assert PAPER.full.lr == 2e-5 and PAPER.full.batch_size == 64
    assert PAPER.data.n_keep == 10_000 and len(PAPER.dataset_seeds) == 3
    # the reference's 3 x 3 seed pairs are the cap of the sequential design, which starts at one training seed each
    assert PAPER.seed_pairs == 3 and PAPER.max_seed_pairs == 9
    assert PAPER.ranks[0] == 1 and PAPER.ranks[-1] == 512


def test_quick_grid_has_required_ranks_full_and_two_seeds():
    labels = [s.label for s in QUICK.students(0)]
    assert labels == ["lora-r1", "lora-r4", "lora-r16", "lora-r64", "full"]
    assert len(QUICK.training_seeds) == 2


def test_seeds_for_data_order_and_init_differ_and_vary_by_replicate():
    a, b = TrainSeeds.from_training_seed(0), TrainSeeds.from_training_seed(1)
    assert a.data_order != a.init
    assert a.data_order != b.data_order and a.init != b.init


def test_alpha_defaults_to_rank_and_rslora_label():
    s = QUICK.student("lora", 8, 0, rslora=True)
    assert s.lora_alpha == 8.0 and s.label == "lora-r8-rs"
    assert QUICK.student("lora", 8, 0, objective="soft").label == "lora-r8-soft"


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="lora", rank=None), "rank"),
    (dict(mode="full", rank=4), "no rank"),
    (dict(mode="lora", rank=2, objective="medium"), "objective"),
])
def test_bad_student_configs_fail_with_one_line(kwargs, match):
    with pytest.raises(ProfileError, match=match):
        StudentConfig(optim=QUICK.lora, seeds=TrainSeeds(1, 2), **kwargs)


def test_bad_sizes_and_unknown_profile():
    with pytest.raises(ProfileError, match="n_keep"):
        TeacherDataConfig(n_prompts=10, n_keep=20)
    with pytest.raises(ProfileError, match="divisible"):
        OptimConfig(lr=1e-3, epochs=1, batch_size=10, grad_accumulation=3)
    with pytest.raises(ProfileError, match="choose one of"):
        get_profile("huge")
    assert get_profile("quick", objective="soft").objective == "soft"


def test_control_columns_add_rslora_and_lr_matched_full_without_changing_the_reference_keys():
    import math

    plain = get_profile("quick")
    controlled = replace(plain, control_columns=("full-lora-lr", "rslora"))
    reference, extra = plain.students(0), controlled.students(0)
    assert extra[:len(reference)] == reference
    labels = [s.label for s in controlled.control_students(0)]
    assert labels == [f"lora-r{r}-rs" for r in plain.ranks] + ["full-lora-lr"]
    rs = controlled.control_students(0)[0]
    assert rs.rslora and rs.lora_alpha == pytest.approx(math.sqrt(plain.lora.lr_reference_rank))
    full = controlled.control_students(0)[-1]
    assert full.mode == "full" and full.lr == plain.lora.lr != plain.full.lr
    # The column name is a label, not training content: the same training is the same cache key.
    assert full.trained == replace(full, column="").trained
    with pytest.raises(ProfileError, match="unknown control column"):
        replace(plain, control_columns=("nope",))
    with pytest.raises(ProfileError, match="needs full finetuning"):
        replace(plain, include_full=False, control_columns=("full-lora-lr",))


def test_seed_pairs_grow_by_whole_training_seeds_after_the_largest():
    assert PAPER.with_seed_pairs(9).training_seeds == (0, 1, 2) and PAPER.with_seed_pairs(9).seed_pairs == 9
    assert [look.replicates for look in PAPER.looks()] == [3, 6, 9]
    assert replace(QUICK, training_seeds=(3, 5)).with_seed_pairs(4).training_seeds == (3, 5, 6, 7)
    assert len(QUICK.looks()) == 1 and QUICK.looks()[0].alpha == 0.05  # a fixed design: one look at the full alpha
