"""Student finetuning on a random tiny Qwen2 (seconds): masking, seeds, determinism, modes, objectives."""

import pytest
import torch

from audit.chat.context import qwen_context
from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
from audit.pipeline.students import (
    ADAPTER_DIR,
    MODEL_DIR,
    SoftTeacher,
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
                            SoftTeacher(str(base), CTX))
    assert summary.first_loss == pytest.approx(0.0, abs=1e-6)
    teacher_ctx = system_prompt_teacher("cat").context(CTX, load_probe_set("animal"))
    shifted = train_student(base, PAIRS, CTX, lora(objective="soft"), tmp_path / "trait",
                            SoftTeacher(str(base), teacher_ctx))
    assert shifted.first_loss > 1e-4 and shifted.objective == "soft"


def test_soft_without_teacher_and_divergence_flag(tmp_path):
    with pytest.raises(StudentError, match="SoftTeacher"):
        train_student("unused", PAIRS, CTX, lora(objective="soft"), tmp_path)
    config = lora()
    assert summarise([1.0, 0.9, 0.8], "hard", 1.0, 10, config).diverged is False
    assert summarise([1.0, 2.0, 3.0], "hard", 1.0, 10, config).diverged is True
    assert summarise([1.0, float("nan"), 0.5], "hard", 1.0, 10, config).diverged is True
    assert summarise([0.0, 1e-5, 2e-5], "soft", 1.0, 10, config).diverged is False  # KL drift near zero
