"""Evidence for the battery: call an implementation ``draws`` times and stream what it did.

One pass over the draws records everything every check needs — keep counts per mask entry,
per row and per input group, pairwise mask products along each axis and across calls,
kept-unit scale errors, per-draw pooled statistics and per-element moments — so memory does not
grow with the number of draws and the implementation is called once per draw for all checks.
A broken implementation (an exception, a wrong shape, NaN, a mutated input) ends the pass
early with the reason recorded; it never crashes the battery.
"""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np

from stats_dropout._internal.numerics import ulp_tol
from stats_dropout._internal.rng import seeded_global_rngs
from stats_dropout._internal.validation import is_real_float_dtype
from stats_dropout.inference.montecarlo import RunningMoments
from stats_dropout.reference.contracts import lower_float_dtypes
from stats_dropout.reference.schemes import resolve_shared_axes


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
class PairSums:
    """Sums for the correlation of mask entries ``(a, b)`` over many pairs."""

    n: int = 0
    sa: float = 0.0
    sb: float = 0.0
    sab: float = 0.0

    def add(self, a, b):
        self.n += a.size
        self.sa += np.count_nonzero(a)
        self.sb += np.count_nonzero(b)
        self.sab += np.count_nonzero(a & b)

    def correlation(self):
        """Sample (phi) correlation of the pairs; ``z = r √n`` is N(0, 1) under independence."""
        if self.n == 0:
            return np.nan
        ma, mb = self.sa / self.n, self.sb / self.n
        va, vb = ma * (1 - ma), mb * (1 - mb)
        if va == 0 or vb == 0:
            return np.nan
        return (self.sab / self.n - ma * mb) / np.sqrt(va * vb)


@dataclasses.dataclass
class Evidence:
    """What an implementation did over ``draws`` train passes at one ``keep_prob``."""

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
    # per-draw pooled statistics at unit scale (Collector._statistic_row), rows: draws, columns:
    # projection ratio, squared-deviation ratio, output mean, output mean square
    stats: list = dataclasses.field(default_factory=list)
    moments: RunningMoments | None = None  # per-element moments of the output
    # mask evidence (Bernoulli-type contracts)
    has_masks: bool = False
    entry_counts: np.ndarray | None = None  # kept count per mask entry
    entry_trials: np.ndarray | None = None  # observable trials per mask entry
    row_counts: list = dataclasses.field(default_factory=list)
    row_sizes: np.ndarray | None = None  # observable mask entries per row
    kept: int = 0
    trials: int = 0
    group_kept: np.ndarray | None = None    # by input group (sign × magnitude)
    group_trials: np.ndarray | None = None
    group_labels: tuple = ()
    axis_pairs: dict = dataclasses.field(default_factory=dict)  # axis -> PairSums
    call_pairs: PairSums = dataclasses.field(default_factory=PairSums)
    identical_consecutive: int = 0     # consecutive calls with identical masks
    sharing_violations: int = 0
    scale_checked: int = 0
    scale_violations: int = 0
    scale_worst: tuple | None = None   # (x, y, expected)
    # kept units: sums for the least-squares fit y ≈ slope·x + offset (float64), and how many
    # units matched each accepted kept form (ContractModel.kept_forms) first
    kept_forms: tuple = ()
    form_matches: np.ndarray | None = None
    fit_sums: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(5))  # n, Σx, Σx², Σy, Σxy
    unobservable: int = 0              # units whose kept and dropped values coincide (per call)
    scale_ratios: list = dataclasses.field(default_factory=list)
    only_zero_one: bool = True         # every output value is 0 or 1
    noise_sample: np.ndarray | None = None  # y / x for Gaussian noise (first draws)

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
        return np.asarray(self.stats, dtype=np.float64).reshape(len(self.stats), -1)

    def fitted_kept(self, through_origin):
        """Least-squares ``(slope, offset)`` of kept outputs on inputs (None without kept units).

        Averages the rounding of millions of kept units: a scale rounded in a low-precision dtype
        (1/keep_prob in bfloat16) shows as its true value, to about ``eps/sqrt(n)``.
        """
        n, sx, sxx, sy, sxy = self.fit_sums
        if n == 0 or sxx == 0:
            return None
        if through_origin:
            return sxy / sxx, 0.0
        var = sxx - sx * sx / n
        if var <= 0:
            return None
        slope = (sxy - sx * sy / n) / var
        return slope, (sy - slope * sx) / n


def _mask_entries(kept, axes):
    """One value per mask entry: is any unit of the group kept (``kept`` is False where x = 0).

    A shared mask entry is seen wherever its group has a non-zero input — not only at index 0
    of the shared axes, which may be zero padding or a ReLU zero.
    """
    return np.any(kept, axis=axes, keepdims=True) if axes else kept


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
        self.mu = contract.mean(self.x_unit, keep_prob)
        self.var = contract.var(self.x_unit, keep_prob)
        self.axes = resolve_shared_axes(contract.shared_axes, x.ndim, "contract") if x.ndim else ()
        mu = self.mu
        self._mu_sq = float(np.sum(mu**2))
        self._var_sum = float(np.sum(self.var))
        # Kept values: exact or with the scale rounded in the output dtype, the compute dtype or
        # any lower-precision float dtype; then one rounding into the output dtype (the contract
        # derives the tolerances, ContractModel.kept_tolerance / dropped_tolerance).
        self.forms = contract.kept_forms(keep_prob, lower_float_dtypes(x.dtype, compute_dtype))
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

    def _statistic_row(self, y):
        n = max(y.size, 1)
        row = [
            float(np.sum(y * self.mu) / self._mu_sq) if self._mu_sq > 0 else np.nan,
            float(np.sum((y - self.mu) ** 2) / self._var_sum) if self._var_sum > 0 else float(
                np.sum((y - self.mu) ** 2)),
            float(np.sum(y) / n),
            float(np.sum(y**2) / n),
        ]
        return row

    def collect(self, draws, seed):
        ev = Evidence(keep_prob=self.p, x=self.x, draws_requested=draws)
        ev.has_masks = self.c.has_masks
        if ev.has_masks:
            self._init_masks(ev)
        previous = None
        block = []
        with seeded_global_rngs(seed, self.reseed):
            for _ in range(draws):
                xin = self.x.copy()
                y, error = call_user(self.call, xin)
                if error:
                    ev.error = error
                    break
                ev.elapsed_calls += 1
                # The probe is finite (validated), so a plain comparison suffices: a NaN written
                # into the copy differs from the probe; equal_nan would cost two isnan passes.
                if not np.array_equal(xin, self.x):
                    ev.mutated = True
                raw = y
                y, error = call_user(np.asarray, raw)
                if error:  # e.g. a ragged list, or an __array__ that raises
                    ev.shape_error = f"train returned {type(raw).__name__} that is not an array ({error})"
                    break
                if isinstance(y, np.ndarray) and np.shares_memory(y, xin):
                    ev.aliased_calls += 1
                if y.shape != self.x.shape:
                    ev.shape_error = f"train returned shape {y.shape} for an input of shape {self.x.shape}"
                    break
                if y.dtype != self.x.dtype and ev.dtype_error is None:
                    ev.dtype_error = f"train returned dtype {y.dtype} for an input of dtype {self.x.dtype}"
                if not (np.issubdtype(y.dtype, np.number) or is_real_float_dtype(y.dtype)) or np.issubdtype(
                        y.dtype, np.complexfloating):
                    ev.shape_error = f"train returned a non-real array of dtype {y.dtype}"
                    break
                y64 = y.astype(np.float64)
                finite = np.isfinite(y64)
                if not finite.all():
                    ev.nonfinite = int(y64.size - np.count_nonzero(finite))
                    break
                ev.draws += 1
                y_unit = np.ldexp(y64, -self.k) if self.k else y64
                ev.stats.append(self._statistic_row(y_unit))
                block.append(y_unit)
                if len(block) * max(y64.size, 1) >= 1 << 20:
                    self._merge_moments(ev, block)
                    block = []
                if ev.only_zero_one and not np.all((y64 == 0) | (y64 == 1)):
                    ev.only_zero_one = False
                if ev.has_masks:
                    previous = self._masks(ev, y64, y_unit, previous)
                elif self.c.noise == "gaussian":
                    self._noise(ev, y64)
        if block:
            self._merge_moments(ev, block)
        return ev

    def _merge_moments(self, ev, block):
        part = RunningMoments.from_samples(np.stack(block))
        ev.moments = part if ev.moments is None else ev.moments.merge(part)

    # --- masks ----------------------------------------------------------------------------
    def _init_masks(self, ev):
        x = self.x64
        dtype = self.rounding_dtype
        self.dropped = self.c.dropped_value(x, self.p)
        self.kept_value = self.c.kept_value(x, self.p)
        self.kept_tol = self.c.dropped_tolerance(x, self.p, dtype)
        self.scale_tol = self.c.kept_tolerance(x, self.p, dtype, self.forms) + np.finfo(np.float64).tiny
        self.form_values = [f.slope * x + f.offset for f in self.forms]
        self._xflat = self.x_unit.reshape(-1)
        self._x2flat = self._xflat**2
        ev.kept_forms = self.forms
        ev.form_matches = np.zeros(len(self.forms), dtype=np.int64)
        ev.unobservable = int(self.observable.size - np.count_nonzero(self.observable))
        self.all_observable = bool(self.observable.all())
        self.entries_obs = _mask_entries(self.observable, self.axes)
        ev.entry_counts = np.zeros(self.entries_obs.shape, dtype=np.int64)
        ev.entry_trials = np.zeros(self.entries_obs.shape, dtype=np.int64)
        # Observable mask entries per row: a row's kept count is Binomial(that number, p).
        ev.row_sizes = (np.count_nonzero(self.entries_obs.reshape(self.entries_obs.shape[0], -1), axis=1)
                        if self.entries_obs.ndim else np.ones(1, dtype=np.int64))
        # Input groups: sign × magnitude (below / above the median |x|), for "independent of
        # the input" — an all-positive probe simply has no negative groups.
        mag = np.abs(x)
        big = mag > np.median(mag) if x.size else mag > 0
        labels, groups = [], np.full(x.shape, -1)
        for s_name, s_mask in (("x<0", x < 0), ("x>0", x > 0)):
            for m_name, m_mask in (("small |x|", ~big), ("large |x|", big)):
                sel = s_mask & m_mask & self.observable  # unobservable units are in no group
                if np.any(sel):
                    groups[sel] = len(labels)
                    labels.append(f"{s_name}, {m_name}")
        self.groups = groups.ravel() + 1  # bincount needs non-negative labels; 0 = unobservable
        ev.group_labels = tuple(labels)
        ev.group_kept = np.zeros(len(labels), dtype=np.int64)
        self.group_sizes = np.bincount(self.groups, minlength=len(labels) + 1)[1:]
        ev.group_trials = np.zeros(len(labels), dtype=np.int64)
        self.pair_slices = {}
        for axis in range(self.entries_obs.ndim):
            if self.entries_obs.shape[axis] >= 2:
                ev.axis_pairs[axis] = PairSums()
                lo = [slice(None)] * self.entries_obs.ndim
                hi = [slice(None)] * self.entries_obs.ndim
                lo[axis], hi[axis] = slice(0, -1), slice(1, None)
                both = self.entries_obs[tuple(lo)] & self.entries_obs[tuple(hi)]
                self.pair_slices[axis] = (tuple(lo), tuple(hi), None if both.all() else both)

    def _masks(self, ev, y, y_unit, previous):
        kept = np.abs(y - self.dropped) > self.kept_tol
        if not self.all_observable:
            kept &= self.observable
        entries = _mask_entries(kept, self.axes)
        if self.axes:
            # Where the input is non-zero, every unit of a group must follow the group's mask.
            expected_pattern = np.broadcast_to(entries, kept.shape) & self.observable
            ev.sharing_violations += int(np.count_nonzero(expected_pattern != kept))
        ev.entry_counts += entries
        ev.entry_trials += self.entries_obs
        ev.kept += int(np.count_nonzero(entries))
        ev.trials += int(np.count_nonzero(self.entries_obs))
        if entries.ndim:
            ev.row_counts.append(np.count_nonzero(entries.reshape(entries.shape[0], -1), axis=1))
        ev.group_kept += np.bincount(self.groups, weights=kept.ravel(),
                                     minlength=len(ev.group_labels) + 1)[1:].astype(np.int64)
        ev.group_trials += self.group_sizes
        for axis, (lo, hi, both) in self.pair_slices.items():
            a, b = entries[lo], entries[hi]
            if both is not None:
                a, b = a[both], b[both]
            ev.axis_pairs[axis].add(a, b)
        if previous is not None:
            a, b = (previous, entries) if self.all_observable else (
                previous[self.entries_obs], entries[self.entries_obs])
            ev.call_pairs.add(a, b)
            if np.array_equal(previous, entries):
                ev.identical_consecutive += 1
        # Kept-unit scale: each kept unit must equal one of the contract's kept forms (exact, or
        # its scale rounded in a lower dtype), to one rounding into the output dtype.
        tol = self.scale_tol
        bad = kept & (np.abs(y - self.form_values[0]) > tol)  # whole-array passes: no fancy indexing
        ev.form_matches[0] += int(np.count_nonzero(kept)) - int(np.count_nonzero(bad))
        for i in range(1, len(self.form_values)):
            if not bad.any():  # usually every kept unit matches the exact form
                break
            idx = np.flatnonzero(bad)
            hit = np.abs(y.flat[idx] - self.form_values[i].flat[idx]) <= tol.flat[idx]
            ev.form_matches[i] += int(np.count_nonzero(hit))
            bad.flat[idx[hit]] = False
        kf = kept.reshape(-1).astype(np.float64)
        yk = y_unit.reshape(-1) * kf
        # einsum, not BLAS dot: no thread pool to wake per draw (it dominated the pass under load)
        ev.fit_sums += (kf.sum(), np.einsum("i,i->", self._xflat, kf), np.einsum("i,i->", self._x2flat, kf),
                        yk.sum(), np.einsum("i,i->", self._xflat, yk))
        n_kept = int(np.count_nonzero(kept))
        n_bad = int(np.count_nonzero(bad))
        ev.scale_checked += n_kept
        ev.scale_violations += n_bad
        if n_bad and ev.scale_worst is None:
            i = int(np.flatnonzero(bad.ravel())[0])
            ev.scale_worst = (float(self.x64.flat[i]), float(y.flat[i]), float(self.kept_value.flat[i]))
        if n_kept and len(ev.scale_ratios) < 5:
            ev.scale_ratios.append(float(np.median(self.c.scale_of(y[kept], self.x64[kept], self.p))))
        return entries

    def _noise(self, ev, y):
        if ev.noise_sample is not None and ev.noise_sample.size >= 200_000:
            return
        nz = self.x64 != 0
        r = (y[nz] / self.x64[nz]).ravel()
        ev.noise_sample = r if ev.noise_sample is None else np.concatenate([ev.noise_sample, r])
