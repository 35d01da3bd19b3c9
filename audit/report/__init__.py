"""Renderers of the one results model: HTML and Markdown reports, terminal table, JUnit properties."""

from audit.report.render import render_html, render_markdown, write_report
from audit.report.terminal import junit_properties, summary_table

__all__ = ["render_html", "render_markdown", "write_report", "summary_table", "junit_properties"]
