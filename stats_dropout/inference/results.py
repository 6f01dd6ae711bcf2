"""Frozen result types of the inference layer: Monte-Carlo estimates and decisions.

One result family (SciPy style): documented attributes, confidence intervals as a method or
as fields, and a readable ``__str__`` where a person will print the object. What a battery
reports — checks, their cost, the verification — is in :mod:`stats_dropout.inference.verdicts`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from stats_dropout._internal.validation import probability_iv
from stats_dropout.inference.intervals import t_interval

__all__ = [
    "ConfidenceInterval",
    "TrainMoments",
    "Decision",
    "ExactComparison",
    "EquivalenceResult",
]


class ConfidenceInterval(NamedTuple):
    """A confidence interval ``(low, high)``; arrays for per-element estimates."""

    low: Any
    high: Any


@dataclasses.dataclass(frozen=True, eq=False)
class TrainMoments:
    """Per-element streaming mean and variance of ``n_draws`` train outputs.

    Attributes
    ----------
    mean : ndarray
        Sample mean over draws, shape of the input.
    var : ndarray
        Unbiased sample variance (``ddof=1``) over draws.
    n_draws : int
    seed : int or None
        Seed the draws were generated from.
    """

    mean: np.ndarray
    var: np.ndarray
    n_draws: int
    seed: int | None = None

    @property
    def std_error(self):
        """Standard error of :attr:`mean`: ``sqrt(var / n_draws)``."""
        return np.sqrt(self.var / self.n_draws)

    def confidence_interval(self, level=0.95):
        """Per-element Student-t interval for the true mean at confidence ``level``.

        Valid by the central limit theorem over independent draws (the train output has
        finite variance for every scheme here); with ``n_draws == 1`` the interval is
        infinite.
        """
        if self.n_draws < 2:
            probability_iv(level, "level")
            inf = np.full_like(self.mean, np.inf, dtype=float)
            return ConfidenceInterval(-inf, inf)
        return ConfidenceInterval(*t_interval(self.mean, self.std_error, self.n_draws - 1, level))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """One statistical decision about one property.

    Attributes
    ----------
    property : str
        What is tested, in words ("train mean equals eval output").
    method : str
        The test ("z, Holm over 1024 elements", "exact binomial (Clopper-Pearson)").
    estimate, expected : float
        The measured figure and what the contract says it should be.
    ci_low, ci_high : float
        Confidence interval for the estimate at level :attr:`confidence_level`.
    pvalue : float
        p-value of the null "the property holds" (after multiplicity adjustment).
    false_fail_rate : float
        Probability of rejecting a correct implementation (type I) used for this decision.
    false_pass_rate : float
        Probability of missing an error of ``min_detectable_effect`` (type II).
    min_detectable_effect : float
        Smallest error (in ``effect_units``) detected with probability ``1 − false_pass_rate``.
    effect_units : str
        "absolute" or "relative".
    ci_level : float, optional
        Confidence level of ``[ci_low, ci_high]`` when it is not ``1 − false_fail_rate``: a
        decision over m elements (Holm) reports the worst element's interval at ``1 − α/m``,
        the level at which it can reject by itself.
    n : int
        Sample size behind the decision (draws, trials or elements).
    rejected : bool
        ``pvalue < false_fail_rate``.
    """

    #: Decisions spend part of a false-fail budget (ExactComparison: False).
    statistical = True

    property: str
    method: str
    estimate: float
    expected: float
    ci_low: float
    ci_high: float
    pvalue: float
    false_fail_rate: float
    false_pass_rate: float
    min_detectable_effect: float
    n: int
    rejected: bool
    effect_units: str = "absolute"
    details: dict = dataclasses.field(default_factory=dict, compare=False)
    ci_level: float | None = None

    @property
    def confidence_level(self):
        """Level the stored interval was built at (``ci_level``, else ``1 − false_fail_rate``)."""
        return 1.0 - self.false_fail_rate if self.ci_level is None else self.ci_level

    @property
    def coverage(self):
        """Probability that the reported interval covers the true value: ``1 − false_fail_rate``.

        A decision over m elements builds each element's interval at ``1 − α/m``
        (:attr:`confidence_level`), so the m intervals hold simultaneously with probability
        ``≥ 1 − α`` (Bonferroni); the one reported is chosen by the data (the worst element),
        and the simultaneous level is the one it keeps.
        """
        return 1.0 - self.false_fail_rate

    def confidence_interval(self):
        return ConfidenceInterval(self.ci_low, self.ci_high)

    def __str__(self):
        verdict = "REJECTED" if self.rejected else "not rejected"
        return (
            f"{self.property}: {verdict} — estimate {self.estimate:.6g} vs expected "
            f"{self.expected:.6g}, CI at confidence 1 − {1 - self.confidence_level:.2g} "
            f"[{self.ci_low:.6g}, {self.ci_high:.6g}], p = {self.pvalue:.3g} "
            f"({self.method}; n = {self.n}; false-fail rate {self.false_fail_rate:.3g}; "
            f"smallest detectable {self.effect_units} error {self.min_detectable_effect:.3g} "
            f"at false-pass rate {self.false_pass_rate:.3g})"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExactComparison:
    """An exact check's evidence: a measured figure against the contract's, within a rounding tolerance.

    Not a statistical decision: nothing is sampled, so there is no interval, p-value or error
    rate to state (a :class:`Decision` with rates of 0 would claim them); what bounds a false
    fail is the floating-point ``tolerance`` (:func:`~stats_dropout._internal.numerics.ulp_tol`).

    Attributes
    ----------
    property, method : str
    estimate, expected : float
        The measured figure (e.g. the fitted kept-unit scale) and the contract's.
    tolerance : float
        Largest difference that counts as rounding, in ``effect_units``; any error beyond it
        is detected (:attr:`min_detectable_effect`).
    n : int
        Values compared.
    rejected : bool
    """

    #: Exact comparisons spend no false-fail budget (read by the summaries).
    statistical = False

    property: str
    method: str
    estimate: float
    expected: float
    tolerance: float
    n: int
    rejected: bool
    effect_units: str = "relative"
    details: dict = dataclasses.field(default_factory=dict, compare=False)

    # No sampling error: the table columns of a Decision are "not applicable" (NaN).
    ci_low = ci_high = pvalue = float("nan")

    @property
    def min_detectable_effect(self):
        return self.tolerance

    def __str__(self):
        verdict = "DIFFERS" if self.rejected else "equal"
        return (f"{self.property}: {verdict} — {self.estimate:.9g} vs {self.expected:.9g} ({self.method}; "
                f"n = {self.n}; {self.effect_units} tolerance {self.tolerance:.3g})")


@dataclasses.dataclass(frozen=True)
class EquivalenceResult:
    """A two one-sided tests (TOST) decision that ``|true − expected| < margin``.

    Attributes
    ----------
    estimate : float
        Estimated difference ``true − expected``.
    margin : float
        Equivalence margin ε; "equal within ε" holds when ``equivalent``.
    ci_low, ci_high : float
        ``1 − 2·alpha`` confidence interval for the difference (TOST's own interval).
    pvalue : float
        The larger of the two one-sided p-values.
    alpha : float
        Probability of declaring equivalence when ``|difference| ≥ margin``.
    equivalent : bool
    n : int
    """

    estimate: float
    margin: float
    ci_low: float
    ci_high: float
    pvalue: float
    alpha: float
    equivalent: bool
    n: int
