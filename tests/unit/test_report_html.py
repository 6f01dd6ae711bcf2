"""The report opens in a real browser: headless Chromium renders it, the figures are there.

Skips cleanly where Chromium is absent (Debian: ``apt-get install -y chromium``).
"""

import os
import shutil
import subprocess

import pytest

from stats_dropout import reporting
from tests.unit.test_reporting import small_report

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"),
                             "/usr/bin/chromium") if p and os.path.exists(p)), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")

@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return small_report(tmp_path_factory)  # the same small report as test_reporting.py, built once


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           # Any attempt to reach the network fails: a self-contained page does not notice.
           "--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_with_its_figures(report_dir, tmp_path):
    url = (report_dir / "index.html").as_uri()
    done = _chromium(tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The parsed DOM (not the source text) holds every figure as inline SVG with drawn paths.
    for name in reporting.html.FIGURES:
        start = dom.find(f'id="fig-{name}"')
        assert start >= 0, f"figure {name} missing from the rendered page"
        end = dom.find("</figure>", start)
        assert "<svg" in dom[start:end] and "<path" in dom[start:end]
    assert dom.count("<tr id=") == 17  # the ledger: one row per claim
    assert "ERR_NAME_NOT_RESOLVED" not in done.stderr


def test_report_screenshot_is_not_blank(report_dir, tmp_path):
    shot = tmp_path / "page.png"
    done = _chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}",
                     (report_dir / "index.html").as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1200
    # A page that failed to render is one flat colour; the report has text, tables, figures.
    assert pixels[..., :3].std() > 0.05
