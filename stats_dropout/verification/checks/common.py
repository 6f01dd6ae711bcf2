"""Shared helpers of the check functions: result constructors, evidence guards, diagnosis glue.

A diagnosis is computed at most once per run and keep probability (cached on the run, weakly),
and only when asked for: :func:`from_decision` takes the hint as a callable (:func:`lazy_hint`)
and calls it only for a rejected decision, so a passing check never diagnoses — and never calls
the user's eval path for it.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from stats_dropout._internal.rng import seeded_global_rngs
from stats_dropout.inference.results import ExactComparison
from stats_dropout.inference.stats import decide_keep_rate
from stats_dropout.inference.verdicts import CheckResult
from stats_dropout.reference.schemes import resolve_shared_axes
from stats_dropout.verification.diagnosis import diagnose, identical_masks_cause
from stats_dropout.verification.evidence import call_user

#: run -> {keep_prob: diagnosis}; weak, so a finished run takes its diagnoses with it.
_DIAGNOSES = weakref.WeakKeyDictionary()
#: Calls of ``train`` made to measure which axes a mask is constant along (failures only).
SHARING_CALLS = 2
#: Largest chance of any identical pair of independent masks for repeats to be reported.
CHANCE_REPEATS = 1e-9


#: Why every statistical check skips on an all-zero probe (said once more in the run's warnings).
NOTHING_OBSERVABLE = ("nothing observable: every input is 0, where a kept and a dropped unit give the same "
                      "output; give an example_input with non-zero values")


def check_id(check, p):
    return f"{check}[keep_prob={p:g}]"


def passed(check, p, decision=None, message=""):
    return CheckResult(check_id(check, p), "passed", message, decision, p)


def skipped(check, p, reason):
    return CheckResult(check_id(check, p), "skipped", reason, None, p)


def failed(check, p, message, decision=None):
    return CheckResult(check_id(check, p), "failed", message, decision, p)


def from_decision(check, p, decision, hint=""):
    """A passed or failed result from a decision; ``hint`` (a str or a callable returning one)
    is evaluated only when the decision rejects."""
    if not decision.rejected:
        return passed(check, p, decision)
    if callable(hint):
        hint = hint()
    # Holm decisions report the worst element with its simultaneous interval (level 1 − α/m).
    # Each of m intervals is built at 1 − α/m; the reported (worst) one keeps the simultaneous
    # coverage 1 − α, which is what is stated (a selected interval's own level would overstate it).
    ci_alpha = decision.details.get("ci_alpha", decision.false_fail_rate)
    level = (f"simultaneous CI at confidence 1 − {decision.false_fail_rate:.2g}, each of its "
             f"{decision.details.get('n_elements', decision.details.get('n_groups', 'm'))} at 1 − {ci_alpha:.2g}"
             if ci_alpha < decision.false_fail_rate else f"CI at confidence 1 − {ci_alpha:.2g}")
    # Nine significant digits: enough to show a difference in the last bits of a float32 scale.
    msg = (f"{decision.property}: estimate {decision.estimate:.9g} ({level}: "
           f"[{decision.ci_low:.9g}, {decision.ci_high:.9g}]) "
           f"differs from {decision.expected:.9g} "
           f"(p = {decision.pvalue:.3g}; false-fail rate {decision.false_fail_rate:.2g}; smallest "
           f"detectable {decision.effect_units} error {decision.min_detectable_effect:.3g} at "
           f"false-pass rate {decision.false_pass_rate:.2g}).")
    return failed(check, p, msg + (" " + hint if hint else ""), decision)


def exact_decision(prop, estimate, expected, n, rejected, mde=0.0):
    """An :class:`~stats_dropout.inference.results.ExactComparison` (no sampling error: a tolerance,
    ``mde``, instead of an interval and error rates)."""
    return ExactComparison(property=prop, method="exact comparison (8 ulp tolerance)", estimate=float(estimate),
                           expected=float(expected), tolerance=float(mde), n=int(n), rejected=bool(rejected))


def unusable(run, check, p, need_masks=False, need_variation=False):
    """A skip reason when the evidence cannot support ``check``, else None.

    ``need_variation``: the check compares masks with each other, which says nothing when
    every unit was kept (or every unit dropped) — check_keep_rate reports that.
    """
    if run.observable_units == 0:
        return NOTHING_OBSERVABLE
    ev = run.evidence(p)
    if ev.broken:
        return f"not run: {ev.broken} (see check_output_shape_dtype / check_finite_output)"
    if need_masks and not run.contract.has_masks:
        return f"not applicable: the {run.contract.name!r} contract has no keep/drop mask"
    if need_variation and ev.masks.trials and ev.masks.kept in (0, ev.masks.trials):
        which = "kept" if ev.masks.kept else "dropped"
        return f"not run: every unit was {which} in every call (see check_keep_rate)"
    return None


# --- evidence read for a diagnosis ---------------------------------------------------------
def is_jitted(fn, depth=3):
    """True if ``fn``, or a function it wraps or closes over (adapters wrap the user's function in a
    closure), is ``jax.jit``-compiled; read without importing jax."""
    seen, frontier = set(), [fn]
    for _ in range(depth + 1):
        following = []
        for f in frontier:
            if f is None or id(f) in seen:
                continue
            seen.add(id(f))
            try:  # any object may sit in a closure; its attribute lookup may raise anything
                if all(hasattr(f, a) for a in ("lower", "trace", "eval_shape")):
                    return True
                following.append(f.func if isinstance(f, functools.partial) else getattr(f, "__wrapped__", None))
                cells = getattr(f, "__closure__", None) or ()
            except Exception:  # noqa: BLE001 — not a jitted function, then
                continue
            for cell in cells:
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if callable(content):
                    following.append(content)
        frontier = following[:64]
    return False


def _is_16_bit(dtype):
    try:
        return dtype is not None and np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize == 2
    except TypeError:
        return False


def identical_calls_of(run, p):
    """Every one of (at least 3) successive calls drew the same mask, with both values present."""
    ev = run.evidence(p)
    return (ev.has_masks and ev.draws > 2 and ev.pairs.identical_consecutive == ev.draws - 1
            and 0 < ev.masks.kept < ev.masks.trials and p < 1)


def repeated_calls_of(run, p):
    """Pairs of successive calls with identical masks, when some but not all were (else 0).

    Counted only where chance cannot explain one: at the measured keep rate ``r`` two
    independent masks of ``m`` observable entries coincide with probability ``(r² + (1 − r)²)^m``,
    which over the run's pairs must stay below :data:`CHANCE_REPEATS`; and only when the masks
    show no sharing of their own (entries tied along an axis make far fewer independent entries).
    """
    ev = run.evidence(p)
    if not ev.has_masks or identical_calls_of(run, p) or not ev.pairs.identical_consecutive or not (
            0 < ev.masks.kept < ev.masks.trials):
        return 0
    if _sharing_suspect(run, ev):
        return 0
    m = int(np.count_nonzero(ev.masks.entry_trials))
    r = ev.masks.kept / ev.masks.trials
    chance = max(ev.draws - 1, 1) * np.exp(m * np.log(r * r + (1 - r) ** 2))
    return int(ev.pairs.identical_consecutive) if chance < CHANCE_REPEATS else 0


def identical_masks_message(run, p):
    """The cause of identical masks across calls, named by ``run.impl.rng_source`` (one sentence)."""
    return identical_masks_cause(getattr(run.impl, "rng_source", None), is_jitted(run.impl.train),
                                 run.evidence(p).draws)


def _constant_axes(kept, observable):
    """Axes along which ``kept`` is constant over every line (unobservable units ignored)."""
    out = []
    for a in range(kept.ndim):
        if kept.shape[a] < 2:
            continue
        lo = np.any(kept & observable, axis=a)
        hi = np.all(kept | ~observable, axis=a)
        if np.array_equal(lo, hi):
            out.append(a)
    return set(out)


def measured_sharing(run, p):
    """Axes along which the masks of :data:`SHARING_CALLS` fresh train calls were all constant.

    None when no call was informative (an exception, a wrong shape, everything kept or dropped).
    The calls run under the battery's seed, and the caller's global RNG state is restored.
    """
    x, c = run.x, run.contract
    x64 = x.astype(np.float64)
    dropped = c.dropped_value(x64, p)
    tol = c.dropped_tolerance(x64, p, x.dtype)  # the dtype's own dead band (bfloat16 included)
    observable = c.observable(x64, p, x.dtype)
    shared = None
    fn = run.impl.bound_train(p)
    with seeded_global_rngs(run.seed, run.impl.reseed):
        for _ in range(SHARING_CALLS):
            y, error = call_user(fn, x.copy())
            if error is not None:  # reported by check_output_shape_dtype
                return shared
            y = np.asarray(y, dtype=np.float64)
            if y.shape != x.shape:
                return shared
            kept = np.abs(y - dropped) > tol
            n_kept = np.count_nonzero(kept & observable)
            if n_kept in (0, np.count_nonzero(observable)):
                continue
            axes = _constant_axes(kept, observable)
            shared = axes if shared is None else shared & axes
    return shared


def _sharing_suspect(run, ev):
    """The evidence says the mask is shared otherwise than declared: worth measuring."""
    if ev.masks.sharing_violations:
        return True
    for sums in ev.pairs.axis_pairs.values():
        if sums.n and 0 < sums.sa < sums.n and sums.sa == sums.sb == sums.sab:
            return True  # neighbouring mask entries identical along this axis in every pair
    return False


def eval_profile(run, p):
    """``(ratio, dropped)`` of one eval call: eval/input where constant over units (else None),
    and the fraction of non-zero inputs eval set to zero (None without eval)."""
    fn = run.impl.bound_eval(p)
    if fn is None:
        return None, None
    z, error = call_user(fn, run.x.copy())
    if error is not None:  # reported by check_eval_contract
        return None, None
    z = np.asarray(z, dtype=np.float64)
    if z.shape != run.x.shape:
        return None, None
    x = run.x.astype(np.float64)
    nz = x != 0
    if not np.any(nz):
        return None, None
    ratios = z[nz] / x[nz]
    dropped = float(np.mean(ratios == 0))
    med = float(np.median(ratios))
    constant = ratios.size and np.ptp(ratios) < 1e-6 * max(abs(med), 1)
    return (med if constant else None), (dropped if 0 < dropped < 1 else None)


def _diagnosis(run, p):
    ev = run.evidence(p)
    rate = rate_ci = scale = None
    if not ev.broken and ev.has_masks and ev.masks.trials:
        d = decide_keep_rate(ev.masks.kept, ev.masks.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta)
        rate, rate_ci = d.estimate, (d.ci_low, d.ci_high)
    if ev.kept_scale is not None and ev.kept_scale.ratios:
        scale = float(np.median(ev.kept_scale.ratios))
    sharing = None
    try:  # the optional measurements below call user code once more; a failure only loses them
        if not ev.broken and ev.has_masks and run.x.ndim and _sharing_suspect(run, ev):
            measured = measured_sharing(run, p)
            if measured is not None:
                declared = resolve_shared_axes(run.contract.shared_axes, run.x.ndim, "contract")
                sharing = (run.x.ndim, tuple(a % run.x.ndim for a in declared), tuple(sorted(measured)))
    except Exception:  # noqa: BLE001 — a diagnosis is a bonus; the failures stand
        sharing = None
    try:
        eval_ratio, eval_dropped = eval_profile(run, p)
    except Exception:  # noqa: BLE001
        eval_ratio = eval_dropped = None
    impl = run.impl
    return diagnose(keep_prob=p, contract=run.contract.name, rate=rate, rate_ci=rate_ci, scale=scale,
                    only_zero_one=ev.only_zero_one and ev.draws > 0 and not np.all(np.isin(run.x, (0, 1))),
                    identical_calls=identical_calls_of(run, p), eval_ratio=eval_ratio,
                    rng_source=getattr(impl, "rng_source", None), jitted=is_jitted(impl.train),
                    calls=ev.draws, repeated_calls=repeated_calls_of(run, p),
                    low_precision=_is_16_bit(getattr(impl, "compute_dtype", None)) or _is_16_bit(run.x.dtype),
                    sharing=sharing, eval_dropped=eval_dropped)


def diagnosis_of(run, p):
    """The diagnosis at ``p`` (a tuple of sentences), computed once per run and keep_prob."""
    try:
        cache = _DIAGNOSES.setdefault(run, {})
    except TypeError:  # a run that cannot be weakly referenced: no cache
        return _diagnosis(run, p)
    if p not in cache:
        cache[p] = _diagnosis(run, p)
    return cache[p]


def hint_for(run, p, prefix="", fallback=""):
    """``prefix`` + "Likely cause: ..." from :func:`diagnosis_of`, or ``prefix + fallback``."""
    found = diagnosis_of(run, p)
    if not found:
        return (prefix + fallback).strip()
    text = "Likely cause: " + "; ".join(found)
    return (prefix + (text if text.endswith(("?", ".")) else text + ".")).strip()


def lazy_hint(run, p, prefix="", fallback=""):
    """:func:`hint_for` as a zero-argument callable, for :func:`from_decision` (failures only)."""
    return functools.partial(hint_for, run, p, prefix, fallback)
