"""The pytest plugin: terminal summary, reports, JUnit properties and the exit status CI relies on."""

import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

CHECKS = """
import pytest
from audit.results import Effect
from audit.verdicts import Verdict

def _effect(v):
    return Effect(value=v, ci_low=v - 0.01, ci_high=v + 0.01, n=50, p_value=0.01, p_adjusted=0.03)

@pytest.mark.claims
def test_claim_holds(conclude):
    conclude("rank inverted-U", Verdict(True, "measured", _effect(0.031), trait="cat"))

@pytest.mark.gate
def test_gate_context(conclude):
    conclude("panel shift", Verdict(GATE_EFFECT < 0.02, "cat in template-default", _effect(GATE_EFFECT),
                                    "template-default", trait="cat", adapter="my-lora"))

@pytest.mark.gate
def test_gate_other():
    pass
"""


@pytest.fixture
def adapter(pytester):
    from tests.plugin_support import folder_adapter

    return str(folder_adapter(pytester.path / "my-lora"))


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
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter my-lora failed the gate (1 of 1 checks): panel shift [[]template-default]*"])
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
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter my-lora failed the gate*"])


def test_adapter_given_but_gate_deselected_fails_the_run(pytester, adapter):
    _checks(pytester, 0.001)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", adapter, "-m", "claims")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SUITE FAILURE: adapter my-lora not evaluated*"])


def test_no_adapter_claims_only_passes_with_exit_0(pytester):
    _checks(pytester, 0.3)
    result = pytester.runpytest("--model", "m", "--engine", "fake")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)


def test_failing_claim_exits_1(pytester):
    pytester.makepyfile("""
        import pytest
        from audit.verdicts import Verdict
        @pytest.mark.claims
        def test_claim(conclude):
            conclude("full FT vanishes", Verdict(False, "full FT transmits +0.3", context="template-default", trait="cat"))
    """)
    result = pytester.runpytest("--model", "m", "--engine", "fake")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["full FT vanishes (trait cat, context template-default): full FT transmits +0.3",
                                 "claims*test_claim*FAILED*"])
    assert "Traceback" not in result.stdout.str() and "Verdict(" not in result.stdout.str()


def test_errored_check_is_one_line_with_its_reason_in_the_report(pytester):
    pytester.makepyfile("""
        import pytest
        from audit.errors import SubauditError
        @pytest.fixture(scope="session")
        def broken():
            raise SubauditError("the measurement broke; do X to fix it")
        @pytest.mark.claims
        def test_a(broken): pass
        @pytest.mark.claims
        def test_b(broken): pass
    """)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--report-dir", "out")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "Traceback" not in out and out.count("SubauditError: the measurement broke; do X to fix it") >= 2
    import json

    (run,) = (pytester.path / "out").iterdir()
    checks = json.loads((run / "results.json").read_text())["checks"]
    assert [c["outcome"] for c in checks] == ["error", "error"]
    assert all(c["explanation"] == "the measurement broke; do X to fix it" for c in checks)


def test_collect_only_writes_no_report(pytester):
    _checks(pytester, 0.001)
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "reports").exists()


def test_a_report_that_cannot_be_rendered_is_an_internal_error_that_keeps_the_results(pytester, adapter):
    _checks(pytester, 0.001)
    pytester.makeconftest("""
        import audit.report.render as render

        def broken(results):
            raise KeyError("a template bug")

        render.render_html = broken
    """)
    # a subprocess: the conftest's patch must not outlive this run
    result = pytester.runpytest_subprocess("--model", "m", "--engine", "fake", "--adapter", adapter)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["INTERNAL ERROR: the report could not be rendered (KeyError: 'a template bug'), a bug "
                                 "in subaudit; the results are in reports/*/results.json*"])
    (run,) = (pytester.path / "reports").iterdir()
    assert {p.name for p in run.iterdir()} == {"results.json"}
