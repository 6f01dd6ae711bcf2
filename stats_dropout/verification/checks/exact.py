"""Exact checks: properties that hold value by value, up to floating-point rounding.

Tolerances come from :func:`stats_dropout._internal.numerics.ulp_tol` of the output dtype (8 ulp
for eval and keep_prob = 1; kept units: ContractModel.kept_tolerance). User code is called
through :func:`stats_dropout.verification.evidence.call_user`: any exception (``SystemExit``
included; ``KeyboardInterrupt`` re-raised) is a failed check with its location.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from stats_dropout._internal.numerics import EXACT_ULPS, MOMENT_ULPS, ulp_tol
from stats_dropout.reference.contracts import subnormal_spacing
from stats_dropout.verification.checks.common import (
    exact_decision,
    failed,
    hint_for,
    passed,
    skipped,
    unusable,
)
from stats_dropout.verification.evidence import call_user

__all__ = [
    "check_output_shape_dtype",
    "check_finite_output",
    "check_input_unchanged",
    "check_eval_deterministic",
    "check_eval_contract",
    "check_kept_scale",
    "check_sharing_pattern",
    "check_keep_prob_one",
    "check_invalid_keep_prob",
    "check_backward_mask",
]

#: Values of keep_prob an implementation that validates its argument must reject.
INVALID_KEEP_PROBS = (0.0, 1.5, -0.25, float("nan"))


def check_output_shape_dtype(run, p):
    """The train output has the input's shape and dtype, and train does not raise."""
    ev = run.evidence(p)
    if ev.error:
        return failed("check_output_shape_dtype", p, f"train raised {ev.error}.")
    if ev.shape_error:
        return failed("check_output_shape_dtype", p, ev.shape_error + ".")
    if ev.dtype_error:
        return failed("check_output_shape_dtype", p, ev.dtype_error + ": dropout should preserve the dtype.")
    return passed("check_output_shape_dtype", p)


def check_finite_output(run, p):
    """A finite input gives a finite train output."""
    ev = run.evidence(p)
    if ev.error or ev.shape_error:
        return skipped("check_finite_output", p, "not run: train failed (see check_output_shape_dtype)")
    if ev.nonfinite:
        return failed("check_finite_output", p,
                       f"train returned {ev.nonfinite} NaN or infinite value(s) for a finite input "
                       f"(keep_prob={p:g}). Is there a division by zero or by a drop probability of 0?")
    return passed("check_finite_output", p)


def check_input_unchanged(run, p):
    """Neither train nor eval modifies its input in place — unless it declares it does.

    An implementation declared in place (``Implementation.inplace``, torch ``inplace=True``) gets
    a fresh copy per call and must return an output that aliases that input
    (``np.shares_memory``): writing into its input is then the declared behaviour.
    """
    name = "check_input_unchanged"
    ev = run.evidence(p)
    inplace = bool(getattr(run.impl, "inplace", False))
    if inplace:
        if ev.error or ev.shape_error:
            return skipped(name, p, "not run: train failed (see check_output_shape_dtype)")
        calls = ev.elapsed_calls
        if calls and ev.aliased_calls < calls:
            return failed(name, p, f"the implementation is declared in place (inplace=True) but "
                                   f"{calls - ev.aliased_calls} of {calls} train outputs do not share memory "
                                   "with their input: it returned a new array; declare inplace=False.")
        return passed(name, p, message=f"in place as declared: all {calls} train outputs alias their input")
    culprits = ["train"] if ev.mutated else []
    fn = run.impl.bound_eval(p)
    if fn is not None:
        xin = run.x.copy()
        call_user(fn, xin)  # an exception is reported by check_eval_contract
        if not np.array_equal(xin, run.x, equal_nan=True):
            culprits.append("eval")
    if culprits:
        return failed("check_input_unchanged", p,
                       f"{' and '.join(culprits)} modified its input in place (e.g. `x *= mask` or "
                       "`x /= keep_prob`); work on a copy: `out = x * mask / keep_prob`.")
    return passed("check_input_unchanged", p)


def _call_eval(run, p):
    fn = run.impl.bound_eval(p)
    # Converted here, inside the callers' try: an output that is not a real array is the
    # implementation's failure, not the battery's.
    z1 = np.asarray(np.asarray(fn(run.x.copy())), dtype=np.float64)
    z2 = np.asarray(np.asarray(fn(run.x.copy())), dtype=np.float64)
    return z1, z2


def check_eval_deterministic(run, p):
    """Two eval calls on the same input return identical outputs."""
    if run.impl.eval is None:
        return skipped("check_eval_deterministic", p, "no eval path given")
    out, error = call_user(_call_eval, run, p)
    if error:
        return failed("check_eval_deterministic", p, f"eval raised {error}.")
    z1, z2 = out
    if z1.shape != z2.shape or not np.array_equal(z1, z2, equal_nan=True):
        return failed("check_eval_deterministic", p,
                       "eval returned different outputs for the same input: dropout must be off at "
                       "test time (no random mask in the eval path).")
    return passed("check_eval_deterministic", p)


def check_eval_contract(run, p):
    """The eval output equals the contract's: identity (inverted, gaussian, moments) or ``p·x``."""
    if run.impl.eval is None:
        return skipped("check_eval_contract", p, "no eval path given")
    out, error = call_user(_call_eval, run, p)
    if error:
        return failed("check_eval_contract", p, f"eval raised {error}.")
    z = out[0]
    x = run.x.astype(np.float64)
    expected = run.contract.eval_value(x, p)
    if z.shape != x.shape:
        return failed("check_eval_contract", p, f"eval returned shape {z.shape} for input shape {x.shape}.")
    z = z.astype(np.float64)
    tol = ulp_tol(run.x.dtype, EXACT_ULPS)  # x or p·x computed in one or two roundings, with headroom
    err = np.abs(z - expected)
    bad = err > tol * np.abs(expected) + subnormal_spacing(run.x.dtype)  # p·x may be subnormal (float16)
    nz = x != 0
    ratio = float(np.median(z[nz] / x[nz])) if np.any(nz) else np.nan
    want = "x" if run.contract.name != "standard" else f"keep_prob·x = {p:g}·x"
    decision = exact_decision("eval output / input", ratio, p if run.contract.name == "standard" else 1.0,
                               x.size, bool(bad.any()), tol)
    if bad.any():
        hint = hint_for(run, p)
        return failed("check_eval_contract", p,
                       f"eval output should be {want} for the {run.contract.name!r} contract, but "
                       f"{int(bad.sum())} of {x.size} units differ (median eval/input ratio "
                       f"{ratio:.9g}). " + hint, decision)
    return passed("check_eval_contract", p, decision)


def kept_scale_bias(run, p):
    """``(measured scale, bias, nearest kept form)`` of the kept units at ``p``, or None.

    The scale is the least-squares slope of kept outputs on inputs (through the origin for
    Bernoulli masks, with an intercept for alpha dropout), so rounding averages out and a scale
    rounded in a low dtype shows: torch's bfloat16 ``1/0.9`` is 1.109375, a bias ``s·p − 1`` of
    −0.156 %. The bias is relative to the contract's scale (``1/p``, ``1`` or alpha's ``a``).
    """
    ev = run.evidence(p)
    fit = ev.kept_scale.fitted(through_origin=run.contract.noise != "alpha")
    if fit is None:
        return None
    measured = float(fit[0])
    expected = run.contract.expected_scale(p)
    forms = ev.kept_scale.kept_forms or run.contract.kept_forms(p, ())
    nearest = min(forms, key=lambda f: abs(f.slope - measured))
    return measured, measured / expected - 1.0, nearest


def accepted_bias(run, p):
    """The kept-scale bias a correct implementation may carry at ``p`` (0 if none is measured).

    The measured bias, capped by the largest bias of an accepted rounded form: a scale rounded
    in a lower dtype is allowed, sampling noise in the fit never widens the allowance beyond it.
    """
    ev = run.evidence(p)
    got = kept_scale_bias(run, p) if ev.has_masks and not ev.broken and ev.kept_scale.checked else None
    if got is None or ev.kept_scale.violations:
        return 0.0
    cap = max((abs(f.bias) for f in ev.kept_scale.kept_forms), default=0.0)
    return min(abs(got[1]), cap)


def check_kept_scale(run, p):
    """Every kept unit equals the contract's kept value, exact or with its scale rounded.

    Accepted: ``x·s`` with ``s`` = ``1/keep_prob`` exact or rounded in the output dtype, the
    implementation's compute dtype or any lower-precision float dtype (ContractModel.kept_forms),
    each to one rounding into the output dtype (ContractModel.kept_tolerance). The scale bias
    ``s·keep_prob − 1`` this leaves is measured from all kept units and reported;
    check_mean judges whether the mean contract still holds.
    """
    name = "check_kept_scale"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if ev.kept_scale.checked == 0:
        return skipped(name, p, "no kept unit observed")
    expected = run.contract.expected_scale(p)
    got = kept_scale_bias(run, p)
    measured, bias, nearest = got if got is not None else (float(np.median(ev.kept_scale.ratios)), np.nan, None)
    tol = ulp_tol(run.x.dtype, 1) + ulp_tol(np.float64, EXACT_ULPS)  # see ContractModel.kept_tolerance
    scale = ev.kept_scale
    decision = exact_decision("kept-unit scale", measured, expected, scale.checked, scale.violations > 0, tol)
    decision = dataclasses.replace(
        decision, method="exact comparison with the contract's kept forms (one rounding of the output dtype)",
        details={**decision.details, "scale_bias": bias, "nearest_form": nearest.label if nearest else None,
                 "unobservable_units": ev.kept_scale.unobservable})
    unobs = (f" {ev.kept_scale.unobservable} unit(s) per call whose kept and dropped values coincide were not counted."
             if ev.kept_scale.unobservable and run.contract.noise == "alpha" else "")
    if ev.kept_scale.violations:
        x0, y0, e0 = ev.kept_scale.worst
        return failed(name, p,
                      f"kept units are scaled by {measured:.9g}, expected {expected:.9g} "
                      f"({'1/keep_prob' if run.contract.name == 'inverted' else 'the contract'}; "
                      f"bias {bias:+.3%}): {scale.violations} of {scale.checked} kept units differ from "
                      f"every accepted form (e.g. x = {x0!r} gave {y0!r}, expected {e0!r}). " + hint_for(run, p),
                      decision)
    form = f"; nearest accepted form: {nearest.label} = {nearest.slope:.9g}" if nearest else ""
    return passed(name, p, decision, message=f"kept-unit scale {measured:.9g}, expected {expected:.9g} "
                                             f"(bias {bias:+.4%}){form}.{unobs}")


def check_sharing_pattern(run, p):
    """Masks are constant along ``shared_axes`` (exactly), when the implementation shares them."""
    if not run.contract.shared_axes:
        return skipped("check_sharing_pattern", p, "no shared_axes declared (independence checks apply)")
    if (reason := unusable(run, "check_sharing_pattern", p, need_masks=True)):
        return skipped("check_sharing_pattern", p, reason)
    ev = run.evidence(p)
    if ev.masks.sharing_violations:
        return failed("check_sharing_pattern", p,
                       f"masks are not shared along shared_axes={run.contract.shared_axes!r}: "
                       f"{ev.masks.sharing_violations} units disagree with the mask at index 0 of those axes. "
                       "Draw one mask of shape with 1 on the shared axes and broadcast it.")
    return passed("check_sharing_pattern", p)


def check_keep_prob_one(run, p):
    """``train(x, 1.0)`` returns x unchanged (keep everything, rescale by 1)."""
    name = "check_keep_prob_one"
    if not run.impl.convention.takes_keep_prob:
        return skipped(name, p, "train does not take keep_prob")
    out, error = call_user(lambda: np.asarray(np.asarray(run.impl.bound_train(1.0)(run.x.copy())), dtype=np.float64))
    if error:
        return failed(name, p, f"train(x, keep_prob=1) raised {error}.")
    y = out
    x = run.x.astype(np.float64)
    # x·(1/1) is exact; EXACT_ULPS of the output dtype leave room for a cast through another dtype.
    if y.shape != x.shape or not np.allclose(y, x, rtol=ulp_tol(run.x.dtype, EXACT_ULPS), atol=0):
        return failed(name, p, "train(x, keep_prob=1) must return x unchanged (nothing dropped, "
                                "scale 1/1); it did not.")
    return passed(name, p)


def _call_invalid(run, bad):
    """``(output as float64 or None, error or None)`` of train at an invalid keep_prob."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a division by zero here is the finding, not a test error
        with np.errstate(all="ignore"):
            return call_user(lambda: np.asarray(np.asarray(run.impl.bound_train(bad)(run.x[:2].copy())),
                                                dtype=np.float64))


def check_invalid_keep_prob(run, p):
    """``train`` rejects keep_prob outside [0, 1]; at keep_prob = 0 it raises or returns zeros.

    keep_prob = 0 (a drop rate of 1) has two legitimate readings: reject it (keep_prob must be in
    (0, 1]) or drop everything (torch ``F.dropout(p=1)``, flax ``nnx.Dropout(1.0)``, keras
    ``rate=1`` return zeros by design). Both pass and the message says which; NaN, infinities,
    a wrong shape or any non-zero output at keep_prob = 0 fail. 1.5, −0.25 and NaN must raise.
    """
    name = "check_invalid_keep_prob"
    if not run.impl.convention.takes_keep_prob:
        return skipped(name, p, "train does not take keep_prob")
    if not run.impl.validates_keep_prob:
        return skipped(name, p, "the implementation declares that it does not validate keep_prob")
    accepted, notes = [], []
    for bad in INVALID_KEEP_PROBS:
        y, error = _call_invalid(run, bad)
        if bad == 0.0:
            if error:
                notes.append(f"keep_prob = 0 rejected ({error.split(' (at ')[0]})")
            elif y is not None and y.shape == run.x[:2].shape and np.all(y == 0):
                notes.append("keep_prob = 0 returns all zeros (drops every unit)")
            else:
                what = ("NaN or infinite values" if y is not None and y.shape == run.x[:2].shape
                        and not np.all(np.isfinite(y)) else "a non-zero output" if y is not None
                        and y.shape == run.x[:2].shape else f"an output of shape {getattr(y, 'shape', None)}")
                return failed(name, p, f"train at keep_prob = 0 (drop everything) returned {what} without "
                                       "raising: it must raise ValueError or return all zeros.")
            continue
        if error is None:
            accepted.append(bad)
    if accepted:
        return failed(name, p, f"train accepted keep_prob = {', '.join(map(repr, accepted))} without "
                                "raising; raise ValueError for keep_prob outside (0, 1].")
    return passed(name, p, message="; ".join(notes + ["1.5, -0.25 and nan rejected"]) + ".")


def check_backward_mask(run, p):
    """The gradient equals upstream × the forward's mask × the kept-unit scale."""
    name = "check_backward_mask"
    if run.impl.backward is None:
        return skipped(name, p, "no backward function given")
    if not run.contract.has_masks or run.contract.noise != "bernoulli":
        return skipped(name, p, "backward check implemented for Bernoulli masks only")
    rng = np.random.default_rng([run.seed, 99])
    x = run.x
    up = rng.standard_normal(x.shape).astype(x.dtype)
    scale = run.contract.expected_scale(p)
    tol = ulp_tol(x.dtype, EXACT_ULPS)  # upstream × scale in one or two roundings, with headroom
    def call():
        y, grad = run.impl.backward(x.copy(), up.copy(), p)
        return np.asarray(np.asarray(y), dtype=np.float64), np.asarray(np.asarray(grad), dtype=np.float64)

    for _ in range(3):
        out, error = call_user(call)
        if error:
            return failed(name, p, f"backward raised {error} (it must return (forward output, gradient) "
                                   "as arrays).")
        y, grad = out
        if grad.shape != x.shape or y.shape != x.shape:
            return failed(name, p, f"backward returned shapes {y.shape} and {grad.shape}; expected {x.shape}.")
        kept = y != 0
        expected = np.where(kept, up * scale, 0.0)
        bad = np.abs(grad - expected) > tol * np.abs(expected) + 1e-300
        if bad.any():
            unmasked = np.allclose(grad, up * scale, rtol=tol) or np.allclose(grad, up, rtol=tol)
            masked_unscaled = np.allclose(grad, np.where(kept, up, 0.0), rtol=tol)
            if unmasked:
                why = ("the gradient is not masked: backward ignores the forward's mask (was the "
                       "pre-dropout activation cached, or the mask not stored?)")
            elif masked_unscaled and scale != 1:
                why = "the gradient is masked but not divided by keep_prob"
            else:
                why = "the gradient does not use the same mask as the forward pass"
            return failed(name, p, f"{int(bad.sum())} of {x.size} gradient entries differ from "
                                    f"upstream × mask × {scale:.9g}: {why}.")
    return passed(name, p)


def rounding_rtol(run, p, power=1):
    """Dead band of a ratio statistic of degree ``power`` in the outputs (mean: 1, variance: 2).

    Each output carries a relative rounding error of at most half an ulp of its dtype; a ratio
    of sums of such terms is then off by at most ``power · eps/2`` when the terms share a sign,
    allowed: ``power`` ulps (``power · eps``) for mixed signs (alpha dropout's projections). A
    kept scale rounded in a low dtype (accepted by check_kept_scale, bias ``b``) moves the
    statistic by ``power · |b|``. Sums are in float64: ``MOMENT_ULPS`` ulps of float64. Nothing
    else is excused, so a real bias beyond the rounding still fails.
    """
    return power * (ulp_tol(run.x.dtype, 1) + accepted_bias(run, p)) + ulp_tol(np.float64, MOMENT_ULPS)
