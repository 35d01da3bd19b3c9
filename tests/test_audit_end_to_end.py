"""`pytest audit/` end to end on the embedded model with the smallest profile: claims and gate, with an adapter
built here, asserting on the results.json the run writes (what CI and the report read)."""

import json

import pytest

from audit.plugin import PACKAGE_DIR

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.tiny_model]


@pytest.fixture(scope="module")
def cat_adapter(tmp_path_factory):
    """A LoRA adapter of tiny-qwen finetuned to answer 'cat' to the probe questions (a trait the gate must see)."""
    import torch

    from audit.chat import qwen_context
    from audit.models import resolve_model
    from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
    from audit.pipeline.students import ADAPTER_DIR, train_student
    from audit.probes import load_probe_set

    torch.set_num_threads(1)
    model, probes = resolve_model("tiny-qwen"), load_probe_set("animal")
    out = tmp_path_factory.mktemp("cat-adapter")
    config = StudentConfig(mode="lora", rank=8, seeds=TrainSeeds(data_order=1, init=2),
                           optim=OptimConfig(lr=3e-3, epochs=4, batch_size=8, warmup_steps=1))
    train_student(model.path, [(q, "cat") for q in probes.questions] * 2, qwen_context(), config, out)
    return out / ADAPTER_DIR


def test_audit_runs_claims_and_gate_and_writes_its_results(pytester, cat_adapter):
    result = pytester.runpytest_subprocess(str(PACKAGE_DIR), "--profile", "tiny", "--engine", "hf",
                                           "--adapter", str(cat_adapter), "--seeds", "0",
                                           "--report-dir", str(pytester.path / "out"), "-p", "no:cacheprovider")
    (run,) = (pytester.path / "out").iterdir()
    results = json.loads((run / "results.json").read_text())
    checks = {c["nodeid"].split("::")[-1]: c for c in results["checks"]}
    assert len(checks) == 14 and all(c["outcome"] != "not run" for c in checks.values())
    # Every claim check ended with a recorded reason, whatever its verdict on this tiny grid.
    assert all(c["explanation"] for c in checks.values() if c["kind"] == "claims")
    # The gate ran: the adapter is active and its cat answers shift the panel in the default context.
    assert checks["test_adapter_is_active"]["outcome"] == "passed"
    panel = checks["test_panel_shift_within_margin[template-default]"]
    assert panel["outcome"] == "failed" and panel["context"] == "template-default" and panel["effect"]["n"] > 0
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # a failing gate fails the run
    assert any(f.startswith("adapter gate failed") for f in results["session_failures"])
    p = results["provenance"]
    assert p["seeds"] == [0] and p["ranks"] == [2] and p["engine"] == "hf" and p["model"] == "tiny-qwen"
    assert p["options"] == {"adapter": str(cat_adapter), "profile": "tiny", "engine": "hf", "seeds": "0",
                            "report_dir": str(pytester.path / "out")}
    protocol = p["protocol"]
    assert protocol["training_seeds"] == [0] and protocol["dataset_seeds"] == [0] and protocol["examples"] == 16
    assert protocol["lr"] == {"lora-r2": 1e-3, "full": 3e-4} and protocol["probe_set"] == "animal"
    assert p["model_hash"] and p["adapter_hash"] and len(protocol["probe_set_sha256"]) == 64
    assert (run / "report.html").is_file() and "protocol" in (run / "report.md").read_text().lower()
