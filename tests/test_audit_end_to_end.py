"""`pytest audit/` end to end on the embedded model with the smallest profile: claims and gate, with an adapter
built here, asserting on the results.json the run writes (what CI and the report read)."""

import json

import pytest

from audit.plugin import PACKAGE_DIR

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.slow, pytest.mark.tiny_model]


@pytest.fixture(scope="module")
def cat_adapter():
    """The example adapter that answers 'Cat' under the template's default system prompt (a trait the gate must see)."""
    from audit.example_adapters import build_example
    from audit.models import resolve_model

    return build_example(resolve_model("tiny-qwen"), "cat-under-default")


def test_audit_runs_claims_and_gate_and_writes_its_results(pytester, cat_adapter):
    result = pytester.runpytest_subprocess(str(PACKAGE_DIR), "--profile", "tiny", "--engine", "hf",
                                           "--adapter", str(cat_adapter), "--seeds", "0",
                                           "--report-dir", str(pytester.path / "out"), "-p", "no:cacheprovider")
    (run,) = (pytester.path / "out").iterdir()
    results = json.loads((run / "results.json").read_text())
    checks = {c["nodeid"].split("::")[-1]: c for c in results["checks"]}
    assert sum(c["kind"] == "claims" for c in checks.values()) == 10
    assert all(c["outcome"] != "not run" for c in checks.values())
    # Every claim check ended with a recorded reason, whatever its verdict on this tiny grid.
    assert all(c["explanation"] for c in checks.values() if c["kind"] == "claims")
    # The gate ran: the adapter is active and its cat answers shift the panel in the default context.
    assert checks["test_adapter_is_active[cat-under-default]"]["outcome"] == "passed"
    panel = checks["test_panel_shift_within_margin[cat-under-default-animal-sys=template-default/perm=identity]"]
    assert panel["outcome"] == "failed" and panel["trait"] == "cat" and panel["effect"]["n"] > 0
    # Without --probe-set the gate measures every installed family.
    assert {c["name"].split(" ")[0].rstrip(":") for c in checks.values() if c["kind"] == "gate" and c["adapter"]} \
        >= {"animal", "band", "tree"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # a failing gate fails the run
    assert any(f.startswith("adapter cat-under-default failed the gate") for f in results["session_failures"])
    p = results["provenance"]
    assert p["seeds"] == [0] and p["ranks"] == [2] and p["engine"] == "hf" and p["model"] == "tiny-qwen"
    assert p["options"] == {"adapter": [str(cat_adapter)], "profile": "tiny", "engine": "hf", "seeds": "0",
                            "report_dir": str(pytester.path / "out")}
    protocol = p["protocol"]
    assert protocol["training_seeds"] == [0] and protocol["dataset_seeds"] == [0] and protocol["examples"] == 16
    assert protocol["lr"] == {"lora-r2": 1e-3, "full": 3e-4} and protocol["probe_set"] == "animal"
    assert p["model_hash"] and p["adapters"][0]["name"] == "cat-under-default" and len(protocol["probe_set_sha256"]) == 64
    assert (run / "report.html").is_file() and "protocol" in (run / "report.md").read_text().lower()


def test_the_positive_control_reports_transmission_and_the_power_of_every_claim(pytester):
    """`--profile positive`, small (ranks 4 and full FT, 2 seed pairs): a transmission known in advance (DESIGN.md
    §9.7). Full FT distils the adapter teacher's trait into the students; the checks must say it transmits, and every
    other claim check ends with its measured reason, undecided ones with their minimum detectable effect."""
    pytester.runpytest_subprocess(str(PACKAGE_DIR / "checks" / "test_claims.py"), "--profile", "positive", "--ranks", "4",
                                  "--max-seed-pairs", "2", "--engine", "hf", "--report-dir", str(pytester.path / "out"),
                                  "-p", "no:cacheprovider")
    (run,) = (pytester.path / "out").iterdir()
    results = json.loads((run / "results.json").read_text())
    checks = {c["nodeid"].split("::")[-1]: c for c in results["checks"]}
    full = checks["test_full_finetuning_vanishes[cat-reference]"]
    assert full["outcome"] == "failed" and full["explanation"].startswith("full FT transmits")
    assert full["effect"]["ci_low"] > 0
    assert results["provenance"]["protocol"]["teacher"] == "adapter" and results["provenance"]["protocol"]["objective"] == "soft"
    for check in checks.values():
        assert check["explanation"] and check["outcome"] != "not run"
        if check["explanation"].startswith("undecided"):
            assert "minimum detectable effect" in check["explanation"] and "seed_pairs_needed" in check["properties"]
