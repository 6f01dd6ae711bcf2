"""Evidence for the battery: call an implementation ``draws`` times and stream what it did.

One pass over the draws feeds every check: each call's output is screened here (an exception,
a wrong shape or dtype, NaN, a mutated or aliased input) and the accepted ones go to the
accumulators of :mod:`stats_dropout.verification.accumulators` (keep counts, mask pairs, kept
values, pooled statistics) and to the Monte-Carlo engine's
:class:`~stats_dropout.inference.montecarlo.BlockMoments`, so memory does not grow with the
number of draws and the implementation is called once per draw for all checks. A broken
implementation ends the pass early with the reason recorded; it never crashes the battery.
"""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np

from stats_dropout._internal.numerics import ulp_tol
from stats_dropout._internal.rng import seeded_global_rngs
from stats_dropout._internal.validation import is_real_float_dtype
from stats_dropout.inference.montecarlo import BlockMoments, RunningMoments
from stats_dropout.reference.contracts import lower_float_dtypes
from stats_dropout.reference.schemes import resolve_shared_axes
from stats_dropout.verification.accumulators import (
    KeptScale,
    MaskCounts,
    MaskPairs,
    NoiseSample,
    PooledRows,
    mask_entries,
)


def describe_exception(exc):
    """``"Type: message (at file:line)"`` for an exception raised by user code.

    The location is the innermost frame of the traceback (where the user's code raised).
    """
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def call_user(fn, *args):
    """``(result, None)`` or ``(None, description)``: user code never escapes the battery.

    Any exception becomes a description, ``SystemExit`` (``sys.exit()`` in user code) and other
    ``BaseException`` subclasses included; ``KeyboardInterrupt`` is re-raised so that Ctrl-C
    still stops the battery.
    """
    try:
        return fn(*args), None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — a user failure is a failed check, never a crash
        return None, describe_exception(exc)


@dataclasses.dataclass
class Evidence:
    """What an implementation did over ``draws`` train passes at one ``keep_prob``.

    The screening of the calls is kept here; what the accepted outputs showed is in the
    accumulators (:mod:`stats_dropout.verification.accumulators`): ``rows`` always,
    ``moments`` always (per-element, at unit scale), ``masks``, ``pairs`` and ``kept_scale``
    under keep/drop contracts, ``noise`` under the Gaussian one (else None).
    """

    keep_prob: float
    x: np.ndarray
    draws_requested: int
    draws: int = 0
    error: str | None = None           # exception raised by train (with its type)
    shape_error: str | None = None
    dtype_error: str | None = None
    nonfinite: int = 0                 # non-finite outputs on the first offending draw
    mutated: bool = False              # train wrote into its input
    aliased_calls: int = 0             # calls whose output shares memory with their input
    elapsed_calls: int = 0
    only_zero_one: bool = True         # every output value is 0 or 1
    rows: PooledRows | None = None
    moments: RunningMoments | None = None
    masks: MaskCounts | None = None
    pairs: MaskPairs | None = None
    kept_scale: KeptScale | None = None
    noise: NoiseSample | None = None

    @property
    def has_masks(self):
        return self.masks is not None

    @property
    def broken(self):
        """Reason the statistical checks cannot use this evidence, or None."""
        if self.error:
            return f"train raised {self.error}"
        if self.shape_error:
            return self.shape_error
        if self.nonfinite:
            return f"train returned {self.nonfinite} NaN or infinite value(s) for a finite input"
        if self.draws < 2:
            return "fewer than 2 successful train passes"
        return None

    def statistics(self):
        """The pooled per-draw statistics (:class:`~stats_dropout.verification.accumulators.PooledRows`)."""
        return self.rows.statistics()


class Collector:
    """Streams evidence for one implementation at one keep_prob (see module docstring).

    Parameters
    ----------
    call : callable
        ``x -> y`` (keep_prob already bound).
    x : ndarray
        Probe; never passed to ``call`` itself (a fresh copy each draw).
    keep_prob : float
    contract : ContractModel
        Expected values: ``mean(x)``, ``var(x)``, kept/dropped values, shared axes.
    reseed : callable, optional
        ``Implementation.reseed``: seeds the implementation's own RNG with the pass's seed.
    compute_dtype : dtype, optional
        ``Implementation.compute_dtype``: kept units may carry a scale rounded in it (as in the
        output dtype and any lower-precision float dtype; ContractModel.kept_forms).
    unit_exponent : int, default 0
        Statistics (the per-draw pooled rows, per-element moments, the kept-unit fit) are taken
        of ``y · 2^-unit_exponent`` and the contract's moments of ``x · 2^-unit_exponent``: exact
        rescalings to unit magnitude, so their squares neither underflow nor overflow
        (:func:`~stats_dropout._internal.numerics.unit_exponent`). Masks and kept values are
        read in the output's own units, where its rounding happened.
    """

    def __init__(self, call, x, keep_prob, contract, reseed=None, compute_dtype=None, unit_exponent=0):
        self.call = call
        self.reseed = reseed
        self.x = x
        self.p = keep_prob
        self.c = contract
        self.x64 = x.astype(np.float64)
        self.k = int(unit_exponent)
        self.x_unit = np.ldexp(self.x64, -self.k) if self.k else self.x64
        self.axes = resolve_shared_axes(contract.shared_axes, x.ndim, "contract") if x.ndim else ()
        # Kept values: exact or with the scale rounded in the output dtype, the compute dtype or
        # any lower-precision float dtype; then one rounding into the output dtype (the contract
        # derives the tolerances, ContractModel.kept_tolerance / dropped_tolerance).
        self.scale_dtypes = lower_float_dtypes(x.dtype, compute_dtype)
        self.forms = contract.kept_forms(keep_prob, self.scale_dtypes)
        # The dtype whose last rounding an output carries: the output dtype, or a declared compute
        # dtype of lower precision (a bfloat16 layer whose outputs travel in a float32 carrier:
        # its values were rounded to bfloat16 before they were widened).
        self.rounding_dtype = x.dtype
        if compute_dtype is not None and is_real_float_dtype(compute_dtype) and (
                ulp_tol(compute_dtype, 1) > ulp_tol(x.dtype, 1)):
            self.rounding_dtype = compute_dtype
        # A unit is observable where its kept and dropped values differ beyond rounding: x ≠ 0
        # for Bernoulli masks, x away from α' for alpha dropout.
        self.observable = contract.observable(self.x64, keep_prob, self.rounding_dtype, self.forms)
        self.all_observable = bool(self.observable.all())
        # Per collection (collect): the exact shortcut's candidates, and each draw's output in
        # the dtype its exact comparisons read (_screen sets it, _kept_units reads it).
        self._exact_pending, self._exact_tried, self._native = None, [], None
        if contract.has_masks:
            self.dropped = contract.dropped_value(self.x64, keep_prob)
            self.zero_dropped = not np.any(self.dropped)
            self.kept_tol = contract.dropped_tolerance(self.x64, keep_prob, self.rounding_dtype)

    def _scratch(self):
        """Arrays every draw writes into instead of allocating: the mutation test's, ``|y|``,
        and two keep patterns used in turn (MaskPairs compares a draw's with the previous one)."""
        shape = self.x.shape
        self._same = np.empty(shape, dtype=bool)
        self._magnitude = np.empty(shape)
        self._kept = (np.empty(shape, dtype=bool), np.empty(shape, dtype=bool))
        self._either = np.empty(shape, dtype=bool)  # "0 or the kept value" (_kept_exactly)
        # A float32 (or other) output in float64. Under keep/drop contracts every accumulator
        # reads it within the draw; BlockMoments (the other contracts) keeps its draws.
        self._widened = np.empty(shape) if self.c.has_masks else None

    def _exact_outputs(self, kept_scale):
        """The kept values :meth:`_kept_exactly` compares outputs with, as an iterator of
        ``(value, kept_if_equal)`` qualified one at a time as they are needed: every kept form
        and (inverted) every quotient ``x / p`` with ``p`` rounded in a dtype, each rounded to
        (and held in) the probe's dtype, in the order layers most often produce them. A value
        qualifies only if it is finite there and the tolerance tests would count it as the
        first form on every observable unit. Only for a zero dropped value."""
        values = list(kept_scale.form_values)
        if self.c.name == "inverted":  # layers divide: x / keep_prob, keep_prob rounded or not
            values[1:1] = [self.x64 / self.p] + [self.x64 / float(np.asarray(self.p, dtype=d))
                                                 for d in self.scale_dtypes]
        first, tol = kept_scale.form_values[0], kept_scale.tolerance
        native = is_real_float_dtype(self.x.dtype)
        for value in values:
            # A form whose scale rounds above 1/p may overflow in a narrow dtype where the
            # layer's own output does not: such a candidate is no candidate, and no warning.
            with np.errstate(over="ignore", invalid="ignore"):
                rounded = value.astype(self.x.dtype) if native else value
            value64 = rounded.astype(np.float64)
            if not np.isfinite(value64).all():
                continue
            # The float64 arithmetic the tolerance tests do on an output equal to `value64`.
            if not np.any((np.abs(value64 - first) > tol) & self.observable):
                yield rounded, (np.abs(value64) > self.kept_tol) & self.observable

    def _kept_exactly(self, y, kept):
        """True, with ``kept`` filled, when every output is exactly 0 or exactly one qualifying
        kept value on every unit (:meth:`_exact_outputs`); False (``kept`` undefined) otherwise.

        Exact equality implies what the tolerance tests would find (0 is within the dropped
        band; the value within the first form's kept band, checked once for every unit), so a
        correct layer is judged in two comparisons instead of six passes. The value that
        matched is tried first next time, others are built only when it misses; a draw that
        matches none turns the shortcut off for the rest of the collection.
        """
        tried = self._exact_tried
        for i, candidate in enumerate(tried):
            if self._zero_or_equal(y, candidate, kept):
                tried.insert(0, tried.pop(i))
                return True
        for candidate in self._exact_pending:
            tried.append(candidate)
            if self._zero_or_equal(y, candidate, kept):
                tried.insert(0, tried.pop())
                return True
        self._exact_pending = None
        return False

    def _zero_or_equal(self, y, candidate, kept):
        """Is every output 0 or its unit's ``value``? ``kept`` is then filled.

        ``y`` is the output in its own dtype when that is the probe's (widening is exact, so
        equality there is equality in float64, at a fraction of the bytes), else in float64.
        """
        value, kept_if_equal = candidate
        either = self._either
        np.equal(y, value, out=kept)
        np.equal(y, 0, out=either)
        np.logical_or(either, kept, out=either)
        if not either.all():
            return False
        np.logical_and(kept, kept_if_equal, out=kept)
        return True

    def _kept_units(self, y64, draw):
        """Units whose output is not the dropped value (beyond rounding), observable ones only,
        and whether every kept unit equals its kept value exactly (then the kept-scale test
        has nothing left to find)."""
        kept = self._kept[draw % 2]
        if self._exact_pending is not None and self._kept_exactly(self._native, kept):
            return kept, True
        magnitude = self._magnitude
        if self.zero_dropped:  # Bernoulli: |y − 0| needs no subtraction
            np.abs(y64, out=magnitude)
        else:
            np.subtract(y64, self.dropped, out=magnitude)
            np.abs(magnitude, out=magnitude)
        np.greater(magnitude, self.kept_tol, out=kept)
        if not self.all_observable:
            np.logical_and(kept, self.observable, out=kept)
        return kept, False

    def _accumulators(self, draws):
        c, p, x = self.c, self.p, self.x64
        # The pooled columns the checks read: check_mean's projection always, the variance
        # ratio under Gaussian noise (check_variance), the output moments under alpha dropout.
        columns = ("projection",) + (("squared_deviation",) if c.noise == "gaussian" else ()) + (
            ("mean", "mean_square") if c.name == "moments" else ())
        ev = Evidence(keep_prob=p, x=self.x, draws_requested=draws,
                      rows=PooledRows(c.mean(self.x_unit, p), c.var(self.x_unit, p), columns))
        if c.has_masks:
            ev.masks = MaskCounts(x, self.observable, self.axes)
            ev.pairs = MaskPairs(ev.masks.entries_obs)
            tol = c.kept_tolerance(x, p, self.rounding_dtype, self.forms) + np.finfo(np.float64).tiny
            ev.kept_scale = KeptScale(c, p, x, self.x_unit, self.forms, tol, self.observable,
                                      unit_counts=None if self.axes else ev.masks)
        elif c.noise == "gaussian":
            ev.noise = NoiseSample(x)
        return ev

    def _screen(self, ev, xin, raw):
        """The output as float64 if it is usable, else None with the reason recorded in ``ev``."""
        # The probe is finite (validated), so a plain comparison suffices: a NaN written into
        # the copy differs from the probe; equal_nan would cost two isnan passes.
        if not np.equal(xin, self.x, out=self._same).all():
            ev.mutated = True
        y, error = call_user(np.asarray, raw)
        if error:  # e.g. a ragged list, or an __array__ that raises
            ev.shape_error = f"train returned {type(raw).__name__} that is not an array ({error})"
            return None
        if isinstance(y, np.ndarray) and np.shares_memory(y, xin):
            ev.aliased_calls += 1
        if y.shape != self.x.shape:
            ev.shape_error = f"train returned shape {y.shape} for an input of shape {self.x.shape}"
            return None
        if y.dtype != self.x.dtype and ev.dtype_error is None:
            ev.dtype_error = f"train returned dtype {y.dtype} for an input of dtype {self.x.dtype}"
        if not (np.issubdtype(y.dtype, np.number) or is_real_float_dtype(y.dtype)) or np.issubdtype(
                y.dtype, np.complexfloating):
            ev.shape_error = f"train returned a non-real array of dtype {y.dtype}"
            return None
        # A sum with an inf or NaN term is inf or NaN in any order (IEEE 754), so a finite sum
        # proves every value finite in one reduction (of the output's own bytes); only an inf
        # or NaN sum (or an overflow) needs the element-wise test.
        with np.errstate(over="ignore", invalid="ignore"):  # inf − inf is the NaN we look for
            total = np.sum(y) if y.dtype == self.x.dtype else np.nan
        if y.dtype == np.float64 or self._widened is None:
            y64 = np.asarray(y, dtype=np.float64)  # no copy of a float64 output: it is only read
        else:  # widened into the draw's scratch array
            y64 = self._widened
            np.copyto(y64, y, casting="unsafe")
        # The output as the exact comparisons read it (_kept_exactly): its own dtype if the probe's.
        self._native = y if y.dtype == self.x.dtype else y64
        if not np.isfinite(total):
            finite = np.isfinite(y64)
            if not finite.all():
                ev.nonfinite = int(y64.size - np.count_nonzero(finite))
                return None
        return y64

    def collect(self, draws, seed):
        """Call the implementation ``draws`` times (under ``seed``) and return the :class:`Evidence`."""
        ev = self._accumulators(draws)
        # Per-element moments are read only without a keep/drop mask (check_mean_per_unit's z
        # test); with one, a unit's mean is its keep count (MaskCounts).
        moments = None if self.c.has_masks else BlockMoments(self.x.size)
        self._scratch()
        shortcut = ev.kept_scale is not None and self.zero_dropped
        self._exact_pending = self._exact_outputs(ev.kept_scale) if shortcut else None
        self._exact_tried = []
        with seeded_global_rngs(seed, self.reseed):
            for _ in range(draws):
                xin = self.x.copy()
                raw, error = call_user(self.call, xin)
                if error:
                    ev.error = error
                    break
                ev.elapsed_calls += 1
                y64 = self._screen(ev, xin, raw)
                if y64 is None:
                    break
                ev.draws += 1
                y_unit = np.ldexp(y64, -self.k) if self.k else y64
                ev.rows.update(y_unit)
                if moments is not None:
                    moments.update(y_unit)
                if ev.only_zero_one and not np.all((y64 == 0) | (y64 == 1)):
                    ev.only_zero_one = False
                if ev.masks is not None:
                    kept, exact = self._kept_units(y64, ev.draws)
                    entries = mask_entries(kept, self.axes)
                    ev.masks.update(kept, entries)
                    ev.pairs.update(entries)
                    ev.kept_scale.update(y64, y_unit, kept, exact=exact)
                elif ev.noise is not None:
                    ev.noise.update(y64)
        ev.moments = None if moments is None else moments.result()
        return ev
