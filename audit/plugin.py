"""pytest plugin of subaudit (the ``subaudit`` pytest11 entry point): a thin module of hooks and fixtures.

It loads in every pytest session on this interpreter, so it imports nothing heavy (torch, vllm, transformers,
pydantic are imported on demand) and stays inert unless the audit is asked for: ``--model`` is given, or the
command line points into the ``audit`` package (``pytest audit/``). Every hook delegates to the run's
`audit.session.AuditSession`, which owns the outcomes, the suite-level gate rule and the report.
Hook reference: https://docs.pytest.org/en/stable/reference/reference.html#hooks
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from audit.session import AuditSession

PACKAGE_DIR = Path(__file__).resolve().parent
AUDIT_MARKERS = ("claims", "gate")
SESSION_KEY = pytest.StashKey["AuditSession"]()
NOT_REQUESTED = "subaudit not requested: pass --model or run `pytest audit/`"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the options of audit.config in one group, each also settable as `subaudit_<name>` in the ini file."""
    from audit.config import dest, options  # pure and light: dataclasses only

    group = parser.getgroup("subaudit", "subaudit: behavioural audit of LoRA-finetuned models")
    for f in options():
        name, repeatable = dest(f), f.metadata["repeatable"]
        if f.metadata["switch"]:
            group.addoption(f.metadata["flag"], dest=f"subaudit_{name}", default=None, action="store_const",
                            const="true", help=f.metadata["help"])
        else:
            group.addoption(f.metadata["flag"], dest=f"subaudit_{name}", default=None, metavar=name.upper(),
                            action="append" if repeatable else "store", help=f.metadata["help"])
        parser.addini(f"subaudit_{name}", f.metadata["help"], type="args" if repeatable else "string",
                      default=[] if repeatable else "")


def audit_requested(config: pytest.Config) -> bool:
    """True when --model is given or a command-line path lies inside the audit package."""
    if config.getoption("subaudit_model", None) is not None:
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
    """Register the markers; resolve the whole run once, before collection, when the audit is requested."""
    config.addinivalue_line("markers", "claims: claim checks of the subliminal-learning paper (subaudit)")
    config.addinivalue_line("markers", "gate: gate checks of one adapter against its base (subaudit, needs --adapter)")
    if not audit_requested(config):
        return
    from audit.config import dest, options
    from audit.errors import UsageError
    from audit.session import AuditSession

    names = [dest(f) for f in options()]
    cli = {name: config.getoption(f"subaudit_{name}") for name in names}
    ini = {name: config.getini(f"subaudit_{name}") for name in names}
    command = " ".join(shlex.quote(a) for a in ["pytest", *config.invocation_params.args])
    try:
        config.stash[SESSION_KEY] = AuditSession.start(cli, ini, command)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _session(config: pytest.Config) -> "AuditSession | None":
    return config.stash.get(SESSION_KEY, None)


def _kind(item: pytest.Item) -> str | None:
    return next((name for name in AUDIT_MARKERS if item.get_closest_marker(name) is not None), None)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Name model and adapter hashes, engine, dtype, profile, seeds and ranks at the top of the run."""
    session = _session(config)
    return session.header_lines() if session is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip audit checks when the audit is not requested, and gate checks without --adapter."""
    session = _session(config)
    for item in items:
        kind = _kind(item)
        if kind is not None and session is None:
            item.add_marker(pytest.mark.skip(reason=NOT_REQUESTED))
        elif kind == "gate" and not session.run.adapters:
            item.add_marker(pytest.mark.skip(reason="gate checks need --adapter DIR (the adapter to audit)"))


def _uncaptured(config: pytest.Config):
    """A context in which output bypasses pytest's capture (progress bars of long work)."""
    from contextlib import nullcontext

    capture = config.pluginmanager.getplugin("capturemanager")
    return capture.global_and_fixture_disabled if capture is not None else nullcontext


def pytest_collection_finish(session: pytest.Session) -> None:
    """Print the claims' plan when claim checks were selected; refuse it here, before any work, when it does not fit
    --budget."""
    audit = _session(session.config)
    if audit is None or not any(_kind(item) == "claims" for item in session.items):
        return
    from audit.errors import UsageError

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    try:
        lines = audit.plan_lines(_uncaptured(session.config))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if reporter is not None:
        for line in lines:
            reporter.write_line(line)


def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """--plan: the plan was printed at collection; run nothing."""
    audit = _session(session.config)
    return True if audit is not None and audit.config.plan else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Record each check's outcome in the results and mirror its numbers into JUnit properties."""
    report = yield
    session, kind = _session(item.config), _kind(item)
    if session is None or kind is None:
        return report
    check = session.record_outcome(item.nodeid, kind, getattr(item, "originalname", item.name), report, call.excinfo)
    if check is not None:
        from audit.report.terminal import junit_properties

        # junitxml reads the teardown report, which copies item.user_properties; xdist sends this report.
        props = junit_properties(check)
        item.user_properties.extend(props)
        report.user_properties.extend(props)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the report; a suite-level failure (the gate) turns a green exit status into 1 (CI trusts it)."""
    audit = _session(session.config)
    if audit is None or hasattr(session.config, "workerinput") or session.config.option.collectonly or audit.config.plan:
        return  # xdist workers: the controller reports; a plan runs nothing to report
    results = audit.finish()
    if audit.report_error is not None:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    elif results.session_failures and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the verdict table, suite-level failures and where the report went."""
    audit = _session(config)
    if audit is None or audit.results is None:
        return
    from audit.report import summary_table

    terminalreporter.write_sep("=", "subaudit summary")
    if audit.results.checks:
        terminalreporter.write_line(summary_table(audit.results))
    for failure in audit.results.session_failures:
        terminalreporter.write_line(f"SUITE FAILURE: {failure}", red=True, bold=True)
    if audit.report_error is not None:
        terminalreporter.write_line(f"INTERNAL ERROR: {audit.report_error}", red=True, bold=True)
    for path in audit.report_paths or ():
        terminalreporter.write_line(f"report: {path}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the checks by what the run resolved to; ids are names, stable across runs: `audit_trait`
    (traits), `gate_adapter` (adapter names), `gate_family` (the gate's probe sets), `gate_context` (the gate's contexts, by what is rendered), `gate_other_context` (all
    but the reference context)."""
    session = _session(metafunc.config)
    if "audit_trait" in metafunc.fixturenames:
        traits = session.config.traits if session is not None else ("cat",)
        metafunc.parametrize("audit_trait", traits, ids=list(traits), scope="session")
    if "gate_adapter" in metafunc.fixturenames:
        names = [a.name for a in session.run.adapters] if session is not None and session.run.adapters else ["none"]
        metafunc.parametrize("gate_adapter", names, ids=names, scope="session")
    if "gate_family" in metafunc.fixturenames:
        families = [p.name for p in session.run.gate_probe_sets] if session is not None else ["none"]
        metafunc.parametrize("gate_family", families, ids=families, scope="session")
    for name, reference in (("gate_context", True), ("gate_other_context", False)):
        if name in metafunc.fixturenames:
            contexts = session.gate_context_ids(reference) if session is not None else ["none"]
            metafunc.parametrize(name, contexts, ids=contexts, scope="session")


# ---------------------------------------------------------------- fixtures (used by audit/checks)


@pytest.fixture(scope="session")
def audit_session(request: pytest.FixtureRequest) -> "AuditSession":
    """The run's AuditSession (resolved run, results collector, measurements)."""
    session = _session(request.config)
    if session is None:
        pytest.skip(NOT_REQUESTED)
    return session


@pytest.fixture(scope="session")
def audit_run(audit_session: "AuditSession") -> Any:
    """The resolved run (audit.run.AuditRun)."""
    return audit_session.run


@pytest.fixture(scope="session")
def audit_claims(request: pytest.FixtureRequest, audit_session: "AuditSession") -> Any:
    """The claims' measurement (audit.claims.ClaimsMeasurement); cold runs take minutes, so its progress bars
    bypass pytest's output capture."""
    return audit_session.claims(_uncaptured(request.config))


@pytest.fixture(scope="session")
def audit_gate(audit_session: "AuditSession") -> Any:
    """The gate's measurement of the adapters (audit.gate.GateMeasurement)."""
    return audit_session.gate()


@pytest.fixture
def conclude(request: pytest.FixtureRequest, audit_session: "AuditSession") -> Callable[[str, Any], None]:
    """`conclude(name, verdict)`: record the verdict of this check, then pass, skip or fail it."""
    node = request.node
    return lambda name, verdict: audit_session.conclude(node.nodeid, _kind(node) or "claims", name, verdict)
