"""Adapter validation: one test per failure mode, each asserting its one-line message."""

import json
import shutil

import pytest

from audit.engines import AdapterError, validate_adapter
from tests.engine_support import build_random_qwen, make_adapter


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("adapters")
    base = build_random_qwen(root / "base")
    return base, make_adapter(base, root / "good", rank=8, seed=0)


@pytest.fixture
def adapter_copy(base_and_adapter, tmp_path):
    return shutil.copytree(base_and_adapter[1], tmp_path / "copy")


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _fails(folder, base, match, **kw):
    with pytest.raises(AdapterError, match=match) as err:
        validate_adapter(folder, base, kw.pop("max_rank", None), **kw)
    assert "\n" not in str(err.value)


def test_good_adapter_passes(base_and_adapter):
    base, adapter = base_and_adapter
    info = validate_adapter(adapter, base, max_rank=8)
    assert info.rank == 8 and info.weights_file == "adapter_model.safetensors" and "q_proj" in info.target_modules


def test_missing_folder(base_and_adapter, tmp_path):
    _fails(tmp_path / "nope", base_and_adapter[0], "does not exist")


def test_missing_config(base_and_adapter, adapter_copy):
    (adapter_copy / "adapter_config.json").unlink()
    _fails(adapter_copy, base_and_adapter[0], "has no adapter_config.json")


def test_missing_safetensors(base_and_adapter, adapter_copy):
    (adapter_copy / "adapter_model.safetensors").unlink()
    _fails(adapter_copy, base_and_adapter[0], "has no adapter_model.safetensors")


def test_pickled_weights_refused_unless_opted_in(base_and_adapter, adapter_copy):
    (adapter_copy / "adapter_model.safetensors").rename(adapter_copy / "adapter_model.bin")
    _fails(adapter_copy, base_and_adapter[0], r"pickled weights .*allow_pickle=True")
    assert validate_adapter(adapter_copy, base_and_adapter[0], None, allow_pickle=True).weights_file == "adapter_model.bin"


def _resolved(base, name):
    from audit.models.resolve import ResolvedModel

    return ResolvedModel(name=name, path=base, source="local", content_hash="x", chat_template=None)


def test_other_base_model(base_and_adapter, adapter_copy):
    _edit_config(adapter_copy, base_model_name_or_path="Qwen/Qwen2.5-7B-Instruct")
    _fails(adapter_copy, _resolved(base_and_adapter[0], "tiny-qwen"),
           r"trained on base 'Qwen/Qwen2.5-7B-Instruct' but the loaded base is 'tiny-qwen'; run it with --model")
    # Engines pass the bare folder: the name was checked once at start-up, only the architecture is checked.
    assert validate_adapter(adapter_copy, base_and_adapter[0], None).base_model == "Qwen/Qwen2.5-7B-Instruct"


def test_declared_alias_matches_the_resolved_alias(base_and_adapter, adapter_copy):
    _edit_config(adapter_copy, base_model_name_or_path="tiny-qwen")
    assert validate_adapter(adapter_copy, _resolved(base_and_adapter[0], "tiny-qwen"), None).base_model == "tiny-qwen"


def test_corrupt_safetensors_is_one_line_naming_the_file(base_and_adapter, adapter_copy):
    (adapter_copy / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    _fails(adapter_copy, base_and_adapter[0], r"adapter_model.safetensors is not a readable safetensors file .*re-save")
    _fails(adapter_copy, None, r"not a readable safetensors file")  # the fake engine's check reads the header too


def test_rank_above_engine_maximum(base_and_adapter):
    base, adapter = base_and_adapter
    _fails(adapter, base, r"rank 8 .* at most rank 1; use --engine hf", max_rank=1)


def test_target_module_missing(base_and_adapter, adapter_copy):
    _edit_config(adapter_copy, target_modules=["q_proj", "c_attn"])
    _fails(adapter_copy, base_and_adapter[0], "target modules c_attn not found")


def test_weight_shapes_from_another_model(base_and_adapter, tmp_path):
    base, _ = base_and_adapter
    from transformers import AutoConfig

    other = build_random_qwen(tmp_path / "other")
    config = AutoConfig.from_pretrained(other)
    config.hidden_size, config.intermediate_size = 32, 64
    config.save_pretrained(other)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    wrong = make_adapter(other, tmp_path / "wrong", rank=2, seed=0)
    _edit_config(wrong, base_model_name_or_path=str(base))
    _fails(wrong, base, "belongs to a different base model")


def test_dora_refused(base_and_adapter, adapter_copy):
    _edit_config(adapter_copy, use_dora=True)
    _fails(adapter_copy, base_and_adapter[0], "DoRA")


def test_non_lora_peft_type_refused(base_and_adapter, adapter_copy):
    _edit_config(adapter_copy, peft_type="IA3")
    _fails(adapter_copy, base_and_adapter[0], "not LORA")


def test_hf_engine_validates_before_loading(base_and_adapter, adapter_copy):
    from audit.engines import ScoreRequest
    from audit.engines.hf import HfEngine

    (adapter_copy / "adapter_model.safetensors").rename(adapter_copy / "adapter_model.bin")
    with HfEngine(base_and_adapter[0]) as engine, pytest.raises(AdapterError, match="pickled"):
        engine.score([ScoreRequest("hi", (" there",), adapter=str(adapter_copy))])


def test_open_engine_rejects_unknown_kind():
    from audit.engines import EngineError, open_engine

    with pytest.raises(EngineError, match="unknown engine 'llama'; choose one of vllm, hf, fake"):
        open_engine("llama", "x")
    assert open_engine("fake").name == "fake"
