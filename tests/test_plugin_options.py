"""The pytest plugin: option parsing, pyproject config, inertness, skip logic (pytester, FakeEngine)."""

import os
import subprocess
import sys
import time

import pytest

from audit.config import AuditConfig, ConfigError, build_config, parse_int_list, parse_names

pytest_plugins = ["pytester"]

SHOW_CONFIG = """
def test_show(audit_config, audit_session):
    c = audit_config
    print("CONFIG", c.model, c.engine, list(c.traits), c.ranks, c.seeds, c.margin, c.profile, c.report_dir)
"""


def test_help_is_fast_and_lists_the_options():
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTEST_ADDOPTS": ""}).stdout
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"pytest --help took {elapsed:.1f} s"
    assert "subaudit: behavioural audit" in out
    for flag in ("--model", "--adapter", "--trait", "--ranks", "--profile", "--engine", "--seeds", "--report-dir", "--margin"):
        assert flag in out
    assert "subaudit_margin" in out  # ini keys documented too


def test_plugin_import_pulls_no_heavy_libraries():
    code = "import sys, audit.plugin; print(sorted(m for m in ('torch', 'transformers', 'vllm', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_options_become_typed_config(pytester):
    pytester.makepyfile(SHOW_CONFIG)
    result = pytester.runpytest("-s", "--model", "tiny-qwen", "--engine", "fake", "--trait", "cat", "--trait", "owl,eagle",
                                "--ranks", "1,4,16", "--seeds", "3 4", "--margin", "0.05", "--profile", "paper",
                                "--report-dir", "out")
    result.assert_outcomes(passed=1)
    assert "CONFIG tiny-qwen fake ['cat', 'owl', 'eagle'] (1, 4, 16) (3, 4) 0.05 paper out" in result.stdout.str()


def test_pyproject_values_apply_and_cli_overrides_them(pytester):
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        subaudit_engine = "fake"
        subaudit_margin = "0.03"
        subaudit_trait = "owl wolf"
        subaudit_ranks = "2,8"
        subaudit_profile = "paper"
    """)
    pytester.makepyfile(SHOW_CONFIG)
    result = pytester.runpytest("-s", "--model", "m", "--profile", "quick")
    result.assert_outcomes(passed=1)
    assert "CONFIG m fake ['owl', 'wolf'] (2, 8) None 0.03 quick reports" in result.stdout.str()


@pytest.mark.parametrize("args, message", [
    (["--engine", "tpu"], "--engine must be one of auto, vllm, hf, fake*"),
    (["--ranks", "1,x"], "--ranks takes integers*"),
    (["--margin", "2"], "--margin is a probability shift*"),
])
def test_bad_options_are_usage_errors_with_one_line(pytester, args, message):
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--model", "m", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_inert_without_model(pytester):
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "subaudit:" not in result.stdout.str() and "subaudit summary" not in result.stdout.str()
    assert not (pytester.path / "reports").exists()


def test_audit_checks_skip_when_the_audit_is_not_requested(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.claims
        def test_claim(audit_record): pass
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*subaudit not requested: pass --model or run `pytest audit/`*"])


def test_gate_checks_skip_without_adapter(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.gate
        def test_gate(): pass
    """)
    result = pytester.runpytest("-rs", "--model", "m", "--engine", "fake")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*gate checks need --adapter DIR*"])


def test_header_names_model_adapter_engine_profile_seeds(pytester):
    adapter = pytester.mkdir("adapter")
    (adapter / "adapter_config.json").write_text("{}")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", str(adapter), "--seeds", "0,1")
    result.stdout.fnmatch_lines([
        "subaudit: model m; adapter *adapter (sha256 *)",
        "subaudit: engine fake, dtype float32, profile quick, seeds 0,1, *",
    ])


def test_running_the_audit_package_turns_the_audit_on_with_tiny_qwen_default():
    from audit.plugin import PACKAGE_DIR

    assert (PACKAGE_DIR / "checks").is_dir()
    assert build_config({}, {}).model == "tiny-qwen"


def test_config_parsers():
    assert parse_int_list("--ranks", "1, 4 16") == (1, 4, 16)
    assert parse_names(["cat,owl", "cat", " eagle "]) == ("cat", "owl", "eagle")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_int_list("--seeds", "")
    with pytest.raises(ConfigError, match="at least one trait"):
        AuditConfig(traits=())
    assert build_config({"margin": None}, {"margin": "0.1"}).margin == 0.1
