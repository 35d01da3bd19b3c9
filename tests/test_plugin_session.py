"""The audit session: engine pool (one engine alive at a time), provenance, adapter hashing."""

from pathlib import Path

import pytest

import audit.engines as engines
from audit.engines import FakeEngine
from audit.models.resolve import content_hash
from audit.session import AuditSession, EnginePool
from tests.plugin_support import folder_adapter

pytest_plugins = ["pytester"]


def test_pool_keeps_one_engine_alive(monkeypatch):
    opened = []

    def fake_open(kind, model_path=None, **kw):
        engine = FakeEngine()
        opened.append((kind, engine, kw))
        return engine

    monkeypatch.setattr(engines, "open_engine", fake_open)
    pool = EnginePool(Path("/m"), "float32", adapters=("/a",))
    hf = pool.get("hf")
    assert pool.get("hf") is hf and len(opened) == 1
    vllm = pool.get("vllm")
    assert hf.closed and not vllm.closed
    assert "adapters" not in opened[0][2] and opened[1][2]["adapters"] == ["/a"]  # vLLM starts with LoRA
    pool.close()
    assert vllm.closed


def test_adapter_hash_changes_with_content(tmp_path):
    folder_adapter(tmp_path / "a")
    session = AuditSession.start({"engine": "fake", "adapter": str(tmp_path / "a")}, {})
    before = session.run.adapters[0].content_hash
    assert before == content_hash(tmp_path / "a")
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes((tmp_path / "a" / "adapter_model.safetensors").read_bytes() + b" ")
    assert content_hash(tmp_path / "a") != before


def test_provenance_records_options_as_passed_and_resolved_values(tmp_path):
    adapter = folder_adapter(tmp_path / "a")
    session = AuditSession.start({"engine": "fake", "adapter": [str(adapter)], "seeds": "0,1", "profile": "tiny",
                                  "report_dir": str(tmp_path / "out")}, {"margin": "0.05"}, command="pytest audit/")
    p = session.finish().provenance
    assert p.model == "tiny-qwen" and p.adapters[0].content_hash == content_hash(adapter) and p.engine == "fake"
    assert p.dtype == "float32" and p.seeds == [0, 1] and p.ranks == [2] and "python" in p.versions
    assert p.options == {"engine": "fake", "adapter": [str(adapter)], "seeds": "0,1", "profile": "tiny",
                         "report_dir": str(tmp_path / "out"), "margin": "0.05"}
    assert p.protocol.training_seeds == [0, 1] and p.protocol.dataset_seeds == [0] and p.protocol.examples == 16
    assert p.protocol.lr == {"lora-r2": 1e-3, "full": 3e-4} and p.protocol.probe_set == "animal"
    assert len(p.protocol.probe_set_sha256) == 64 and p.margin == 0.05
    assert p.run_id.endswith("-tiny-qwen") and p.command == "pytest audit/"
    assert (tmp_path / "out" / p.run_id / "results.json").is_file()


def test_default_seeds_come_from_the_profile():
    p = AuditSession.start({"engine": "fake", "profile": "quick"}, {}).provenance()
    assert p.seeds == [0, 1] and p.ranks == [1, 4, 16, 64] and p.options == {"engine": "fake", "profile": "quick"}
    assert p.protocol.training_seeds == [0, 1] and p.protocol.full_finetuning


@pytest.mark.tiny_model
def test_claims_progress_bypasses_output_capture(pytester):
    pytester.makepyfile("""
        def test_progress(audit_claims):
            with audit_claims.show_progress():
                print("PROGRESS-VISIBLE")
            print("CAPTURED-AS-USUAL")
    """)
    result = pytester.runpytest_subprocess("--model", "tiny-qwen", "--engine", "hf", "-p", "no:cacheprovider",
                                           "--report-dir", str(pytester.path / "out"))
    result.assert_outcomes(passed=1)
    assert "PROGRESS-VISIBLE" in result.stdout.str()
    assert "CAPTURED-AS-USUAL" not in result.stdout.str()
