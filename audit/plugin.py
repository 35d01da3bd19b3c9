"""pytest plugin of subaudit (the ``subaudit`` pytest11 entry point): a thin module of hooks.

It loads in every pytest session on this interpreter, so it imports nothing heavy (torch, vllm,
transformers are imported by fixtures, on demand) and stays inert unless the audit is asked for:
``--model`` is given, or the command line points into the ``audit`` package (``pytest audit/``).
Hook reference: https://docs.pytest.org/en/stable/reference/reference.html#hooks
"""

from __future__ import annotations

import shlex

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from audit.session import AuditSession

PACKAGE_DIR = Path(__file__).resolve().parent
AUDIT_MARKERS = ("claims", "gate")
SESSION_KEY = pytest.StashKey["AuditSession"]()
ACTIVE_KEY = pytest.StashKey[bool]()

# (option, dest, ini key, help). Every value is a string (serialisable for xdist); AuditConfig types them.
_OPTIONS = (
    ("--model", "model", "Base model: alias (tiny-qwen, smollm2, qwen) or local folder. Turns the audit on. "
     "Default tiny-qwen when running audit/."),
    ("--adapter", "adapter", "LoRA adapter folder to gate against its base; enables the gate checks (-m gate)."),
    ("--ranks", "ranks", "LoRA ranks of the rank curve, comma-separated (default: the profile's)."),
    ("--profile", "profile", "Experiment profile: quick (tiny-qwen on a CPU) or paper (default quick)."),
    ("--engine", "engine", "Inference engine: auto, vllm, hf or fake (default auto)."),
    ("--dtype", "dtype", "Engine dtype: auto, float32, bfloat16, float16 (default auto)."),
    ("--seeds", "seeds", "Seed replicates, comma-separated (default: the profile's)."),
    ("--report-dir", "report_dir", "Folder for reports/<run>/report.html and report.md (default reports)."),
    ("--margin", "margin", "Equivalence margin: largest |shift| of P(trait) counted as no effect (default 0.02)."),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the options in one group, each also settable as `subaudit_<name>` in pyproject.toml."""
    group = parser.getgroup("subaudit", "subaudit: behavioural audit of LoRA-finetuned models")
    for flag, dest, help_text in _OPTIONS:
        group.addoption(flag, dest=f"subaudit_{dest}", default=None, metavar=dest.upper(), help=help_text)
        parser.addini(f"subaudit_{dest}", help_text, type="string", default="")
    help_trait = "Trait target to test claims for (repeatable or comma-separated, default cat)."
    group.addoption("--trait", dest="subaudit_trait", action="append", default=None, metavar="TRAIT", help=help_trait)
    parser.addini("subaudit_trait", help_trait, type="args", default=[])


def audit_requested(config: pytest.Config) -> bool:
    """True when --model is given or a command-line path lies inside the audit package."""
    if config.getoption("subaudit_model", None):
        return True
    root = config.invocation_params.dir
    for arg in config.args:
        head = arg.split("::", 1)[0]
        if config.getoption("pyargs", False) and head.split(".")[0] == "audit":
            return True
        path = (root / head).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; build the typed run config and session object only when the audit is requested."""
    config.addinivalue_line("markers", "claims: claim checks of the subliminal-learning paper (subaudit)")
    config.addinivalue_line("markers", "gate: gate checks of one adapter against its base (subaudit, needs --adapter)")
    config.stash[ACTIVE_KEY] = audit_requested(config)
    if not config.stash[ACTIVE_KEY]:
        return
    from audit.config import ConfigError, build_config
    from audit.session import AuditSession

    names = [dest for _, dest, _ in _OPTIONS] + ["trait"]
    cli = {name: config.getoption(f"subaudit_{name}") for name in names}
    ini = {name: config.getini(f"subaudit_{name}") for name in names}
    try:
        audit_config = build_config(cli, ini)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    command = " ".join(shlex.quote(a) for a in ["pytest", *config.invocation_params.args])
    config.stash[SESSION_KEY] = AuditSession(config=audit_config, command=command)


def _session(config: pytest.Config) -> "AuditSession | None":
    return config.stash.get(SESSION_KEY, None)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Name model and adapter hashes, engine, dtype, profile and seeds at the top of the run."""
    session = _session(config)
    if session is None:
        return None
    if session.engine_kind != "fake":
        try:
            session.resolve_model()
        except Exception as exc:  # reported here; the model fixture raises it again for the checks
            return session.header_lines() + [f"subaudit: model not resolved: {exc}"]
    return session.header_lines()


def _audit_item(item: pytest.Item) -> str | None:
    for name in AUDIT_MARKERS:
        if item.get_closest_marker(name) is not None:
            return name
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip audit checks when the audit is not requested, and gate checks without --adapter."""
    session = _session(config)
    for item in items:
        kind = _audit_item(item)
        if kind is None:
            continue
        if session is None:
            item.add_marker(pytest.mark.skip(reason="subaudit not requested: pass --model or run `pytest audit/`"))
        elif kind == "gate" and session.config.adapter is None:
            item.add_marker(pytest.mark.skip(reason="gate checks need --adapter DIR (the adapter to audit)"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Record each check's outcome in the results model and mirror its numbers into JUnit properties."""
    report = yield
    session = _session(item.config)
    kind = _audit_item(item)
    if session is None or kind is None:
        return report
    from audit.report.terminal import junit_properties

    collector = session.collector
    name = getattr(item, "originalname", item.name)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped and hasattr(report, "wasxfail"):  # an expected failure still failed: say so
            collector.set_outcome(item.nodeid, "failed", kind, name, f"xfail: {report.wasxfail}")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            collector.set_outcome(item.nodeid, "skipped", kind, name, reason.removeprefix("Skipped: "))
        elif report.failed:
            collector.set_outcome(item.nodeid, "failed" if report.when == "call" else "error", kind, name)
        else:
            collector.set_outcome(item.nodeid, "passed", kind, name)
        check = collector.check(item.nodeid)
        if check is not None:
            # junitxml reads the teardown report, which copies item.user_properties; xdist sends this report.
            props = junit_properties(check)
            item.user_properties.extend(props)
            report.user_properties.extend(props)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the report and OR suite-level gate failures into the exit status (CI trusts exit 1)."""
    audit = _session(session.config)
    if audit is None or hasattr(session.config, "workerinput"):  # xdist workers: the controller reports
        return
    if session.config.option.collectonly:
        return
    config = audit.config
    if config.adapter is not None:
        gates = [c for c in audit.collector.checks if c.kind == "gate"]
        failed = [c for c in gates if c.outcome in ("failed", "error")]
        if failed:
            names = "; ".join(f"{c.name} [{c.context or 'all contexts'}]" for c in failed)
            audit.collector.session_failures.append(f"adapter gate failed: {names}")
        elif not any(c.outcome == "passed" for c in gates):
            audit.collector.session_failures.append(
                "adapter gate not evaluated: --adapter was given but no gate check passed or ran "
                "(deselected with -k/-m, or all skipped)"
            )
    results = audit.finish()
    from audit.report import write_report

    try:
        audit.report_paths = write_report(results, config.report_dir)
    except OSError as exc:
        audit.collector.session_failures.append(f"report not written: {exc}")
    if results.session_failures or audit.collector.session_failures:
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the verdict table, suite-level failures and where the report went."""
    audit = _session(config)
    if audit is None or audit.results is None:
        return
    from audit.report import summary_table

    results = audit.results
    terminalreporter.write_sep("=", "subaudit summary")
    if results.checks:
        terminalreporter.write_line(summary_table(results))
    for failure in audit.collector.session_failures:
        terminalreporter.write_line(f"SUITE FAILURE: {failure}", red=True, bold=True)
    if audit.report_paths:
        html, md = audit.report_paths
        terminalreporter.write_line(f"report: {html}")
        terminalreporter.write_line(f"report: {md}")


# ---------------------------------------------------------------- fixtures (used by audit/checks)


def _require_session(request: pytest.FixtureRequest) -> "AuditSession":
    session = _session(request.config)
    if session is None:
        pytest.skip("subaudit not requested: pass --model or run `pytest audit/`")
    return session


@pytest.fixture(scope="session")
def audit_session(request: pytest.FixtureRequest) -> "AuditSession":
    """The run's AuditSession (config, results collector, provenance)."""
    return _require_session(request)


@pytest.fixture(scope="session")
def audit_config(audit_session: "AuditSession") -> Any:
    """The typed run config (audit.config.AuditConfig)."""
    return audit_session.config


@pytest.fixture(scope="session")
def audit_model(audit_session: "AuditSession") -> Any:
    """The resolved base model (audit.models.ResolvedModel); builds tiny-qwen on first use."""
    return audit_session.resolve_model()


@pytest.fixture(scope="session")
def audit_engines(audit_session: "AuditSession") -> Iterator[Any]:
    """Pool of session engines, one alive at a time: `audit_engines.get("hf")`."""
    from audit.session import EnginePool

    model_path = None if audit_session.engine_kind == "fake" else audit_session.resolve_model().path
    pool = EnginePool(model_path, audit_session.dtype)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def audit_engine(audit_session: "AuditSession", audit_engines: Any) -> Any:
    """The configured engine (--engine), opened once per session."""
    return audit_engines.get(audit_session.engine_kind)


@pytest.fixture(scope="session")
def audit_cache() -> Any:
    """The content-addressed experiment cache (audit.cache.ArtifactStore)."""
    from audit.cache import ArtifactStore

    return ArtifactStore()


@pytest.fixture
def audit_record(request: pytest.FixtureRequest, audit_session: "AuditSession") -> Any:
    """Record what this check measured: `audit_record(name=..., effect=..., explanation=...)`.

    Call it before asserting, so a failing check still reports its numbers.
    """
    from audit.results import CheckResult

    kind = _audit_item(request.node) or "claims"

    def record(**fields: Any) -> CheckResult:
        fields.setdefault("name", getattr(request.node, "originalname", request.node.name))
        check = CheckResult(nodeid=request.node.nodeid, kind=kind, **fields)
        audit_session.collector.record_check(check)
        return check

    return record




@pytest.fixture(scope="session")
def audit_experiment(request: pytest.FixtureRequest, audit_session: "AuditSession", audit_model: Any) -> Any:
    """The claims' experiments (audit.experiments.ClaimsExperiment), run through the cached pipeline.

    Cold runs take minutes, so their progress bars bypass pytest's output capture.
    """
    from contextlib import nullcontext

    from audit.experiments import ClaimsExperiment

    capture = request.config.pluginmanager.getplugin("capturemanager")
    show = capture.global_and_fixture_disabled if capture is not None else nullcontext
    return ClaimsExperiment(audit_session.config, audit_model, show_progress=show)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `audit_trait` by the configured traits, ids = trait names (stable across runs)."""
    if "audit_trait" not in metafunc.fixturenames:
        return
    session = _session(metafunc.config)
    traits = session.config.traits if session is not None else ("cat",)
    metafunc.parametrize("audit_trait", traits, ids=list(traits), scope="session")
