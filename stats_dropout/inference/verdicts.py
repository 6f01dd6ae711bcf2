"""What a battery reports: each check's result, the battery's cost, the verification.

Frozen, with documented attributes, ``to_frame()`` for pandas, a readable ``__str__`` and
``_repr_html_`` for Jupyter (SciPy-style results). The statistical evidence inside them is an
:mod:`~stats_dropout.inference.results` ``Decision`` or ``ExactComparison``.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np

from stats_dropout.inference.results import Decision
from stats_dropout.inference.summary import HTML_STYLE, html_rows, summary_lines

__all__ = ["STATUSES", "CheckResult", "BatteryCost", "VerificationResult", "SchemeVerificationResult"]


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
