"""The report page: byte-identical for equal options, captions and ledger for what the run
measured, the thread cited; and it opens in a real browser (headless Chromium renders it, the
figures are there).

The browser tests skip cleanly where Chromium is absent (Debian: ``apt-get install -y chromium``).
"""

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from stats_dropout import claims, reporting
from stats_dropout.reporting import figures as fg
from tests.unit.test_reporting import SMALL, small_report

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"),
                             "/usr/bin/chromium") if p and os.path.exists(p)), None)

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")

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


@needs_chromium
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
    assert dom.count("<tr id=") == len(claims.CLAIMS)  # the ledger: one row per claim (C01a, C01b, C02–C17)
    assert "ERR_NAME_NOT_RESOLVED" not in done.stderr


@needs_chromium
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


# --- the page itself ------------------------------------------------------------------------
@pytest.mark.slow  # a second report (~12 s); test_reporting checks byte-identical CSVs in the default run
def test_equal_options_give_a_byte_identical_page(report_dir, tmp_path):
    # A second run with the same options, started from the first run's cell cache (resuming
    # equals recomputing: test_reporting.py), so the ledger, figures and page are redrawn in a
    # few seconds; the date and the run time differ between the two runs.
    again = tmp_path / "again"
    shutil.copytree(report_dir / ".cells", again / ".cells")
    reporting.write_report(str(again), **SMALL)
    first = (report_dir / "index.html").read_bytes()
    second = (again / "index.html").read_bytes()
    meta = json.loads((again / "metadata.json").read_text())
    meta_first = json.loads((report_dir / "metadata.json").read_text())
    if meta["source"] == meta_first["source"]:
        assert second == first
    else:
        # The page names the source commit (numbers depend on the code that drew them); when
        # another commit landed between the two runs, everything else must still be equal.
        def _source_free(page, source):
            return (page.replace(str(source["git_commit"]).encode(), b"<commit>")
                    .replace(" (with uncommitted changes)".encode(), b""))

        assert _source_free(second, meta["source"]) == _source_free(first, meta_first["source"])
    # The date and the run time are metadata.json's only.
    assert meta["timestamp"] and "runtime_seconds" in meta
    assert meta["timestamp"].encode() not in first
    assert meta["timestamp"][:10].encode() not in first  # not even the day


def _page_for(report_dir, schemes):
    """The page of ``report_dir``'s run restricted to ``schemes``, figures reduced to their captions."""
    summary = pd.read_csv(report_dir / "summary.csv")
    summary = summary[summary["scheme"].isin(schemes)]
    ledger = pd.read_csv(report_dir / "claims.csv")
    tables = {name: pd.read_csv(report_dir / csv) for name, (csv, _) in reporting.REPORT_EXPERIMENTS.items()}
    meta = json.loads((report_dir / "metadata.json").read_text())
    data = {"bias": summary, "variance": summary, "norm_inflation": tables["norm_table"],
            "inference_gap": tables["inference_gap"], "mc_averaging": tables["mc_averaging"]}
    figures = {name: {"svg": f"<svg id='{name}'></svg>", "caption": getattr(fg, f"caption_{name}")(frame)}
               for name, frame in data.items()}
    return reporting.html.render_page(summary, ledger, tables, figures, meta)


def test_captions_only_describe_the_schemes_run(report_dir):
    page = _page_for(report_dir, ["inverted"])
    captions = " ".join(part.split("</figcaption>")[0] for part in page.split("<figcaption>")[1:])
    assert "inverted" in captions
    for absent in ("alpha", "no-rescale", "no_rescale", "gaussian"):
        assert absent not in captions.lower(), absent
    full = _page_for(report_dir, ["inverted", "alpha", "no_rescale"])
    assert "alpha" in full.lower() and "p − 1" in full


def test_ledger_cites_the_thread_and_states_one_level(report_dir):
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert "“Inverted Dropout”" in page and "@paulinpaloalto" in page and "Srivastava" in page
    assert "id='C01a'" in page and "id='C01b'" in page and "id='C01'" not in page
    ledger = page.split("<table class='ledger'>")[1].split("</table>")[0]
    assert "95 % CI" not in ledger and "99 % CI" in ledger
    assert "0.86" in ledger and "course" in ledger
    assert "href='#fig-inference_gap'" in ledger  # C01b points at its figure
