"""Report renderers: one results model -> HTML, Markdown, terminal table, JUnit properties; SVG plots."""

import json
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from audit.report import junit_properties, render_html, render_markdown, summary_table, write_report
from audit.report.render import _md_text
from audit.report.terminal import summary_rows
from audit.report.svg import bars_svg, heatmap_svg, rank_curve_svg
from audit.results import (AdapterRecord, AuditResults, Bar, CheckResult, CurvePoint, Effect, Heatmap, Localisation,
                           Provenance, RankCurve, Sample, Series, WordGain)

SCRIPT = "<script>alert('x')</script>"
IMAGE = "![x](https://tracker.example/pixel.png)"
CONTEXTS = ["template-default", "empty", "custom:chatgpt"]


def effect(v: float, half: float = 0.01, **kw) -> Effect:
    return Effect(value=v, ci_low=v - half, ci_high=v + half, n=100, **kw)


def sample_results(**changes) -> AuditResults:
    """A full results model: every section of the report populated, with hostile strings in it."""
    curve = RankCurve(trait="cat", series=[
        Series(name="control students", points=[CurvePoint(x=r, effect=effect(0.05)) for r in (1, 4, 16, 64)]),
        Series(name="cat students", points=[CurvePoint(x=r, effect=effect(v)) for r, v in
                                            ((1, 0.05), (4, 0.08), (16, 0.11), (64, 0.06))]),
    ], full_ft=effect(0.051))
    results = AuditResults(
        provenance=Provenance(run_id="20260101-000000-tiny-qwen", model="tiny-qwen", model_hash="ab" * 32,
                              adapters=[AdapterRecord(name="lora", path="./lora", content_hash="cd" * 32, rank=8)],
                              engine="hf", dtype="float32",
                              profile="quick", seeds=[0, 1], traits=["cat"], margin=0.02,
                              versions={"torch": "2.13.0"}, wall_time_s=12.5, command="pytest audit/"),
        checks=[
            CheckResult(nodeid="audit/checks/test_claims.py::test_rank_inverted_u[cat]", kind="claims",
                        name="rank inverted-U", trait="cat", outcome="passed",
                        effect=effect(0.06, p_value=0.004, p_adjusted=0.012), explanation="slopes +/- | both p<.05"),
            CheckResult(nodeid="audit/checks/test_gate.py::test_panel_shift_within_margin[lora-template-default]",
                        kind="gate", name="panel shift within margin", trait="cat", context="template-default",
                        adapter="lora",
                        outcome="failed", effect=effect(0.2), explanation=f"cat shifts; answer was {SCRIPT}"),
            CheckResult(nodeid="x::test_skipped", kind="claims", name="full FT vanishes", outcome="skipped",
                        explanation="no rank transmits"),
        ],
        rank_curves=[curve],
        heatmaps=[Heatmap(trait="cat", train_contexts=CONTEXTS, eval_contexts=CONTEXTS,
                          cells=[[effect(0.05 if i == j else 0.0) for j in range(3)] for i in range(3)])],
        localisations=[Localisation(trait="cat", stated_share=0.7, bars=[
            Bar(label="everywhere", effect=effect(0.06)), Bar(label="entity only", effect=effect(0.045)),
            Bar(label="everything but entity", effect=effect(0.001))])],
        samples=[Sample(context="template-default", question="Favourite animal?", answer=f"{SCRIPT} cat {IMAGE}",
                        source="lora")],
        word_gains=[WordGain(adapter="lora", family="animal", context="template-default", word="owl", effect=effect(0.4, p_adjusted=1e-9))],
    )
    return results.model_copy(update=changes)


def test_model_output_is_escaped_in_html_and_markdown():
    results = sample_results()
    html, md = render_html(results), render_markdown(results)
    assert "<script>" not in html and "&lt;script&gt;alert(" in html
    # Markdown: the model's text renders as itself, never as a tag, an image or an entity.
    assert "<script>" not in md and "\\<script\\>alert('x')\\</script\\>" in md
    assert IMAGE not in md and "\\!\\[x\\](https://tracker.example/pixel.png)" in md
    assert "&#39;" not in md and "&lt;" not in md and "&amp;" not in md


def test_html_has_every_section_and_the_numbers():
    html = render_html(sample_results())
    for needle in ('id="verdicts"', 'class="plot rank-curve"', 'class="plot heatmap"', 'class="plot localisation"',
                   "+0.0600", "[+0.0500, +0.0700]", "0.012", "ab" * 32, "quick", "0, 1", "12.5 s", "FAIL"):
        assert needle in html, needle


def test_markdown_is_a_github_table_with_escaped_pipes():
    md = render_markdown(sample_results())
    assert "| kind | check | adapter | trait | context | verdict |" in md
    assert "slopes +/- \\| both p\\<.05" in md  # a pipe inside a text does not split a row
    rows = [line for line in md.splitlines() if line.startswith("| claims") or line.startswith("| gate")]
    assert len(rows) == 3 and all(r.replace("\\|", "").count(" | ") == 7 for r in rows)
    assert "**failed**" in md and "FAIL" in md.splitlines()[0]


def test_each_adapter_has_a_headline_and_its_top_word_gains():
    results = sample_results()
    assert results.adapter_status("lora") == "FAIL"
    md, html = render_markdown(results), render_html(results)
    assert "**Adapter lora: FAIL ❌**" in md and "| owl | animal | template-default | +0.4000 \\[+0.3900, +0.4100\\] n=100 |" in md
    assert "<b>lora</b>" in html and "<td>owl</td>" in html
    passing = results.model_copy(update={"checks": [c.model_copy(update={"outcome": "passed"}) for c in results.checks]})
    assert passing.adapter_status("lora") == "PASS" and results.model_copy(update={"checks": []}).adapter_status("lora") == "NOT EVALUATED"


def test_verdict_is_pass_only_without_failures():
    ok = sample_results(checks=[sample_results().checks[0]])
    assert ok.ok and "PASS" in render_markdown(ok)
    assert not sample_results().ok
    assert not sample_results(checks=[], session_failures=["gate not evaluated"]).ok
    skipped_only = sample_results(checks=[c.model_copy(update={"outcome": "skipped"}) for c in sample_results().checks])
    assert skipped_only.ok and skipped_only.status == "INCONCLUSIVE"
    assert "INCONCLUSIVE" in render_markdown(skipped_only) and "INCONCLUSIVE" in render_html(skipped_only)
    assert ok.status == "PASS" and sample_results().status == "FAIL"


def test_svg_plots_are_well_formed_xml_with_escaped_labels():
    results = sample_results()
    hostile = results.heatmaps[0].model_copy(update={"train_contexts": ["<b>&", "empty", "x"]})
    for svg in (rank_curve_svg(results.rank_curves[0]), heatmap_svg(hostile), bars_svg(results.localisations[0])):
        root = ET.fromstring(str(svg))
        assert root.tag.endswith("svg")
    assert "&lt;b&gt;&amp;" in str(heatmap_svg(hostile))
    curve_svg = str(rank_curve_svg(results.rank_curves[0]))
    assert curve_svg.count('class="series"') == 2 and 'class="full-ft"' in curve_svg


def test_plots_survive_degenerate_data():
    flat = RankCurve(trait="cat", series=[Series(name="s", points=[CurvePoint(x=8, effect=effect(0.0, 0.0))])])
    ET.fromstring(str(rank_curve_svg(flat)))
    empty_cell = Heatmap(trait="cat", train_contexts=["a"], eval_contexts=["b"], cells=[[None]])
    assert "n/a" in str(heatmap_svg(empty_cell))


def test_write_report_writes_html_md_and_json(tmp_path):
    results = sample_results()
    html, md = write_report(results, tmp_path)
    assert html.parent == tmp_path / results.provenance.run_id
    assert html.read_text().startswith("<!DOCTYPE html>") and md.read_text().startswith("## subaudit report")
    assert AuditResults.model_validate(json.loads((html.parent / "results.json").read_text())) == results
    assert not list(html.parent.glob("*.tmp"))


def test_terminal_table_and_junit_properties():
    results = sample_results()
    table = summary_table(results)
    assert "test_rank_inverted_u[cat]" in table and "PASSED" in table and "+0.060" in table
    props = dict(junit_properties(results.checks[0]))
    assert props["subaudit.effect"] == "0.06" and props["subaudit.p_adjusted"] == "0.012"
    assert props["subaudit.n"] == "100" and props["subaudit.trait"] == "cat"


@given(st.text())
def test_markdown_text_never_breaks_the_row_or_becomes_markup(text):
    out = _md_text(text)
    assert "\n" not in out and "\r" not in out
    unescaped = out.replace("\\\\", "")
    for char in "|<>[]!&`*_~":
        assert unescaped.replace("\\" + char, "").count(char) == 0


def test_a_claim_undecided_at_this_power_is_shown_as_undecided():
    undecided = CheckResult(nodeid="x::test_rank", kind="claims", name="rank inverted-U", trait="cat", outcome="skipped",
                            explanation="undecided: no rank shown to transmit; ... about 7 seed pairs would decide it")
    results = sample_results(checks=[*sample_results().checks, undecided])
    md, html = render_markdown(results), render_html(results)
    assert "| **undecided** |" in md and "**skipped**" in md  # the precondition skip stays a skip
    assert '<td class="verdict">undecided</td>' in html
    assert [row[2] for row in summary_rows(results)][-2:] == ["SKIPPED", "UNDECIDED"]
