"""The HTML report in a real browser: headless Chromium opens it without console errors, the DOM keeps
a model's <script> as text, and a screenshot is non-blank with the rank plot drawn."""

import shutil
import subprocess
from pathlib import Path

import pytest

from audit.report import write_report
from audit.report.svg import PALETTE
from tests.test_report_render import SCRIPT, sample_results

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytestmark.append(pytest.mark.skip(reason="chromium not installed (Debian package `chromium`; `make test` installs it)"))


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("browser")
    html, _ = write_report(sample_results(), tmp)
    return tmp, html


def test_dom_loads_without_console_errors_and_keeps_script_as_text(report):
    tmp, html = report
    run = _chromium(tmp, "--dump-dom", html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    dom = run.stdout
    assert 'id="verdicts"' in dom and "<svg" in dom
    assert "&lt;script&gt;alert(" in dom  # the model's answer is text, not an element
    assert dom.count("<script") == 0
    assert SCRIPT not in dom


def test_screenshot_is_non_blank_and_shows_the_plot(report):
    Image = pytest.importorskip("PIL.Image")
    tmp, html = report
    shot = tmp / "shot.png"
    run = _chromium(tmp, f"--screenshot={shot}", "--window-size=1200,1400", html.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "screenshot looks blank"
    # The trait series of the rank curve is drawn in PALETTE[1]; only the plot uses that colour.
    target = tuple(int(PALETTE[1][i:i + 2], 16) for i in (1, 3, 5))
    plot_pixels = sum(n for n, rgb in colours if all(abs(a - b) <= 8 for a, b in zip(rgb, target)))
    assert plot_pixels > 200, f"rank-curve colour {PALETTE[1]} found on only {plot_pixels} pixels"


def test_verdict_table_fits_a_1280px_window_with_long_explanations_folded(tmp_path):
    results = sample_results()
    long = results.checks[1].model_copy(update={"explanation": "the adapter's shift of 'cat' " + "is measured again " * 40,
                                                "context": "sys=custom:" + "z" * 200})  # no break opportunity
    html, _ = write_report(results.model_copy(update={"checks": [*results.checks, long]}), tmp_path)
    # Test-only probe: the report itself has no scripts; this copy records the layout into the DOM.
    probe = html.with_name("probe.html")
    probe.write_text(html.read_text().replace("</body>", (
        "<script>const w = window.innerWidth, b = document.body;"
        "b.setAttribute('data-overflow', String(document.documentElement.scrollWidth > w));"
        "b.setAttribute('data-table-fits', String(document.getElementById('verdicts').getBoundingClientRect().right <= w));"
        "</script></body>")))
    run = _chromium(tmp_path, "--window-size=1280,900", "--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'data-overflow="false"' in run.stdout and 'data-table-fits="true"' in run.stdout
    assert "<details><summary>the adapter's shift" in run.stdout.replace("&#39;", "'")  # folded, not cut off
    assert 'class="adapter"' in run.stdout and "<td>owl</td>" in run.stdout  # the per-adapter headline section
