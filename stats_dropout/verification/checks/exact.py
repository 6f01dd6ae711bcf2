"""Exact checks: properties that hold value by value, up to 8 ulp of floating-point rounding."""

from __future__ import annotations

import warnings

import numpy as np

from stats_dropout.verification.checks.common import (
    exact_decision,
    failed,
    hint_for,
    passed,
    skipped,
    unusable,
)

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
    """Neither train nor eval modifies its input in place."""
    ev = run.evidence(p)
    culprits = ["train"] if ev.mutated else []
    fn = run.impl.bound_eval(p)
    if fn is not None:
        xin = run.x.copy()
        try:
            fn(xin)
        except Exception:  # noqa: BLE001 — reported by check_eval_contract
            pass
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
    z1 = np.asarray(fn(run.x.copy()), dtype=np.float64)
    z2 = np.asarray(fn(run.x.copy()), dtype=np.float64)
    return z1, z2


def check_eval_deterministic(run, p):
    """Two eval calls on the same input return identical outputs."""
    if run.impl.eval is None:
        return skipped("check_eval_deterministic", p, "no eval path given")
    try:
        z1, z2 = _call_eval(run, p)
    except Exception as exc:  # noqa: BLE001
        return failed("check_eval_deterministic", p, f"eval raised {type(exc).__name__}: {exc}.")
    if z1.shape != z2.shape or not np.array_equal(z1, z2, equal_nan=True):
        return failed("check_eval_deterministic", p,
                       "eval returned different outputs for the same input: dropout must be off at "
                       "test time (no random mask in the eval path).")
    return passed("check_eval_deterministic", p)


def check_eval_contract(run, p):
    """The eval output equals the contract's: identity (inverted, gaussian, moments) or ``p·x``."""
    if run.impl.eval is None:
        return skipped("check_eval_contract", p, "no eval path given")
    try:
        z, _ = _call_eval(run, p)
    except Exception as exc:  # noqa: BLE001
        return failed("check_eval_contract", p, f"eval raised {type(exc).__name__}: {exc}.")
    x = run.x.astype(np.float64)
    expected = run.contract.eval_value(x, p)
    if z.shape != x.shape:
        return failed("check_eval_contract", p, f"eval returned shape {z.shape} for input shape {x.shape}.")
    z = z.astype(np.float64)
    tol = 8 * np.finfo(run.x.dtype).eps
    err = np.abs(z - expected)
    bad = err > tol * np.abs(expected) + np.finfo(np.float64).tiny
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
                       f"{ratio:.6g}). " + hint, decision)
    return passed("check_eval_contract", p, decision)


def check_kept_scale(run, p):
    """Every kept unit equals the contract's kept value (``x/p`` for inverted) exactly."""
    if (reason := unusable(run, "check_kept_scale", p, need_masks=True)):
        return skipped("check_kept_scale", p, reason)
    ev = run.evidence(p)
    if ev.scale_checked == 0:
        return skipped("check_kept_scale", p, "no kept unit observed")
    expected = run.contract.expected_scale(p)
    measured = float(np.median(ev.scale_ratios))
    decision = exact_decision("kept-unit scale", measured, expected, ev.scale_checked,
                               ev.scale_violations > 0, 8 * np.finfo(run.x.dtype).eps)
    if ev.scale_violations:
        x0, y0, e0 = ev.scale_worst
        return failed("check_kept_scale", p,
                       f"kept units are scaled by {measured:.6g}, expected {expected:.6g} "
                       f"({'1/keep_prob' if run.contract.name == 'inverted' else 'the contract'}): "
                       f"{ev.scale_violations} of {ev.scale_checked} kept units differ (e.g. x = {x0:.6g} "
                       f"gave {y0:.6g}, expected {e0:.6g}). " + hint_for(run, p), decision)
    return passed("check_kept_scale", p, decision)


def check_sharing_pattern(run, p):
    """Masks are constant along ``shared_axes`` (exactly), when the implementation shares them."""
    if not run.contract.shared_axes:
        return skipped("check_sharing_pattern", p, "no shared_axes declared (independence checks apply)")
    if (reason := unusable(run, "check_sharing_pattern", p, need_masks=True)):
        return skipped("check_sharing_pattern", p, reason)
    ev = run.evidence(p)
    if ev.sharing_violations:
        return failed("check_sharing_pattern", p,
                       f"masks are not shared along shared_axes={run.contract.shared_axes!r}: "
                       f"{ev.sharing_violations} units disagree with the mask at index 0 of those axes. "
                       "Draw one mask of shape with 1 on the shared axes and broadcast it.")
    return passed("check_sharing_pattern", p)


def check_keep_prob_one(run, p):
    """``train(x, 1.0)`` returns x unchanged (keep everything, rescale by 1)."""
    name = "check_keep_prob_one"
    if not run.impl.convention.takes_keep_prob:
        return skipped(name, p, "train does not take keep_prob")
    try:
        y = np.asarray(run.impl.bound_train(1.0)(run.x.copy()), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        return failed(name, p, f"train(x, keep_prob=1) raised {type(exc).__name__}: {exc}.")
    x = run.x.astype(np.float64)
    if y.shape != x.shape or not np.allclose(y, x, rtol=8 * np.finfo(run.x.dtype).eps, atol=0):
        return failed(name, p, "train(x, keep_prob=1) must return x unchanged (nothing dropped, "
                                "scale 1/1); it did not.")
    return passed(name, p)


def check_invalid_keep_prob(run, p):
    """``train(x, keep_prob)`` rejects keep_prob outside (0, 1] with an exception."""
    name = "check_invalid_keep_prob"
    if not run.impl.convention.takes_keep_prob:
        return skipped(name, p, "train does not take keep_prob")
    if not run.impl.validates_keep_prob:
        return skipped(name, p, "the implementation declares that it does not validate keep_prob")
    accepted = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a division by zero here is the finding, not a test error
        with np.errstate(all="ignore"):
            for bad in INVALID_KEEP_PROBS:
                try:
                    run.impl.bound_train(bad)(run.x[:2].copy())
                except Exception:  # noqa: BLE001 — any exception is a rejection
                    continue
                accepted.append(bad)
    if accepted:
        return failed(name, p, f"train accepted keep_prob = {', '.join(map(repr, accepted))} without "
                                "raising; raise ValueError for keep_prob outside (0, 1].")
    return passed(name, p)


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
    tol = 8 * np.finfo(x.dtype).eps
    for _ in range(3):
        try:
            y, grad = run.impl.backward(x.copy(), up.copy(), p)
            y = np.asarray(y, dtype=np.float64)
            grad = np.asarray(grad, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001
            return failed(name, p, f"backward raised {type(exc).__name__}: {exc} (it must return "
                                    "(forward output, gradient) as arrays).")
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
                                    f"upstream × mask × {scale:.6g}: {why}.")
    return passed(name, p)


