"""The verification battery: ``check_*`` functions, :func:`iter_checks`, :func:`verify_dropout`.

Each check is one property and one decision. Statistical checks state their false-fail rate (the
battery's total ``false_fail_rate``, Bonferroni-split over every statistical check at every keep
probability) and the smallest error they detect with probability ``1 − false_pass_rate``. The
number of draws is computed from two targets, per keep probability:

* a keep-rate error of ``KEEP_RATE_ERROR`` (0.002 absolute), exact binomial test;
* a mean error of ``RELATIVE_MEAN_ERROR`` (0.5 % relative), pooled over units.

Exact checks (shapes, eval path, kept-unit scale, mask sharing, input mutation) have no false
fails beyond floating-point rounding, for which they allow 8 units in the last place of the
output dtype.

References
----------
.. [1] scikit-learn's ``utils/estimator_checks.py`` (checks as plain functions, a generator of
   applicable checks, ``parametrize_with_checks``) inspired the structure.
"""

from .._parametrize import parametrize_with_checks
from ..scheme_checks import count_scheme_decisions, scheme_probe, verify_scheme  # noqa: F401 (re-export)
from ._battery import (
    ASYMMETRIC_KEEP_PROBS,
    KEEP_RATE_ERROR,
    RELATIVE_MEAN_ERROR,
    Implementation,
    iter_checks,
    probe_shape,
    verify_dropout,
)
from .exact import *  # noqa: F403 (the check_* functions)
from .exact import __all__ as _exact_all
from .statistical import *  # noqa: F403
from .statistical import __all__ as _statistical_all

__all__ = [
    "Implementation",
    "verify_dropout",
    "iter_checks",
    "parametrize_with_checks",
    "probe_shape",
    "KEEP_RATE_ERROR",
    "RELATIVE_MEAN_ERROR",
    "ASYMMETRIC_KEEP_PROBS",
    "verify_scheme",
    *_exact_all,
    *_statistical_all,
]
