"""The checks of the battery: one ``check_*`` function per property, each ``check(run, keep_prob)``
with ``run`` a :class:`~stats_dropout.verification.battery.BatteryRun`.

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

from stats_dropout.verification.checks import exact, statistical
from stats_dropout.verification.checks.exact import *  # noqa: F403 (the exact check_* functions)
from stats_dropout.verification.checks.statistical import *  # noqa: F403 (the statistical ones)

__all__ = [*exact.__all__, *statistical.__all__]
