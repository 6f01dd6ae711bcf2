"""stats_dropout: a statistical verification suite for dropout.

Monte-Carlo harnesses estimate the expected train-time output of a dropout scheme; statistical
tests with stated false-fail and false-pass rates decide whether it keeps its contract; a
battery of checks diagnoses which bug a broken implementation has.

Submodules that pull in heavier optional dependencies (``experiments``/``networks`` use
scikit-learn's digits, ``reporting``/``claims`` matplotlib) are imported on first attribute
access, so ``import stats_dropout`` stays light and never imports torch.
"""

import importlib

import stats_dropout.verification.adapters.attention  # noqa: F401 (makes sd.adapters.attention available)
from stats_dropout.inference import stats
from stats_dropout.inference.montecarlo import estimate_statistic_moments, estimate_train_moments
from stats_dropout.inference.results import ConfidenceInterval, Decision, TrainMoments
from stats_dropout.inference.verdicts import CheckResult, SchemeVerificationResult, VerificationResult
from stats_dropout.reference import schemes, theory
from stats_dropout.reference.schemes import SCHEMES, DropoutScheme, get_scheme
from stats_dropout.verification import adapters
from stats_dropout.verification.battery import iter_checks, verify_dropout
from stats_dropout.verification.dropblock import verify_dropblock
from stats_dropout.verification.implementation import Implementation
from stats_dropout.verification.linear import LinearOp, verify_linear
from stats_dropout.verification.models import ModelVerificationResult, verify_model
from stats_dropout.verification.parametrize import parametrize_with_checks
from stats_dropout.verification.scheme_checks import verify_scheme

__version__ = "0.1.0"

#: Namespaces whose modules need heavier optional dependencies, imported on first access.
_LAZY = {
    "experiments": "stats_dropout.studies.experiments",
    "claims": "stats_dropout.studies.claims",
    "networks": "stats_dropout.reference.networks",
    "reporting": "stats_dropout.reporting",
    "figures": "stats_dropout.reporting.figures",
}

__all__ = [
    "SCHEMES",
    "CheckResult",
    "ConfidenceInterval",
    "Decision",
    "DropoutScheme",
    "Implementation",
    "LinearOp",
    "ModelVerificationResult",
    "SchemeVerificationResult",
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
    "verify_dropblock",
    "verify_dropout",
    "verify_linear",
    "verify_model",
    "verify_scheme",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
