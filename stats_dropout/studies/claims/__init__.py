"""The claims ledger: every claim of the seed forum thread, answered by a measurement.

``docs/CLAIMS.md`` lists the claims (C01a, C01b, C02–C17) that learners and a mentor made about
inverted dropout in the forum thread "Inverted Dropout" (``/work/shared/seed/``; cited in
docs/CLAIMS.md). C01 of the thread ("output at test time equals the expected output at
training time") is two claims with two verdicts: C01a, the dropout layer's own expectation, and
C01b, the same through a nonlinearity downstream. Each claim here has two functions:

``measure_cNN(settings) -> dict``
    Runs the experiment (seeded Monte Carlo, exact enumeration or a recomputation) and returns
    the measured statistics: estimates, standard errors, confidence intervals, counts.
``decide_cNN(measurement) -> Verdict``
    Turns the measurement into a verdict — ``holds``, ``holds in expectation only``,
    ``holds approximately`` or ``false`` — with the deciding figure, its confidence interval
    and one plain sentence. It reads *only* the measurement, so feeding it a different
    measurement changes the verdict (the tests do exactly that); no verdict is typed in.

Statistical conventions of the ledger (printed in the report's methods section):

* intervals are two-sided at :data:`LEVEL` (99 %); "differs" means the interval excludes the
  value (a two-sided test at false-fail rate ``1 − LEVEL``);
* "equal within ε" is a TOST equivalence decision (:func:`stats_dropout.inference.stats.decide_equivalence`)
  at level :data:`TOST_ALPHA`, never a failed rejection;
* Monte-Carlo sizes are computed so that TOST declares equivalence of a correct quantity with
  probability :data:`POWER` (capped by ``max_draws``).

Layout (a subpackage since the module outgrew 500 lines):

``common``         verdict names, conventions (:data:`LEVEL`, :data:`TOST_ALPHA`, :data:`POWER`),
                   result types and the shared measurement helpers;
``single_layer``   C01a, C01b, C02–C06, C11–C13;
``training``       C07, C10, C14–C16;
``masks``          C08, C09, C17;
``ledger``         the claim texts, :data:`CLAIMS`, :func:`evaluate_claim`, :func:`claims_ledger`.

The public names of the modules are importable from here.
"""

from stats_dropout.studies.claims.common import (
    APPROXIMATELY,
    EXPECTATION_ONLY,
    FALSE,
    HOLDS,
    LEDGER_COLUMNS,
    LEVEL,
    POWER,
    THREAD,
    THREAD_CITATION,
    THREAD_NORM_A,
    THREAD_NORM_B,
    TOST_ALPHA,
    VERDICTS,
    ClaimResult,
    ClaimSettings,
    Verdict,
)
from stats_dropout.studies.claims.ledger import (
    CLAIMS,
    claims_ledger,
    evaluate_claim,
    format_ledger,
)
from stats_dropout.studies.claims.masks import (
    COURSE_HIDDEN,
    COURSE_KEEP_PROB,
    COURSE_KEEP_PROB_NOTE,
    course_style_forward,
    decide_c08,
    decide_c09,
    decide_c17,
    measure_c08,
    measure_c09,
    measure_c17,
)
from stats_dropout.studies.claims.single_layer import (
    C01B_MARGIN,
    C03_KEEP_PROBS,
    C04_VALUES,
    C12_PASSES,
    decide_c01a,
    decide_c01b,
    decide_c02,
    decide_c03,
    decide_c04,
    decide_c05,
    decide_c06,
    decide_c11,
    decide_c12,
    decide_c13,
    measure_c01a,
    measure_c01b,
    measure_c02,
    measure_c03,
    measure_c04,
    measure_c05,
    measure_c06,
    measure_c11,
    measure_c12,
    measure_c13,
)
from stats_dropout.studies.claims.training import (
    TRAJECTORY_ATOL,
    decide_c07,
    decide_c10,
    decide_c14,
    decide_c15,
    decide_c16,
    measure_c07,
    measure_c10,
    measure_c14,
    measure_c15,
    measure_c16,
)
from stats_dropout.studies.norms import thread_matrix

__all__ = [
    "APPROXIMATELY",
    "EXPECTATION_ONLY",
    "FALSE",
    "HOLDS",
    "LEDGER_COLUMNS",
    "LEVEL",
    "POWER",
    "THREAD",
    "THREAD_CITATION",
    "THREAD_NORM_A",
    "THREAD_NORM_B",
    "TOST_ALPHA",
    "VERDICTS",
    "ClaimResult",
    "ClaimSettings",
    "Verdict",
    "thread_matrix",
    "CLAIMS",
    "claims_ledger",
    "evaluate_claim",
    "format_ledger",
    "COURSE_HIDDEN",
    "COURSE_KEEP_PROB",
    "COURSE_KEEP_PROB_NOTE",
    "course_style_forward",
    "decide_c08",
    "decide_c09",
    "decide_c17",
    "measure_c08",
    "measure_c09",
    "measure_c17",
    "C03_KEEP_PROBS",
    "C04_VALUES",
    "C12_PASSES",
    "C01B_MARGIN",
    "decide_c01a",
    "decide_c01b",
    "decide_c02",
    "decide_c03",
    "decide_c04",
    "decide_c05",
    "decide_c06",
    "decide_c11",
    "decide_c12",
    "decide_c13",
    "measure_c01a",
    "measure_c01b",
    "measure_c02",
    "measure_c03",
    "measure_c04",
    "measure_c05",
    "measure_c06",
    "measure_c11",
    "measure_c12",
    "measure_c13",
    "TRAJECTORY_ATOL",
    "decide_c07",
    "decide_c10",
    "decide_c14",
    "decide_c15",
    "decide_c16",
    "measure_c07",
    "measure_c10",
    "measure_c14",
    "measure_c15",
    "measure_c16",
]
