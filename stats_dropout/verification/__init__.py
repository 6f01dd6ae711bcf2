"""Verification: an implementation under test, held to its contract by a battery of checks.

Data flow inside this layer, in import order:

``implementation``  :class:`Implementation`: callables and what they claim;
``adapters/``       every calling convention (torch, course, CS231n, ...) becomes an Implementation;
``evidence``        one streaming pass over the implementation's draws per keep_prob;
``diagnosis``       bug signatures matched against the measured keep rate and scale;
``checks/``         the ``check_*`` functions (exact and statistical);
``battery``         :func:`verify_dropout` and :func:`iter_checks`: the run, its error budget;
``scheme_checks``   :func:`verify_scheme`: reference schemes held to their closed forms;
``parametrize``     :func:`parametrize_with_checks`: the battery as pytest cases.
"""

from stats_dropout.verification import adapters, checks
from stats_dropout.verification.battery import (
    KEEP_RATE_ERROR,
    RELATIVE_MEAN_ERROR,
    BatteryRun,
    iter_checks,
    verify_dropout,
)
from stats_dropout.verification.implementation import ASYMMETRIC_KEEP_PROBS, Implementation
from stats_dropout.verification.parametrize import parametrize_with_checks
from stats_dropout.verification.scheme_checks import count_scheme_decisions, verify_scheme

__all__ = [
    "Implementation",
    "BatteryRun",
    "verify_dropout",
    "iter_checks",
    "parametrize_with_checks",
    "verify_scheme",
    "count_scheme_decisions",
    "adapters",
    "checks",
    "KEEP_RATE_ERROR",
    "RELATIVE_MEAN_ERROR",
    "ASYMMETRIC_KEEP_PROBS",
]
