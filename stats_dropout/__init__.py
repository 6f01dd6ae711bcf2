"""stats_dropout: a statistical verification suite for dropout.

Monte-Carlo harnesses estimate the expected train-time output of a dropout scheme; statistical
tests with stated false-fail and false-pass rates decide whether it keeps its contract.
"""

from . import schemes, stats, theory
from .checks import Implementation, iter_checks, verify_dropout
from .scheme_checks import verify_scheme
from .montecarlo import estimate_statistic_moments, estimate_train_moments
from .results import CheckResult, ConfidenceInterval, Decision, TrainMoments, VerificationResult
from .schemes import SCHEMES, DropoutScheme, get_scheme

__version__ = "0.1.0"

__all__ = [
    "SCHEMES",
    "Implementation",
    "iter_checks",
    "verify_dropout",
    "CheckResult",
    "ConfidenceInterval",
    "Decision",
    "DropoutScheme",
    "TrainMoments",
    "VerificationResult",
    "estimate_statistic_moments",
    "estimate_train_moments",
    "get_scheme",
    "schemes",
    "stats",
    "theory",
    "verify_scheme",
]
