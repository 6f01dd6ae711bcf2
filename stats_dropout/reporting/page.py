"""The report page as a template: the HTML with ``$name`` slots that :func:`render_page` fills.

The page's words live here, its computed fragments (tables, figures, figures of merit) in
:mod:`stats_dropout.reporting.html`; ``string.Template`` keeps both readable and needs no
dependency.
"""

import string

__all__ = ["PAGE"]

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stats_dropout report — seed ${seed}</title>
<style>${css}</style></head>
<body>
<h1>stats_dropout report</h1>
<p>What dropout does at train time, measured: the bias and the spread of every reference scheme
across keep_prob, what happens after a nonlinearity, and every claim of the forum thread on
inverted dropout answered by a measurement. Seed ${seed};
${cells} sweep cells, ${total_draws} Monte-Carlo draws in the sweep.
Every number can be reproduced with <code>stats-dropout report --out DIR --seed ${seed}</code>
(same options give byte-identical CSV files).</p>
<p>Contents: <a href="#ledger">claims ledger</a> · <a href="#figures">figures</a> ·
<a href="#summary">sweep table</a> · <a href="#experiments">experiments</a> ·
<a href="#methods">methods</a></p>

<h2 id="ledger">Claims ledger</h2>
<p>Each claim of the thread (paraphrased), the verdict computed from its measurement at run
time (${verdict_line}), the figure that decides it with its ${level_percent} % confidence interval,
and one sentence. Verdicts: <b>holds</b>; <b>holds in expectation only</b> (true of the average
over masks, not of a single pass); <b>holds approximately</b>; <b>false</b>. The thread's
"output at test time equals the expected output at training time" is two claims: C01a for the
dropout layer itself, C01b through a nonlinearity after it. Claims run at the thread's
keep_prob 0.8, except C08 and C17 (0.86, the value the course's dropout assignment trains with)
and C16 (the digits network's 0.5).</p>
<p class="source"><b>Source.</b> ${citation} Its paper: N. Srivastava, G. Hinton,
A. Krizhevsky, I. Sutskever, R. Salakhutdinov, “Dropout: a simple way to prevent neural
networks from overfitting”, JMLR 15 (2014).</p>
<div class="scroll">${ledger_table}</div>

<h2 id="figures">Figures</h2>
${figures}

<h2 id="summary">Sweep: schemes × keep_prob (<code>summary.csv</code>)</h2>
<p>Relative bias β (E[train] = (1 + β)·eval) by the projection ratio, with its ${sweep_level} interval;
<code>equivalent</code> is the TOST decision that |β| &lt; ${tost_margin} at level 0.05;
variance ratio = empirical / theoretical per-unit variance; keep rate over independent mask
entries with its exact (Clopper–Pearson) ${sweep_level} interval. <code>no_rescale</code> is a
deliberately wrong implementation shown for contrast. Alpha dropout's contract is
distribution-level (moments over N(0, 1) inputs), so its per-input bias is expected.</p>
<div class="scroll">${summary_table}</div>

<h2 id="experiments">Experiments through nonlinearities and training</h2>
${experiments}

<h2 id="methods">Methods</h2>
<ul>
<li><b>Seeds.</b> Run seed ${seed}. Each sweep cell draws from its own stream,
seeded by a hash of (seed, scheme, keep_prob), so cells are independent and adding a keep_prob
leaves the others unchanged. Monte-Carlo draws come in blocks with their own
<code>SeedSequence</code> children: results do not depend on workers or executors.</li>
<li><b>Draws.</b> Sweep: per cell, the number of draws that lets TOST declare an unbiased
scheme equivalent within ±${tost_margin} (relative) with probability 0.999, computed
from the exact variance of the statistic, at least 2000 and at most
${max_draws}. Claims: sizes computed the same
way at a ${level_percent} % level (TOST level ${tost_level}, power 0.999)${draws_cap}.</li>
<li><b>Error rates.</b> Sweep intervals are ${sweep_level} per cell (so about one correct cell in twenty
has an interval missing 0 by chance; the TOST verdict is the decision). Ledger intervals are
${level_percent} %, every one (C16 re-expresses the digits table's
${digits_level} intervals at ${level_percent} %); "differs" means the
${level_percent} % interval excludes the value; "equal within ε" is a TOST at level ${tost_level}.
Experiment tables state their own levels and false-fail rates (columns
<code>confidence_level</code>, <code>pvalue</code>, <code>rejected</code>).</li>
<li><b>Probe.</b> Sweep cells use a standardised normal array of shape (32, 4, 8): batch,
channels or time, features.</li>
<li><b>Versions.</b> ${versions}; source commit
<code>${git_commit}</code>${dirty}.</li>
<li><b>Run.</b> Options: ${options}. The date and the run time are in
<code>metadata.json</code> only, so that the same options give a byte-identical page.</li>
</ul>
</body></html>
""")
