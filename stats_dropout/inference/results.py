"""Frozen result types: Monte-Carlo estimates, statistical decisions, checks, batteries.

One result family (SciPy style): documented attributes, confidence intervals as a method or
as fields, and a readable ``__str__`` where a person will print the object.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, NamedTuple

import numpy as np

from stats_dropout._internal.validation import probability_iv
from stats_dropout.inference.intervals import t_interval
from stats_dropout.inference.summary import HTML_STYLE, html_rows, summary_lines

__all__ = [
    "ConfidenceInterval",
    "TrainMoments",
    "Decision",
    "ExactComparison",
    "EquivalenceResult",
    "CheckResult",
    "BatteryCost",
    "VerificationResult",
    "SchemeVerificationResult",
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
        """Level of the stored interval (``ci_level``, else ``1 − false_fail_rate``)."""
        return 1.0 - self.false_fail_rate if self.ci_level is None else self.ci_level

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


#: What a check can report: it held, it failed, or it could not be judged (with the reason).
STATUSES = ("passed", "failed", "skipped")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one ``check_*`` function.

    Attributes
    ----------
    check : str
        Check name with its parameters, e.g. ``"check_keep_rate[keep_prob=0.8]"``.
    status : {"passed", "failed", "skipped"}
    message : str
        Why it failed (with the evidence and a hint) or why it was skipped; "" if passed.
    decision : Decision or None
        The statistical evidence, for checks that make a statistical decision.
    keep_prob : float or None
    """

    check: str
    status: str
    message: str = ""
    decision: Decision | None = None
    keep_prob: float | None = None

    @property
    def passed(self):
        """True only if the check ran and held; a skipped check has not passed."""
        return self.status == "passed"

    @property
    def failed(self):
        return self.status == "failed"

    def _repr_html_(self):
        """A verdict line and a one-row table (Jupyter); every text is HTML-escaped."""
        return (f'<div class="stats-dropout-check"><p><span style="{HTML_STYLE.get(self.status, "")}">'
                f"{html.escape(self.status.upper())}</span> {html.escape(self.check)}</p>"
                + html_rows([self]) + "</div>")

    def to_record(self):
        d = self.decision
        return {
            "check": self.check,
            "keep_prob": self.keep_prob,
            "status": self.status,
            "estimate": d.estimate if d else np.nan,
            "expected": d.expected if d else np.nan,
            "ci_low": d.ci_low if d else np.nan,
            "ci_high": d.ci_high if d else np.nan,
            "pvalue": d.pvalue if d else np.nan,
            "min_detectable_effect": d.min_detectable_effect if d else np.nan,
            "n": d.n if d else np.nan,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatteryCost:
    """Where a battery's time went: inside the implementation's calls, or around them.

    Attributes
    ----------
    calls : dict
        Calls made to the implementation, per role (``{"train": 412, "eval": 3}``).
    call_seconds : float
        Wall seconds inside those calls.
    seconds : float
        Wall seconds of the whole battery.
    """

    calls: dict
    call_seconds: float
    seconds: float

    @property
    def overhead_seconds(self):
        """Seconds of the battery's own work (screening, accumulating, deciding, diagnosing)."""
        return max(self.seconds - self.call_seconds, 0.0)

    def __str__(self):
        n = sum(self.calls.values())
        roles = ", ".join(f"{k} {v}" for k, v in self.calls.items())
        return (f"{n} calls to the implementation ({roles}), {self.call_seconds:.3g} s inside them and "
                f"{self.overhead_seconds:.3g} s around them ({self.seconds:.3g} s in all)")


@dataclasses.dataclass(frozen=True)
class VerificationResult:
    """The outcome of a battery (:func:`stats_dropout.verify_dropout`).

    Attributes
    ----------
    checks : tuple of CheckResult
    contract : str
    seed : int
    false_fail_rate, false_pass_rate : float
        Battery totals; the false-fail rate is split across the statistical checks.
    warnings : tuple of str
    diagnosis : tuple of str
        The most likely bug(s) behind the failures, with their evidence.
    convention : str
        How the implementation was called (``"f(x, keep_prob) with keep_prob the keep
        probability"``, ``"f(x)"``, ...), as read from its signature.
    not_applicable : tuple of str
        The checks that do not apply, each with the need it lacks.
    per_check_false_fail_rate : float
        The share of :attr:`false_fail_rate` each statistical check was run at (the total split
        over the statistical checks that ran).
    cost : BatteryCost or None
        Calls made to the implementation and the time inside them, against the battery's total.
    """

    checks: tuple
    contract: str
    seed: int
    false_fail_rate: float
    false_pass_rate: float
    warnings: tuple = ()
    diagnosis: tuple = ()
    convention: str = ""
    not_applicable: tuple = ()
    per_check_false_fail_rate: float | None = None
    cost: BatteryCost | None = None

    @property
    def passed(self):
        return not any(c.failed for c in self.checks)  # skipped checks do not fail a battery

    @property
    def failed_checks(self):
        return tuple(c for c in self.checks if c.status == "failed")

    def to_frame(self):
        """One row per check: check, status, estimate, expected, ci_low, ci_high, pvalue,
        min_detectable_effect, n, message (plus keep_prob)."""
        import pandas as pd

        columns = ["check", "keep_prob", "status", "estimate", "expected", "ci_low", "ci_high",
                   "pvalue", "min_detectable_effect", "n", "message"]
        return pd.DataFrame([c.to_record() for c in self.checks], columns=columns)

    def summary(self, width=100, details="Full table, every check with its evidence: print(result)"):
        """The result for a person in about ten lines (what ``stats-dropout verify`` prints).

        The verdict; each diagnosis with the check that measures it (name and figure) and, on
        one line, the checks that fail only because of it; any other failed check, one line
        each; skipped checks with the reason; the checks that do not apply; then ``details``
        (where the full table is: ``print(result)``, or ``--details`` on the command line).
        No line is wider than ``width`` columns (long messages are wrapped or cut with "…").

        Returns
        -------
        str
        """
        return "\n".join(summary_lines(self, int(width), details))

    def _repr_html_(self):
        """The verdict, the diagnosis and one table row per check, for Jupyter (HTML-escaped)."""
        esc = html.escape
        status = "passed" if self.passed else "failed"
        counts = (f"{sum(c.passed for c in self.checks)} passed, {len(self.failed_checks)} failed, "
                  f"{sum(c.status == 'skipped' for c in self.checks)} skipped")
        parts = [f'<div class="stats-dropout-result"><p><span style="{HTML_STYLE[status]}">'
                 f"{'PASSED' if self.passed else 'FAILED'}</span> — stats_dropout battery, contract "
                 f"{esc(repr(self.contract))}: {counts}; seed {self.seed}, total false-fail rate "
                 f"{self.false_fail_rate:g}, false-pass rate {self.false_pass_rate:g}</p>"]
        if self.diagnosis or self.warnings:
            items = [f"<li>Diagnosis: {esc(d)}</li>" for d in self.diagnosis]
            items += [f"<li>Warning: {esc(w)}</li>" for w in self.warnings]
            parts.append("<ul>" + "".join(items) + "</ul>")
        parts.append(html_rows(self.checks))
        if self.not_applicable:
            parts.append("<p>Not applicable: " + esc("; ".join(self.not_applicable)) + "</p>")
        return "".join(parts) + "</div>"

    def __str__(self):
        frame = self.to_frame()
        head = (
            f"stats_dropout battery, contract {self.contract!r}: "
            f"{'PASSED' if self.passed else 'FAILED'} "
            f"({sum(c.status == 'passed' for c in self.checks)} passed, "
            f"{len(self.failed_checks)} failed, "
            f"{sum(c.status == 'skipped' for c in self.checks)} skipped) — seed {self.seed}, "
            f"total false-fail rate {self.false_fail_rate:g}, false-pass rate {self.false_pass_rate:g}"
        )
        table = frame.drop(columns=["message"]).to_string(
            index=False, float_format=lambda v: f"{v:.5g}", na_rep="")
        tested = sorted({c.keep_prob for c in self.checks if c.keep_prob is not None}, reverse=True)
        lines = [head, "keep_prob tested: " + ", ".join(f"{p:g}" for p in tested)
                 + (f"; called as {self.convention}" if self.convention else "")]
        # The plain-words verdict first, the evidence after: a learner reads top down.
        lines += [f"Diagnosis: {d}" for d in self.diagnosis]
        lines += [f"Warning: {w}" for w in self.warnings]
        lines += [f"FAILED {c.check}: {c.message}" for c in self.failed_checks]
        lines += ["", table]
        if self.not_applicable:
            lines += ["", "Not applicable: " + "; ".join(self.not_applicable)]
        if self.cost is not None:
            lines += ["", f"Cost: {self.cost}"]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SchemeVerificationResult:
    """The outcome of :func:`stats_dropout.verify_scheme`: a reference scheme held to its theory.

    Attributes
    ----------
    scheme : str
    keep_prob : float
    draws : int
        Monte-Carlo draws, computed from the requested error.
    seed : int
    decisions : dict
        Decision name (``"mean"``, ``"variance"``, ``"sharing"``, ``"output_mean"``,
        ``"output_second_moment"``) -> :class:`Decision`.
    """

    scheme: str
    keep_prob: float
    draws: int
    seed: int
    decisions: dict

    @property
    def passed(self):
        return not any(d.rejected for d in self.decisions.values())

    @property
    def failed_decisions(self):
        return {name: d for name, d in self.decisions.items() if d.rejected}

    def to_frame(self):
        """One row per decision: decision, property, estimate, expected, ci_low, ci_high, pvalue,
        min_detectable_effect, n_draws, false_fail_rate, rejected."""
        import pandas as pd

        return pd.DataFrame([{
            "decision": name, "property": d.property, "estimate": d.estimate, "expected": d.expected,
            "ci_low": d.ci_low, "ci_high": d.ci_high, "pvalue": d.pvalue,
            "min_detectable_effect": d.min_detectable_effect, "n_draws": self.draws,
            "false_fail_rate": d.false_fail_rate, "rejected": d.rejected,
        } for name, d in self.decisions.items()])

    def __str__(self):
        head = (f"stats_dropout scheme check {self.scheme!r} at keep_prob={self.keep_prob:g}: "
                f"{'PASSED' if self.passed else 'FAILED'} ({len(self.decisions)} decisions, "
                f"{self.draws} draws, seed {self.seed})")
        return "\n".join([head] + [f"  {d}" for d in self.decisions.values()])
