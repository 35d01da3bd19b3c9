"""Render `AuditResults` to HTML and Markdown with the jinja2 templates in templates/report/.

Model answers can contain HTML or Markdown: the HTML report autoescapes, and every value printed into the
Markdown report is backslash-escaped (`_md_text`), since GitHub renders both inside a PR comment.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from audit.errors import SubauditError
from audit.report import svg
from audit.results import AuditResults, Effect

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "report"


class ReportTemplateError(SubauditError, RuntimeError):
    """The report templates are missing (broken install); reinstall the package from a full checkout."""


_MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]<>&|!~])")
"""Characters that can make Markdown (or the HTML inside it) do something: links, images, tags, entities,
emphasis, code, table cells. Backslash-escaped, they render as themselves."""


def _md_text(value: object) -> str:
    """Every value printed into the Markdown report: its own characters, never markup, on one line."""
    if value is None:
        return ""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(str(value).split()))


def _effect(e: Effect | None) -> str:
    return e.text() if e is not None else "–"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


@lru_cache(maxsize=2)
def _environment(markdown: bool = False):
    import jinja2  # lazy: keeps `import audit.report` cheap for the plugin

    if not TEMPLATE_DIR.is_dir():
        raise ReportTemplateError(f"report templates not found at {TEMPLATE_DIR}; reinstall subaudit from a full checkout")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        # HTML: autoescape (a model can emit HTML). Markdown: every printed value is escaped for Markdown
        # instead, so plain characters stay plain (no &#39;) and nothing a model writes becomes markup.
        autoescape=not markdown,
        finalize=_md_text if markdown else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(effect=_effect, pvalue=_p)
    env.globals.update(
        rank_curve_svg=svg.rank_curve_svg, heatmap_svg=svg.heatmap_svg, bars_svg=svg.bars_svg
    )
    return env


def render_html(results: AuditResults) -> str:
    """The self-contained HTML report (inline CSS and SVG, no scripts, no external resources)."""
    return _environment().get_template("report.html.jinja").render(r=results, counts=results.counts())


def render_markdown(results: AuditResults) -> str:
    """The Markdown twin, fit for a GitHub step summary or a PR comment."""
    return _environment(markdown=True).get_template("report.md.jinja").render(r=results, counts=results.counts())


def write_report(results: AuditResults, report_dir: Path) -> tuple[Path, Path]:
    """Write results.json, report.html and report.md to report_dir/<run_id>/; return the two reports.

    results.json goes first: if rendering fails, the measurements are kept (`python -m audit.report refresh`
    renders them again)."""
    out = Path(report_dir) / results.provenance.run_id
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    for path, render in ((out / "results.json", lambda: results.model_dump_json(indent=2)),
                         (html_path, lambda: render_html(results)), (md_path, lambda: render_markdown(results))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(render(), encoding="utf-8")
        tmp.replace(path)  # atomic: a reader never sees half a report
    return html_path, md_path
