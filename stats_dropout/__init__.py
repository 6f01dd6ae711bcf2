"""stats_dropout: a statistical verification suite for dropout.

Monte-Carlo harnesses estimate the expected train-time output of a dropout scheme; statistical
tests with stated false-fail and false-pass rates decide whether it keeps its contract; a
battery of checks diagnoses which bug a broken implementation has.

Submodules that pull in heavier optional dependencies (``experiments``/``networks`` use
scikit-learn's digits, ``reporting``/``claims`` matplotlib) are imported on first attribute
access, so ``import stats_dropout`` stays light and never imports torch.
"""

import importlib

from . import adapters, schemes, stats, theory
from ._parametrize import parametrize_with_checks
from .checks import Implementation, iter_checks, verify_dropout
from .montecarlo import estimate_statistic_moments, estimate_train_moments
from .results import CheckResult, ConfidenceInterval, Decision, TrainMoments, VerificationResult
from .scheme_checks import verify_scheme
from .schemes import SCHEMES, DropoutScheme, get_scheme

__version__ = "0.1.0"

_LAZY = ("experiments", "networks", "reporting", "claims", "figures")

__all__ = [
    "SCHEMES",
    "CheckResult",
    "ConfidenceInterval",
    "Decision",
    "DropoutScheme",
    "Implementation",
    "TrainMoments",
    "VerificationResult",
    "adapters",
    "estimate_statistic_moments",
    "estimate_train_moments",
    "get_scheme",
    "iter_checks",
    "parametrize_with_checks",
    "schemes",
    "stats",
    "theory",
    "verify_dropout",
    "verify_scheme",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
