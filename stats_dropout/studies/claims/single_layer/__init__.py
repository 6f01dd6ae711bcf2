"""Claims about one dropout layer: C01–C06 and C11–C13 (means, variance, rescale, norms,
eval path, the paper's test-time rule).

Layout, by what the claims are about:

``moments``    C01a, C01b, C02, C03: the mean and the noise of the layer's output;
``norms``      C04, C05, C06: magnitudes and norms under the 1/keep_prob rescale;
``eval_path``  C11, C12, C13: the test-time rule (eval path, the paper's pW).

The ledger (:mod:`stats_dropout.studies.claims.ledger`) finds each ``measure_cNN`` and
``decide_cNN`` here; the public names of the modules are importable from here.
"""

from stats_dropout.studies.claims.single_layer.eval_path import (
    C12_PASSES,
    decide_c11,
    decide_c12,
    decide_c13,
    measure_c11,
    measure_c12,
    measure_c13,
)
from stats_dropout.studies.claims.single_layer.moments import (
    C01B_MARGIN,
    C03_KEEP_PROBS,
    decide_c01a,
    decide_c01b,
    decide_c02,
    decide_c03,
    downstream_setup,
    measure_c01a,
    measure_c01b,
    measure_c02,
    measure_c03,
)
from stats_dropout.studies.claims.single_layer.norms import (
    C04_VALUES,
    decide_c04,
    decide_c05,
    decide_c06,
    measure_c04,
    measure_c05,
    measure_c06,
)

__all__ = [
    "C01B_MARGIN",
    "C03_KEEP_PROBS",
    "C04_VALUES",
    "C12_PASSES",
    "downstream_setup",
    "measure_c01a",
    "decide_c01a",
    "measure_c01b",
    "decide_c01b",
    "measure_c02",
    "decide_c02",
    "measure_c03",
    "decide_c03",
    "measure_c04",
    "decide_c04",
    "measure_c05",
    "decide_c05",
    "measure_c06",
    "decide_c06",
    "measure_c11",
    "decide_c11",
    "measure_c12",
    "decide_c12",
    "measure_c13",
    "decide_c13",
]
