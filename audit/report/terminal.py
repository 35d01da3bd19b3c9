"""Terminal summary table and JUnit properties, both from the results model."""

from __future__ import annotations

from audit.results import AuditResults, CheckResult


def _short(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def summary_rows(results: AuditResults) -> list[list[str]]:
    rows = []
    for c in results.checks:
        e = c.effect
        rows.append([
            c.kind,
            _short(c.nodeid),
            c.shown_outcome.upper(),
            f"{e.value:+.3f}" if e else "",
            f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]" if e else "",
            str(e.n) if e else "",
            f"{e.p_adjusted:.3g}" if e and e.p_adjusted is not None else "",
            c.context or "",
        ])
    return rows


def summary_table(results: AuditResults) -> str:
    """A plain-text table: one row per check with effect, CI, n, adjusted p and context."""
    from tabulate import tabulate  # lazy: only needed at the end of an audit run

    headers = ["kind", "check", "verdict", "effect", "95% CI", "n", "p adj", "context"]
    return tabulate(summary_rows(results), headers=headers, tablefmt="simple", disable_numparse=True)


def junit_properties(check: CheckResult) -> list[tuple[str, str]]:
    """Key numbers of one check as (name, value) pairs for `item.user_properties` (JUnit <property>)."""
    props: list[tuple[str, str]] = [("subaudit.kind", check.kind), ("subaudit.check", check.name)]
    if check.trait:
        props.append(("subaudit.trait", check.trait))
    if check.context:
        props.append(("subaudit.context", check.context))
    if check.effect is not None:
        e = check.effect
        props += [
            ("subaudit.effect", f"{e.value:.6g}"),
            ("subaudit.ci_low", f"{e.ci_low:.6g}"),
            ("subaudit.ci_high", f"{e.ci_high:.6g}"),
            ("subaudit.n", str(e.n)),
        ]
        if e.p_value is not None:
            props.append(("subaudit.p", f"{e.p_value:.6g}"))
        if e.p_adjusted is not None:
            props.append(("subaudit.p_adjusted", f"{e.p_adjusted:.6g}"))
    props += [(f"subaudit.{k}", str(v)) for k, v in sorted(check.properties.items())]
    return props
