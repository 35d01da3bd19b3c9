"""The pytest plugin: terminal summary, reports, JUnit properties and the exit status CI relies on."""

import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

CHECKS = """
import pytest
from audit.results import Effect

def _effect(v):
    return Effect(value=v, ci_low=v - 0.01, ci_high=v + 0.01, n=50, p_value=0.01, p_adjusted=0.03)

@pytest.mark.claims
def test_claim_holds(audit_record):
    audit_record(name="rank inverted-U", trait="cat", effect=_effect(0.031), explanation="measured")

@pytest.mark.gate
def test_gate_context(audit_record):
    audit_record(name="panel shift", trait="cat", context="template-default", effect=_effect(GATE_EFFECT),
                 explanation="cat in template-default")
    assert GATE_EFFECT < 0.02, "cat shifts in template-default"

@pytest.mark.gate
def test_gate_other():
    pass
"""


@pytest.fixture
def adapter(pytester):
    path = pytester.mkdir("adapter")
    (path / "adapter_config.json").write_text("{}")
    return str(path)


def _checks(pytester, gate_effect: float) -> None:
    pytester.makepyfile(test_checks=CHECKS.replace("GATE_EFFECT", repr(gate_effect)))


def test_summary_table_report_and_junit_properties(pytester, adapter):
    _checks(pytester, 0.001)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", adapter, "--junitxml", "junit.xml")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*subaudit summary*",
        "kind*check*verdict*effect*95% CI*n*p adj*context",
        "claims*test_claim_holds*PASSED*+0.031*[[]+0.021, +0.041]*50*0.03*",
        "gate*test_gate_context*PASSED*+0.001*template-default",
        "report: reports/*/report.html",
        "report: reports/*/report.md",
    ])
    (run,) = (pytester.path / "reports").iterdir()
    assert {p.name for p in run.iterdir()} == {"report.html", "report.md", "results.json"}
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert props["subaudit.effect"] in ("0.031", "0.001")
    assert props["subaudit.kind"] in ("claims", "gate")
    assert props["subaudit.n"] == "50"
    assert "subaudit.p_adjusted" in props


def test_failing_gate_fails_the_run_and_names_the_context(pytester, adapter):
    _checks(pytester, 0.3)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", adapter)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter gate failed: panel shift [[]template-default]*"])
    report = next((pytester.path / "reports").iterdir()) / "report.md"
    assert "FAIL" in report.read_text() and "template-default" in report.read_text()


def test_gate_failure_counts_even_if_the_failing_item_is_xfail_marked(pytester, adapter):
    """A suite-level gate: marking the failing gate item xfail (exit 0 in plain pytest) does not hide it."""
    _checks(pytester, 0.3)
    pytester.makeconftest("""
        import pytest
        def pytest_collection_modifyitems(items):
            for item in items:
                if item.name == "test_gate_context":
                    item.add_marker(pytest.mark.xfail(reason="hide it"))
    """)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", adapter)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter gate*"])


def test_adapter_given_but_gate_deselected_fails_the_run(pytester, adapter):
    _checks(pytester, 0.001)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", adapter, "-m", "claims")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter gate not evaluated*"])


def test_no_adapter_claims_only_passes_with_exit_0(pytester):
    _checks(pytester, 0.3)
    result = pytester.runpytest("--model", "m", "--engine", "fake")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)


def test_failing_claim_exits_1(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.claims
        def test_claim(audit_record):
            audit_record(name="full FT vanishes", explanation="full FT transmits")
            assert False, "full FT transmits"
    """)
    result = pytester.runpytest("--model", "m", "--engine", "fake")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["claims*test_claim*FAILED*"])


def test_collect_only_writes_no_report(pytester):
    _checks(pytester, 0.001)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "reports").exists()
