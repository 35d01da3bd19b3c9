"""ArtifactStore: atomic builds, manifest verification, corrupt entries moved aside, content keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.cache import ArtifactStore, CacheError, cache_root, content_key


def _writer(text: str = "hello"):
    def build(out: Path) -> dict:
        (out / "data.txt").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "more.bin").write_bytes(b"\x00\x01")
        return {"rows": 2}
    return build


def _visible_entries(store: ArtifactStore, kind: str) -> list[str]:
    folder = store.root / kind
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_build_writes_manifest_and_get_returns_entry(tmp_path):
    store = ArtifactStore(tmp_path)
    path = store.build("dataset", "abc", _writer(), meta={"seed": 1})
    assert path == tmp_path / "dataset" / "abc"
    assert store.get("dataset", "abc") == path
    manifest = store.manifest("dataset", "abc")
    assert set(manifest["files"]) == {"data.txt", "sub/more.bin"}
    assert manifest["meta"] == {"seed": 1} and manifest["result"] == {"rows": 2}


def test_missing_entry_is_none_and_manifest_raises(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.get("dataset", "nope") is None
    with pytest.raises(CacheError, match="build it first"):
        store.manifest("dataset", "nope")


def test_crash_mid_build_leaves_nothing_that_looks_complete(tmp_path):
    store = ArtifactStore(tmp_path)

    def crashing(out: Path) -> dict:
        (out / "half.txt").write_text("partial")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        store.build("model", "k1", crashing)
    assert store.get("model", "k1") is None
    assert _visible_entries(store, "model") == []  # temp dir removed too


def test_leftover_temp_dir_from_a_killed_process_is_ignored(tmp_path):
    store = ArtifactStore(tmp_path)
    (tmp_path / "model" / ".k1.x.tmp").mkdir(parents=True)  # what SIGKILL mid-build leaves behind
    (tmp_path / "model" / ".k1.x.tmp" / "model.safetensors").write_bytes(b"half")
    assert store.get("model", "k1") is None
    calls = []
    store.get_or_build("model", "k1", lambda out: calls.append(1) or _writer()(out))
    assert calls == [1] and store.get("model", "k1") is not None
    assert not (tmp_path / "model" / ".k1.x.tmp").exists()  # cleaned up under the build lock


def test_modified_file_is_detected_and_moved_aside(tmp_path, capsys):
    store = ArtifactStore(tmp_path)
    path = store.build("dataset", "abc", _writer())
    (path / "data.txt").write_text("tampered")
    assert store.get("dataset", "abc") is None
    err = capsys.readouterr().err
    assert "corrupt" in err and "sha256 mismatch" in err and len(err.strip().splitlines()) == 1
    assert not path.exists()
    assert [p.name for p in (tmp_path / "dataset").iterdir()][0].endswith(".corrupt")


@pytest.mark.parametrize("damage", ["delete_file", "extra_file", "drop_manifest", "garble_manifest"])
def test_other_corruptions_are_detected(tmp_path, damage):
    store = ArtifactStore(tmp_path)
    path = store.build("dataset", "abc", _writer())
    if damage == "delete_file":
        (path / "sub" / "more.bin").unlink()
    elif damage == "extra_file":
        (path / "stray.txt").write_text("x")
    elif damage == "drop_manifest":
        (path / "manifest.json").unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    assert store.get("dataset", "abc") is None
    rebuilt = store.get_or_build("dataset", "abc", _writer())
    assert store.get("dataset", "abc") == rebuilt


def test_get_or_build_builds_once(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def build(out: Path) -> None:
        calls.append(1)
        (out / "x").write_text("1")

    first = store.get_or_build("cell", "k", build)
    second = store.get_or_build("cell", "k", build)
    assert first == second and calls == [1]


@pytest.mark.parametrize("key", ["", "a/b", ".hidden", "x.corrupt"])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(CacheError, match="invalid cache kind/key"):
        ArtifactStore(tmp_path).get("model", key)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SUBAUDIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert ArtifactStore().root == tmp_path / "c"
    monkeypatch.delenv("SUBAUDIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "subaudit"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    rank: int
    path: Path


def test_content_key_canonicalises_paths_and_dataclasses():
    assert content_key(_Cfg(4, Path("/a"))) == content_key({"path": "/a", "rank": 4})
    assert content_key({"r": 4}) != content_key({"r": 8})
    assert len(content_key([1, 2])) == 16


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                        max_size=3), max_leaves=8)


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=5))
def test_content_key_ignores_key_order(mapping):
    reordered = dict(reversed(list(mapping.items())))
    assert content_key(mapping) == content_key(reordered)
    assert content_key(mapping) == content_key(json.loads(json.dumps(mapping)))


def test_has_sees_a_finished_entry_without_reading_its_files(tmp_path):
    store = ArtifactStore(tmp_path)
    assert not store.has("k", "a")
    entry = store.get_or_build("k", "a", lambda d: (d / "f.txt").write_text("x") and None)
    assert store.has("k", "a")
    (entry / "f.txt").write_text("changed")  # has() does not verify; get() does, and moves it aside
    assert store.has("k", "a") and store.get("k", "a") is None and not store.has("k", "a")
