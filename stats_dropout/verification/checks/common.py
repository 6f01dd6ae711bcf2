"""Shared helpers of the check functions: result constructors, evidence guards, diagnosis glue."""

from __future__ import annotations

import numpy as np

from stats_dropout.inference.results import CheckResult, Decision
from stats_dropout.inference.stats import decide_keep_rate
from stats_dropout.verification.diagnosis import diagnose


def check_id(check, p):
    return f"{check}[keep_prob={p:g}]"


def passed(check, p, decision=None, message=""):
    return CheckResult(check_id(check, p), "passed", message, decision, p)


def skipped(check, p, reason):
    return CheckResult(check_id(check, p), "skipped", reason, None, p)


def failed(check, p, message, decision=None):
    return CheckResult(check_id(check, p), "failed", message, decision, p)


def from_decision(check, p, decision, hint=""):
    if not decision.rejected:
        return passed(check, p, decision)
    # Holm decisions report the worst element with its simultaneous interval (level 1 − α/m).
    ci_alpha = decision.details.get("ci_alpha", decision.false_fail_rate)
    simultaneous = "simultaneous " if ci_alpha < decision.false_fail_rate else ""
    msg = (f"{decision.property}: estimate {decision.estimate:.6g} ({simultaneous}CI at confidence "
           f"1 − {ci_alpha:.2g}: [{decision.ci_low:.6g}, {decision.ci_high:.6g}]) "
           f"differs from {decision.expected:.6g} "
           f"(p = {decision.pvalue:.3g}; false-fail rate {decision.false_fail_rate:.2g}; smallest "
           f"detectable {decision.effect_units} error {decision.min_detectable_effect:.3g} at "
           f"false-pass rate {decision.false_pass_rate:.2g}).")
    return failed(check, p, msg + (" " + hint if hint else ""), decision)


def exact_decision(prop, estimate, expected, n, rejected, mde=0.0):
    return Decision(prop, "exact comparison (8 ulp tolerance)", float(estimate), float(expected),
                    float(estimate), float(estimate), 0.0 if rejected else 1.0, 0.0, 0.0,
                    float(mde), int(n), bool(rejected), "relative")


def unusable(run, check, p, need_masks=False, need_variation=False):
    """A skip reason when the evidence cannot support ``check``, else None.

    ``need_variation``: the check compares masks with each other, which says nothing when
    every unit was kept (or every unit dropped) — check_keep_rate reports that.
    """
    ev = run.evidence(p)
    if ev.broken:
        return f"not run: {ev.broken} (see check_output_shape_dtype / check_finite_output)"
    if need_masks and not run.contract.has_masks:
        return f"not applicable: the {run.contract.name!r} contract has no keep/drop mask"
    if need_variation and ev.trials and ev.kept in (0, ev.trials):
        which = "kept" if ev.kept else "dropped"
        return f"not run: every unit was {which} in every call (see check_keep_rate)"
    return None


def diagnosis_of(run, p):
    ev = run.evidence(p)
    rate = rate_ci = scale = None
    if not ev.broken and ev.has_masks and ev.trials:
        d = decide_keep_rate(ev.kept, ev.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta)
        rate, rate_ci = d.estimate, (d.ci_low, d.ci_high)
    if ev.scale_ratios:
        scale = float(np.median(ev.scale_ratios))
    eval_ratio = eval_ratio_of(run, p)
    return diagnose(keep_prob=p, contract=run.contract.name, rate=rate, rate_ci=rate_ci, scale=scale,
                    only_zero_one=ev.only_zero_one and ev.draws > 0 and not np.all(np.isin(run.x, (0, 1))),
                    identical_calls=ev.draws > 2 and ev.identical_consecutive == ev.draws - 1
                    and 0 < ev.kept < ev.trials
                    and p < 1, eval_ratio=eval_ratio)


def eval_ratio_of(run, p):
    fn = run.impl.bound_eval(p)
    if fn is None:
        return None
    try:
        z = np.asarray(fn(run.x.copy()), dtype=np.float64)
    except Exception:  # noqa: BLE001 — reported by check_eval_contract
        return None
    if z.shape != run.x.shape:
        return None
    x = run.x.astype(np.float64)
    nz = x != 0
    ratios = z[nz] / x[nz]
    return float(np.median(ratios)) if ratios.size and np.ptp(ratios) < 1e-6 * max(abs(np.median(ratios)), 1) else None


def hint_for(run, p):
    found = diagnosis_of(run, p)
    if not found:
        return ""
    text = "Likely cause: " + "; ".join(found)
    return text if text.endswith(("?", ".")) else text + "."


