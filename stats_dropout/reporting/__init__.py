"""Sweeps over schemes × keep_prob, summarised as tidy pandas DataFrames, CSV and HTML.

Two sweeps live here:

:func:`sweep_schemes`
    The verification battery (:func:`stats_dropout.checks.verify_scheme`) at every scheme and
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
``_files``   :func:`write_csv` and atomic writes.

Every name of the former ``reporting.py`` is importable from here.
"""


from ..schemes import SCHEMES  # noqa: F401 (the former module imported it; tests read it)
from ._files import (  # noqa: F401 (re-exported: the former reporting.py namespace)
    CSV_FLOAT_FORMAT,
    _atomic_write_bytes,
    _atomic_write_text,
    _default_mode,
    write_csv,
)
from .html import (  # noqa: F401 (re-exported: the former reporting.py namespace)
    _CSS,
    _VERDICT_CLASS,
    FIGURES,
    _html,
    _inline_svg,
    _ledger_html,
    _styled,
)
from .report import (  # noqa: F401 (re-exported: the former reporting.py namespace)
    _metadata,
    _source_revision,
    _versions,
    _write_figures,
    write_report,
)
from .sweep import (  # noqa: F401 (re-exported: the former reporting.py namespace)
    _CELL_VERSION,
    CONTRASTS,
    DEFAULT_KEEP_PROBS,
    REPORT_KEEP_PROBS,
    SUMMARY_COLUMNS,
    _cell_key,
    _compute_summary_cell,
    _draws_for_margin,
    _summary_target,
    _sweep_schemes_iv,
    _sweep_summary_iv,
    cell_seed,
    format_schemes_table,
    summary_cell,
    sweep_schemes,
    sweep_summary,
)
from .tables import (  # noqa: F401 (re-exported: the former reporting.py namespace)
    _TABLE_VERSION,
    REPORT_EXPERIMENTS,
    _all_experiment_tables,
    _experiment_options,
    experiment_table,
)

__all__ = [
    "sweep_schemes",
    "format_schemes_table",
    "sweep_summary",
    "summary_cell",
    "write_csv",
    "DEFAULT_KEEP_PROBS",
    "REPORT_KEEP_PROBS",
    "CONTRASTS",
    "CSV_FLOAT_FORMAT",
]
