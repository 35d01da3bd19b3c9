"""Stacked students (K LoRA paths in one pass, each on its own rows) equal the same students trained alone."""

import json

import pytest
import torch

from audit.chat.context import qwen_context
from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
from audit.pipeline.stacked import train_students_stacked
from audit.pipeline.students import ADAPTER_DIR, StudentError, train_student
from tests.engine_support import build_random_qwen

CTX = qwen_context()
# Completions of 1-6 numbers: batches pad differently alone and stacked.
PAIRS = [(f"Continue: {100 + i}, {200 + i}.", ", ".join(str(37 * i + j) for j in range(1 + i % 6))) for i in range(12)]
BATCH = dict(epochs=2, batch_size=4, grad_accumulation=2, warmup_steps=1)
CLIP = 0.05
"""Small enough that clipping engages: a global clip over all students would change every update."""


def student(rank, seed, lr=5e-3, weight_decay=0.0, **kw):
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, max_grad_norm=CLIP, **BATCH)
    return StudentConfig(mode="lora", rank=rank, optim=optim, seeds=TrainSeeds.from_training_seed(seed), **kw)


STUDENTS = [student(2, 0), student(4, 1, lr=1e-2, weight_decay=0.1), student(2, 2, rslora=True, alpha=4)]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    return build_random_qwen(tmp_path_factory.mktemp("base") / "m")


def adapter(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / ADAPTER_DIR / "adapter_model.safetensors"))


def peft_logits(base, directory, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      str(directory / ADAPTER_DIR))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_stacked_students_equal_students_trained_alone(base, tmp_path):
    stacked = train_students_stacked(base, PAIRS, CTX, STUDENTS, [tmp_path / f"stacked{k}" for k in range(3)])
    for k, config in enumerate(STUDENTS):
        solo = train_student(base, PAIRS, CTX, config, tmp_path / f"solo{k}")
        assert stacked[k].steps == solo.steps == 6
        assert stacked[k].losses == pytest.approx(solo.losses, rel=1e-5)
        assert stacked[k].grad_norm_max == pytest.approx(solo.grad_norm_max, rel=1e-4)
        assert solo.grad_norm_max > CLIP  # clipping engaged, so per-student clipping is under test
        assert stacked[k].trainable_params == solo.trainable_params and stacked[k].lr == solo.lr
        mine, theirs = adapter(tmp_path / f"stacked{k}"), adapter(tmp_path / f"solo{k}")
        assert mine.keys() == theirs.keys()
        for name in theirs:
            assert torch.allclose(mine[name], theirs[name], atol=1e-5), name
        assert any(theirs[n].abs().max() > 0 for n in theirs if "lora_B" in n)  # trained away from peft's B = 0
        config_file = f"{ADAPTER_DIR}/adapter_config.json"
        assert (json.loads((tmp_path / f"stacked{k}" / config_file).read_text())
                == json.loads((tmp_path / f"solo{k}" / config_file).read_text()))
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    assert torch.allclose(peft_logits(base, tmp_path / "stacked1", ids), peft_logits(base, tmp_path / "solo1", ids),
                          atol=1e-4)  # peft loads the stacked adapter as the solo one


def batch_changed(**change):
    return StudentConfig(mode="lora", rank=2, optim=OptimConfig(lr=5e-3, **{**BATCH, **change}), seeds=TrainSeeds(1, 2))


@pytest.mark.parametrize("other, fix", [
    (batch_changed(epochs=3), "differ in epochs"),
    (batch_changed(batch_size=2), "differ in batch_size"),
    (batch_changed(precision="bf16"), "differ in precision"),
    (student(2, 1, objective="soft"), "hard-label LoRA"),
])
def test_students_that_cannot_share_a_pass_are_refused_in_one_line(other, fix, tmp_path):
    with pytest.raises(StudentError, match=fix) as error:
        train_students_stacked("unused", PAIRS, CTX, [STUDENTS[0], other], [tmp_path / "a", tmp_path / "b"])
    assert "\n" not in str(error.value)
