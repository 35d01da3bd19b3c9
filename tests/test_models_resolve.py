"""resolve_model: local folders, the offline HF cache, aliases, one-line errors, cached content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import audit.models.resolve as resolve
from audit.models.resolve import ModelNotFound, content_hash, resolve_model


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("SUBAUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _model_dir(path: Path, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen2"}')
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    return path


def _hf_snapshot(tmp_path: Path, repo_id: str, revision: str = "abc123") -> Path:
    repo = tmp_path / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = _model_dir(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_local_folder_resolves_with_hash_and_template(tmp_path):
    folder = _model_dir(tmp_path / "m")
    model = resolve_model(str(folder))
    assert model.source == "local" and model.path == folder.resolve()
    assert len(model.content_hash) == 64 and model.chat_template == "{{ messages }}"


def test_hash_changes_with_weights_and_ignores_bookkeeping(tmp_path):
    a, b = _model_dir(tmp_path / "a"), _model_dir(tmp_path / "b", weights=b"other")
    assert content_hash(a) != content_hash(b)
    before = content_hash(a)
    (a / "quality.json").write_text("{}")
    assert content_hash(a) == before


def test_hash_sidecar_skips_rehashing_unchanged_files(tmp_path, monkeypatch):
    folder = _model_dir(tmp_path / "m")
    first = content_hash(folder)
    calls = []
    monkeypatch.setattr(resolve, "sha256_file", lambda p: calls.append(p) or "x")
    assert content_hash(folder) == first and calls == []
    (folder / "model.safetensors").write_bytes(b"changed weights")
    assert content_hash(folder) != first and calls  # size changed, so it rehashed


def test_folder_without_config_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound) as info:
        resolve_model(str(tmp_path / "empty"))
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


def test_unknown_spec_says_what_was_looked_for_and_how_to_get_it():
    with pytest.raises(ModelNotFound) as info:
        resolve_model("no-such-model")
    message = str(info.value)
    assert "\n" not in message and "make models" in message and "tiny-qwen" in message


def test_hf_cache_repo_id_resolves_offline(tmp_path):
    snapshot = _hf_snapshot(tmp_path, "Org/Name")
    model = resolve_model("Org/Name")
    assert model.source == "hf-cache" and model.path == snapshot and model.name == "Org/Name"


def test_missing_hf_repo_is_refused_without_network(tmp_path):
    with pytest.raises(ModelNotFound, match="not in the HF cache"):
        resolve_model("Org/Missing")


def test_qwen_alias_prefers_the_7b_instruct_in_the_hf_cache(tmp_path):
    _hf_snapshot(tmp_path, "Qwen/Qwen2.5-0.5B-Instruct")
    best = _hf_snapshot(tmp_path, "Qwen/Qwen2.5-7B-Instruct")
    model = resolve_model("qwen")
    assert model.path == best and model.source == "hf-cache"


def test_qwen_alias_finds_other_cached_qwen25_instruct(tmp_path):
    snapshot = _hf_snapshot(tmp_path, "Qwen/Qwen2.5-32B-Instruct")
    assert resolve_model("qwen").path == snapshot


def test_qwen_alias_falls_back_to_packaged(tmp_path, monkeypatch):
    import audit.models.packaged as packaged

    target = _model_dir(tmp_path / "converted")
    monkeypatch.setattr(packaged, "ensure_packaged", lambda alias: target)
    model = resolve_model("qwen")
    assert model.source == "packaged" and model.path == target and "Qwen2.5-Coder-0.5B" in model.name


def test_a_model_gets_its_own_template_whatever_its_folder_is_called(tmp_path):
    from audit.chat import load_template

    merge = _model_dir(tmp_path / "my-qwen-merge")  # a Qwen-sounding name with another template
    model = resolve_model(str(merge))
    assert model.template().name == "my-qwen-merge" and model.template().source == "{{ messages }}"
    shipped = load_template("qwen2.5-instruct")
    other = _model_dir(tmp_path / "renamed")
    (other / "tokenizer_config.json").write_text(json.dumps({"chat_template": shipped.source, "eos_token": "<|im_end|>"}))
    context = resolve_model(str(other)).context("empty")
    # The shipped template's text keeps its name (and so the contexts' ids and cache keys).
    assert context.id == "qwen2.5-instruct/sys=empty/perm=identity" and context.template.eos_token == "<|im_end|>"
    assert context.render_prompt("hi") == shipped.render([{"role": "system", "content": ""}, {"role": "user", "content": "hi"}],
                                                         add_generation_prompt=True)


def test_a_missing_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(ModelNotFound, match=r"model folder /nonexistent does not exist"):
        resolve_model("/nonexistent")
    with pytest.raises(ModelNotFound, match=r"--model is empty"):
        resolve_model(" ")
