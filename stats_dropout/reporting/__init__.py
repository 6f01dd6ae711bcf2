"""Sweeps over schemes × keep_prob, summarised as tidy pandas DataFrames, CSV and HTML.

Two sweeps live here:

:func:`sweep_schemes`
    The verification battery (:func:`stats_dropout.verification.checks.verify_scheme`) at every scheme and
    keep probability, one row per decision; the ``stats-dropout schemes`` command prints it.
:func:`sweep_summary`
    What the report shows a learner: per scheme and keep probability, the mean bias (absolute
    and relative) with its confidence interval and a TOST equivalence verdict at a stated
    margin, the empirical against the theoretical variance with a ratio interval, and the keep
    rate with an exact binomial interval. One Monte-Carlo run per cell; cells are independent
    (each has its own seed derived from the run seed and the cell), may run on any executor,
    and are cached on disk so an interrupted sweep resumes where it stopped.

CSV files are written with a fixed float format, atomically (temporary file, then
``os.replace``), so the same seed and options give byte-identical files.

Layout (a subpackage since the module outgrew 500 lines):

``sweep``    both sweeps, the keep_prob grids, :data:`CONTRASTS`, per-cell seeds and cell cache;
``tables``   the report's experiment tables (:data:`REPORT_EXPERIMENTS`, :func:`experiment_table`);
``report``   :func:`write_report`, figures and ``metadata.json``;
``html``     the HTML page (:data:`FIGURES` captions, Styler tables, the ledger table);
``figures``  the report's figures (matplotlib, imported when drawn).

CSV files and atomic writes live in :mod:`stats_dropout._internal.files`.
"""

from stats_dropout._internal.files import CSV_FLOAT_FORMAT, write_csv
from stats_dropout.reporting.report import write_report
from stats_dropout.reporting.sweep import (
    CONTRASTS,
    DEFAULT_KEEP_PROBS,
    REPORT_KEEP_PROBS,
    SUMMARY_COLUMNS,
    cell_seed,
    format_schemes_table,
    summary_cell,
    sweep_schemes,
    sweep_summary,
)
from stats_dropout.reporting.tables import REPORT_EXPERIMENTS, experiment_table

__all__ = [
    "sweep_schemes",
    "format_schemes_table",
    "sweep_summary",
    "summary_cell",
    "cell_seed",
    "write_csv",
    "write_report",
    "experiment_table",
    "DEFAULT_KEEP_PROBS",
    "REPORT_KEEP_PROBS",
    "REPORT_EXPERIMENTS",
    "SUMMARY_COLUMNS",
    "CONTRASTS",
    "CSV_FLOAT_FORMAT",
]
