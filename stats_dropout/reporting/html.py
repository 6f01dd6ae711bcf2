"""The report's HTML page: figure captions, the claims ledger table, pandas Styler tables
and the page itself (:func:`render_page`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from stats_dropout.reporting.page import PAGE
from stats_dropout.reporting.tables import REPORT_EXPERIMENTS

#: The report's figures, in page order: name -> title. Captions are written from each run's
#: data (:mod:`stats_dropout.reporting.figures`, ``caption_<name>``), so they describe only the
#: schemes and panels that run computed.
FIGURES = {
    "bias": "Mean bias vs keep_prob",
    "variance": "Variance: Monte Carlo vs theory",
    "norm_inflation": "Norm inflation",
    "inference_gap": "Inference gap per activation",
    "mc_averaging": "MC averaging vs weight scaling",
}

#: The report figure that shows each claim's measurement, where there is one.
CLAIM_FIGURES = {"C01a": "bias", "C01b": "inference_gap", "C02": "variance", "C05": "norm_inflation",
                 "C16": "mc_averaging"}


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;vertical-align:top}th{background:#f3f3f3}
.verdict-holds{background:#dff0d8}.verdict-false{background:#f2dede}
.verdict-approx{background:#fcf8e3}.verdict-expect{background:#d9edf7}
figure{margin:1.2em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.9em;color:#444}
.scroll{overflow-x:auto}code{background:#f5f5f5;padding:0 .2em}
"""

_VERDICT_CLASS = {"holds": "verdict-holds", "false": "verdict-false",
                  "holds approximately": "verdict-approx", "holds in expectation only": "verdict-expect"}


def _inline_svg(svg):
    """SVG markup without its XML prolog and DOCTYPE, for inlining in HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _styled(frame, uuid, *, precision=4, columns=None):
    """A pandas Styler table with a fixed uuid (stable HTML) and compact number formats."""
    from pandas.io.formats.style import Styler

    frame = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    # cell_ids=False: no per-cell element ids, which would double the page's size.
    styler = Styler(frame, uuid=uuid, cell_ids=False).hide(axis="index")
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    styler = styler.format({c: f"{{:.{precision}g}}" for c in floats}, na_rep="")
    return styler.to_html()


def _ledger_html(ledger, figures=()):
    from html import escape

    rows = []
    for r in ledger.itertuples(index=False):
        shown = CLAIM_FIGURES.get(r.id)
        see = (f"<br><small>Related figure: <a href='#fig-{shown}'>{escape(FIGURES[shown])}</a>.</small>"
               if shown in figures else "")
        cls = _VERDICT_CLASS.get(r.verdict, "")
        ci = ("" if r.ci_low == r.ci_high else
              f"<br><small>{100 * r.confidence_level:g} % CI [{r.ci_low:.5g}, {r.ci_high:.5g}]</small>")
        kp = "" if np.isnan(r.keep_prob) else f", keep_prob {r.keep_prob:g}"
        rows.append(
            f"<tr id='{r.id}'><td><b>{r.id}</b></td><td>{escape(r.claim)}</td>"
            f"<td class='{cls}'><b>{escape(r.verdict)}</b></td>"
            f"<td>{escape(r.figure_name)}: <b>{r.figure:.6g}</b>{ci}{see}</td>"
            f"<td>{escape(r.explanation)}<br><small>Measured by: {escape(r.measurement)} "
            f"Seed {r.seed}, {r.draws} draws{kp}.</small></td></tr>")
    return ("<table class='ledger'><thead><tr><th>id</th><th>claim (from the thread)</th>"
            "<th>verdict</th><th>deciding figure</th><th>what it means</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _table_level(table):
    if table is None or "confidence_level" not in table:
        return "own-level"
    return f"{100 * float(table['confidence_level'].iloc[0]):.8g} %"


def render_page(summary, ledger, tables, figures, metadata):
    """The report page. ``figures`` maps a :data:`FIGURES` name to ``{"svg", "caption"}``;
    ``metadata`` is ``metadata.json``'s content. Nothing that changes between two runs with the
    same options (the date, the run time) is put on the page, so equal options give equal bytes.
    """
    from html import escape

    from stats_dropout.studies.claims.common import LEVEL, THREAD_CITATION

    v = metadata["versions"]
    sweep = metadata["sweep"]
    counts = ledger["verdict"].value_counts()
    verdict_line = ", ".join(f"{counts[k]} {k}" for k in
                             ("holds", "holds in expectation only", "holds approximately", "false")
                             if k in counts)
    fig_html = []
    sweep_level = f"{100 * float(sweep['confidence_level']):g} %"
    formats = metadata.get("figure_formats", ["svg", "png"])
    for name, title in FIGURES.items():
        if name not in figures:
            continue
        files = ", ".join(f"<code>figures/{name}.{ext}</code>" for ext in formats)
        stand = f" (Standalone files: {files}.)" if files else ""
        fig_html.append(f"<figure id='fig-{name}'><h3>{escape(title)}</h3>"
                        f"{_inline_svg(figures[name]['svg'])}"
                        f"<figcaption>{escape(figures[name]['caption'])}{stand}"
                        f"</figcaption></figure>")
    summary_cols = ["scheme", "keep_prob", "contract", "n_draws", "relative_bias",
                    "relative_bias_ci_low", "relative_bias_ci_high", "equivalent", "var_theory",
                    "var_empirical", "var_ratio", "var_ratio_ci_low", "var_ratio_ci_high",
                    "keep_rate", "keep_rate_ci_low", "keep_rate_ci_high"]
    exp_html = []
    for name, (csv_name, _) in REPORT_EXPERIMENTS.items():
        exp_html.append(f"<h3>{escape(name)} <small>(<code>{csv_name}</code>)</small></h3>"
                        f"<div class='scroll'>{_styled(tables[name], name)}</div>")
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    options = metadata["options"]
    draws_cap = "" if options["draws"] is None else f", capped at {options['draws']}"
    dirty = " (with uncommitted changes)" if metadata["source"]["uncommitted_changes"] else ""
    return PAGE.substitute(
        seed=metadata["seed"], css=_CSS, cells=sweep["cells"], total_draws=f"{sweep['total_draws']:,}",
        verdict_line=verdict_line, level_percent=f"{100 * LEVEL:g}", citation=escape(THREAD_CITATION),
        ledger_table=_ledger_html(ledger, figures), figures="".join(fig_html), sweep_level=sweep_level,
        tost_margin=f"{sweep['tost_margin']:g}", summary_table=_styled(summary, "summary", columns=summary_cols),
        experiments="".join(exp_html),
        max_draws="200000" if options["draws"] is None else options["draws"],
        tost_level=f"{1 - LEVEL:g}", draws_cap=draws_cap, digits_level=_table_level(tables.get("mc_averaging")),
        versions=escape(versions), git_commit=escape(str(metadata["source"]["git_commit"])), dirty=dirty,
        options=escape(json.dumps(options)),
    )
