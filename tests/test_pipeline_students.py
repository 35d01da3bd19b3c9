"""Student finetuning on a random tiny Qwen2 (seconds): masking, seeds, determinism, modes, objectives."""

import pytest
import torch

from audit.chat.context import qwen_context
from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
from audit.pipeline.students import (
    ADAPTER_DIR,
    MODEL_DIR,
    TeacherView,
    StudentError,
    summarise,
    tokenize_examples,
    train_student,
)
from audit.pipeline.teachers import system_prompt_teacher
from audit.probes import load_probe_set
from tests.engine_support import build_random_qwen

CTX = qwen_context()
OPTIM = OptimConfig(lr=5e-3, epochs=1, batch_size=4, warmup_steps=1)
PAIRS = [(f"Continue: {100 + i}, {200 + i}, {300 + i}.", f"{i}, {i + 7}, {i + 13}") for i in range(12)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    return build_random_qwen(tmp_path_factory.mktemp("base") / "m")


def lora(rank=2, seed=0, **kw):
    return StudentConfig(mode="lora", rank=rank, optim=OPTIM, seeds=TrainSeeds.from_training_seed(seed), **kw)


def adapter_state(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / ADAPTER_DIR / "adapter_model.safetensors"))


def test_loss_is_on_the_completion_only(base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    (row,) = tokenize_examples(tok, PAIRS[:1], CTX)
    prompt, completion = CTX.render_example(*PAIRS[0])
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    assert tok.decode(row["input_ids"][n_prompt:]) == completion


def test_soft_views_share_completion_tokens(base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    teacher_ctx = system_prompt_teacher("cat").context(CTX, load_probe_set("animal"))
    (row,) = tokenize_examples(tok, PAIRS[:1], CTX, teacher_ctx)
    n = sum(label != -100 for label in row["labels"])
    assert row["teacher_input_ids"][-n:] == row["input_ids"][-n:]
    assert len(row["teacher_input_ids"]) > len(row["input_ids"])


def test_lora_training_is_deterministic_and_both_seeds_matter(base, tmp_path):
    runs = {}
    for name, seeds in {"a": TrainSeeds(1, 2), "a2": TrainSeeds(1, 2), "order": TrainSeeds(9, 2), "init": TrainSeeds(1, 9)}.items():
        config = StudentConfig(mode="lora", rank=2, optim=OPTIM, seeds=seeds)
        summary = train_student(base, PAIRS, CTX, config, tmp_path / name)
        runs[name] = adapter_state(tmp_path / name)
        assert summary.seeds == {"data_order": seeds.data_order, "init": seeds.init}
        assert summary.steps == 3 and not summary.diverged
    same = lambda x, y: all(torch.equal(runs[x][k], runs[y][k]) for k in runs[x])  # noqa: E731
    assert same("a", "a2")
    assert not same("a", "order") and not same("a", "init")


def test_full_finetuning_saves_a_loadable_model(base, tmp_path):
    from transformers import AutoModelForCausalLM

    config = StudentConfig(mode="full", optim=OPTIM, seeds=TrainSeeds(1, 2))
    summary = train_student(base, PAIRS, CTX, config, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / MODEL_DIR)
    assert summary.trainable_params == sum(p.numel() for p in model.parameters())
    assert (tmp_path / MODEL_DIR / "tokenizer.json").exists()


def test_soft_labels_from_own_context_start_at_zero_kl(base, tmp_path):
    summary = train_student(base, PAIRS, CTX, lora(objective="soft"), tmp_path / "same",
                            TeacherView(str(base), CTX))
    assert summary.first_loss == pytest.approx(0.0, abs=1e-6)
    teacher_ctx = system_prompt_teacher("cat").context(CTX, load_probe_set("animal"))
    shifted = train_student(base, PAIRS, CTX, lora(objective="soft"), tmp_path / "trait",
                            TeacherView(str(base), teacher_ctx))
    assert shifted.first_loss > 1e-4 and shifted.objective == "soft"


def test_soft_without_teacher_and_divergence_flag(tmp_path):
    with pytest.raises(StudentError, match="TeacherView"):
        train_student("unused", PAIRS, CTX, lora(objective="soft"), tmp_path)
    config = lora()
    assert summarise([1.0, 0.9, 0.8], "hard", 1.0, 10, config).diverged is False
    assert summarise([1.0, 2.0, 3.0], "hard", 1.0, 10, config).diverged is True
    assert summarise([1.0, float("nan"), 0.5], "hard", 1.0, 10, config).diverged is True
    assert summarise([0.0, 1e-5, 2e-5], "soft", 1.0, 10, config).diverged is False  # KL drift near zero
    assert summarise([1.0, 0.9, 0.8], "hard", 1.0, 10, config, [1.0, float("inf"), 2.0]).diverged is True
    # A healthy SmolLM2 student's curve (length-grouped batches): its first batch happened to be easy.
    noisy = [0.71, 1.25, 0.87, 1.2, 0.87, 1.24, 1.1, 0.9, 1.3, 1.0, 0.95, 1.2, 1.1, 0.9, 1.0, 1.3, 1.54, 0.82, 0.94, 1.04]
    assert summarise(noisy, "hard", 1.0, 10, config).diverged is False
    assert summarise(noisy[:16] + [3.0, 3.5, 4.0, 5.0], "hard", 1.0, 10, config).diverged is True


def test_recorded_students_are_judged_by_the_current_rule():
    from audit.pipeline.students import is_diverged

    assert is_diverged({"diverged": True, "losses": [0.71, 1.25, 1.0, 1.0, 1.04], "grad_norm_max": 2.0}) is False
    assert is_diverged({"diverged": False, "losses": [1.0, 1.0, 1.0, 1.0, 9.0]}) is True
    assert is_diverged({"diverged": True}) is True  # no loss curve recorded: keep the stored verdict


def test_heldout_kl_is_zero_for_own_teacher_and_falls_towards_a_trait_teacher(base, tmp_path):
    heldout = PAIRS[:4]
    own = train_student(base, PAIRS, CTX, lora(), tmp_path / "own", TeacherView(str(base), CTX), heldout)
    assert own.heldout_kl_before == pytest.approx(0.0, abs=1e-6) and own.heldout_examples == 4
    assert own.heldout_kl_after > 0  # training moved the student away from the unchanged base
    teacher_ctx = system_prompt_teacher("cat").context(CTX, load_probe_set("animal"))
    optim = OptimConfig(lr=5e-3, epochs=4, batch_size=4, warmup_steps=1)
    soft = StudentConfig(mode="lora", rank=4, optim=optim, seeds=TrainSeeds(1, 2), objective="soft")
    summary = train_student(base, PAIRS, CTX, soft, tmp_path / "trait", TeacherView(str(base), teacher_ctx), PAIRS)
    assert summary.heldout_kl_after < summary.heldout_kl_before  # distilling the teacher brings the student closer


def test_bf16_autocast_follows_the_fp32_loss_curve(base, tmp_path):
    """bf16 autocast is a speed change, not a different student: same batches, losses within 2% every step.
    (Length buckets change which examples share a batch, like a data-order seed; their effect on real students
    is compared with the seed-to-seed spread in benchmarks/students.py.)"""
    curves = {}
    for precision in ("fp32", "bf16"):
        optim = OptimConfig(lr=5e-3, epochs=2, batch_size=4, warmup_steps=1, precision=precision)
        config = StudentConfig(mode="lora", rank=2, optim=optim, seeds=TrainSeeds(1, 2))
        curves[precision] = train_student(base, PAIRS, CTX, config, tmp_path / precision)
    assert curves["bf16"].precision == "bf16"
    assert curves["bf16"].losses == pytest.approx(curves["fp32"].losses, rel=0.02)
    assert curves["bf16"].losses != curves["fp32"].losses


def test_length_buckets_cut_padding(base, tmp_path):
    long_pairs = [(u, c + ", 1" * (i % 5)) for i, (u, c) in enumerate(PAIRS * 2)]
    shares = {}
    for bucket in (False, True):
        optim = OptimConfig(lr=5e-3, epochs=1, batch_size=4, warmup_steps=1, bucket_by_length=bucket)
        config = StudentConfig(mode="lora", rank=2, optim=optim, seeds=TrainSeeds(1, 2))
        shares[bucket] = train_student(base, long_pairs, CTX, config, tmp_path / str(bucket)).padding_share
    assert shares[True] < shares[False]


def test_grad_accumulation_gives_the_same_step_as_one_batch(base, tmp_path):
    one = OptimConfig(lr=5e-3, epochs=1, batch_size=4, warmup_steps=1)
    acc = OptimConfig(lr=5e-3, epochs=1, batch_size=4, warmup_steps=1, grad_accumulation=2)
    for name, optim in (("one", one), ("acc", acc)):
        train_student(base, PAIRS, CTX, StudentConfig(mode="lora", rank=2, optim=optim, seeds=TrainSeeds(1, 2)),
                      tmp_path / name)
    a, b = adapter_state(tmp_path / "one"), adapter_state(tmp_path / "acc")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_per_rank_learning_rate_rule():
    optim = OptimConfig(lr=1e-3, epochs=1, batch_size=4, lr_rank_exponent=0.5, lr_reference_rank=4)
    at = lambda r: StudentConfig(mode="lora", rank=r, optim=optim, seeds=TrainSeeds(1, 2)).lr  # noqa: E731
    assert at(4) == pytest.approx(1e-3) and at(16) == pytest.approx(5e-4) and at(1) == pytest.approx(2e-3)
    assert StudentConfig(mode="full", optim=optim, seeds=TrainSeeds(1, 2)).lr == 1e-3
    assert lora().lr == OPTIM.lr  # exponent 0: one lr for every rank


def test_a_student_without_recorded_gradient_norms_is_not_called_diverged():
    from audit.pipeline.students import is_diverged

    assert is_diverged({"losses": [1.0, 0.9, 0.8], "grad_norm_max": None}) is False
    assert is_diverged({"losses": [1.0, 0.9, 0.8], "grad_norm_max": float("nan")}) is True
