"""The audit session: engine pool (one engine alive at a time), provenance, adapter hashing."""

from pathlib import Path

import audit.engines as engines
from audit.config import AuditConfig
from audit.engines import FakeEngine
from audit.session import AuditSession, EnginePool, dir_hash

pytest_plugins = ["pytester"]


def test_pool_keeps_one_engine_alive(monkeypatch):
    opened = []

    def fake_open(kind, model_path=None, **kw):
        engine = FakeEngine()
        opened.append((kind, engine))
        return engine

    monkeypatch.setattr(engines, "open_engine", fake_open)
    pool = EnginePool(Path("/m"), "float32")
    hf = pool.get("hf")
    assert pool.get("hf") is hf and len(opened) == 1
    vllm = pool.get("vllm")
    assert hf.closed and not vllm.closed
    pool.close()
    assert vllm.closed


def test_adapter_hash_changes_with_content(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    before = dir_hash(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x00")
    assert dir_hash(tmp_path) != before and len(before) == 16


def test_provenance_carries_config_versions_and_wall_time(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    session = AuditSession(config=AuditConfig(model="tiny-qwen", adapter=tmp_path, engine="fake", seeds=(0, 1)),
                           command="pytest audit/")
    results = session.finish()
    p = results.provenance
    assert p.model == "tiny-qwen" and p.adapter_hash == dir_hash(tmp_path) and p.engine == "fake"
    assert p.dtype == "float32" and p.seeds == [0, 1] and "python" in p.versions and p.wall_time_s >= 0
    assert p.run_id.endswith("-tiny-qwen") and p.command == "pytest audit/"


def test_experiment_progress_bypasses_output_capture(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.fixture(scope="session")
        def audit_model():
            return object()  # the experiment only stores it until a grid runs

        def test_progress(audit_experiment):
            with audit_experiment.show_progress():
                print("PROGRESS-VISIBLE")
            print("CAPTURED-AS-USUAL")
    """)
    result = pytester.runpytest_subprocess("--model", "m", "--engine", "fake", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "PROGRESS-VISIBLE" in result.stdout.str()
    assert "CAPTURED-AS-USUAL" not in result.stdout.str()
