"""What the battery keeps of each train call: small accumulators, each with one ``update``.

:class:`~stats_dropout.verification.evidence.Collector` screens each output (shape, dtype,
finiteness, mutation) and hands the accepted ones to these, once per draw, so memory does not
grow with the number of draws:

=====================  ======================================================  ==============
accumulator            keeps                                                   read by
=====================  ======================================================  ==============
:class:`PooledRows`    per-draw pooled statistics (projection ratio, ...)      mean, variance
:class:`MaskCounts`    keep counts per mask entry, row and input group         keep rates
:class:`MaskPairs`     products of neighbouring / successive mask entries      independence
:class:`KeptScale`     kept values against the contract's kept forms, a fit    kept scale
:class:`NoiseSample`   ``y/x`` of Gaussian noise (first 200,000 values)        noise law
=====================  ======================================================  ==============

Per-element moments stream through the Monte-Carlo engine's own
:class:`~stats_dropout.inference.montecarlo.BlockMoments`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["PairSums", "PooledRows", "MaskCounts", "MaskPairs", "KeptScale", "NoiseSample", "mask_entries"]

#: Values of y/x kept for the Gaussian noise-distribution test.
NOISE_SAMPLE_SIZE = 200_000

#: Units per call whose median kept scale describes the scale (KeptScale.ratios).
RATIO_SAMPLE = 16_384


def _dot(a, b):
    """``Σ a·b`` of two 1-d float64 arrays by numpy's pairwise sum, not BLAS: BLAS wakes its
    thread pool for long vectors (tens of milliseconds a call on a loaded machine), and the
    pairwise sum is as accurate (einsum's running sum is not)."""
    return float(np.sum(a * b))


def mask_entries(kept, axes):
    """One value per mask entry: is any unit of the group kept (``kept`` is False where x = 0).

    A shared mask entry is seen wherever its group has a non-zero input — not only at index 0
    of the shared axes, which may be zero padding or a ReLU zero.
    """
    return np.any(kept, axis=axes, keepdims=True) if axes else kept


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


class PooledRows:
    """Per-draw pooled statistics at unit scale, one row per draw.

    Columns: the projection ratio ``Σ y μ / Σ μ²`` (check_mean), the squared-deviation ratio
    ``Σ (y − μ)² / Σ σ²`` (check_variance, Gaussian noise), the output mean and mean square
    (check_output_moments). ``μ, σ²`` are the contract's, of the probe at unit scale. Only the
    columns a check reads are computed (``columns``); the others are NaN.
    """

    COLUMNS = ("projection", "squared_deviation", "mean", "mean_square")

    def __init__(self, mu, var, columns=COLUMNS):
        self.mu = mu
        self._mu_sq = float(np.sum(mu**2))
        self._var_sum = float(np.sum(var))
        self._want = tuple(c in columns for c in self.COLUMNS)
        self._work = np.empty(np.shape(mu))  # products land here: no fresh array per draw
        self.rows = []

    def update(self, y_unit):
        n = max(y_unit.size, 1)
        projection, dev, mean, square = self._want
        work = self._work
        row = [np.nan] * 4
        # Each sum is np.sum of the products written into one scratch array: the pairwise
        # summation of a fresh product array, without allocating one per draw.
        if projection:
            np.multiply(y_unit, self.mu, out=work)
            row[0] = float(np.sum(work) / self._mu_sq) if self._mu_sq > 0 else np.nan
        if dev:
            np.subtract(y_unit, self.mu, out=work)
            np.square(work, out=work)
            dev2 = float(np.sum(work))
            row[1] = dev2 / self._var_sum if self._var_sum > 0 else dev2
        if mean:
            row[2] = float(np.sum(y_unit) / n)
        if square:
            np.square(y_unit, out=work)
            row[3] = float(np.sum(work) / n)
        self.rows.append(row)

    def statistics(self):
        """``(draws, 4)`` float64 array of the rows."""
        return np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), 4)


class MaskCounts:
    """Keep counts per mask entry, per row, per input group, and mask-sharing violations.

    Parameters
    ----------
    x : ndarray (float64)
        The probe, in its own units.
    observable : bool ndarray
        Units whose kept and dropped values differ (``ContractModel.observable``).
    axes : tuple of int
        The contract's shared axes (resolved).
    """

    def __init__(self, x, observable, axes):
        self.axes = axes
        self.observable = observable
        self.entries_obs = mask_entries(observable, axes)
        # int32 counts: at most one per draw, and half the memory traffic of int64 per update.
        self.entry_counts = np.zeros(self.entries_obs.shape, dtype=np.int32)
        self.draws = 0
        self._entries_per_draw = int(np.count_nonzero(self.entries_obs))
        # Observable mask entries per row: a row's kept count is Binomial(that number, p).
        self.row_sizes = (np.count_nonzero(self.entries_obs.reshape(self.entries_obs.shape[0], -1), axis=1)
                          if self.entries_obs.ndim else np.ones(1, dtype=np.int64))
        self.row_counts = []
        self.kept = 0
        self.sharing_violations = 0
        # Input groups: sign × magnitude (below / above the median |x|), for "independent of
        # the input" — an all-positive probe simply has no negative groups.
        mag = np.abs(x)
        big = mag > np.median(mag) if x.size else mag > 0
        labels, groups = [], np.full(x.shape, -1)
        for s_name, s_mask in (("x<0", x < 0), ("x>0", x > 0)):
            for m_name, m_mask in (("small |x|", ~big), ("large |x|", big)):
                sel = s_mask & m_mask & observable  # unobservable units are in no group
                if np.any(sel):
                    groups[sel] = len(labels)
                    labels.append(f"{s_name}, {m_name}")
        self.groups = groups.ravel() + 1  # bincount needs non-negative labels; 0 = unobservable
        self.group_labels = tuple(labels)
        self._group_sizes = np.bincount(self.groups, minlength=len(labels) + 1)[1:]

    # Trials are the same every draw (the observable entries): counted once, not per draw.
    @property
    def entry_trials(self):
        """Observable trials per mask entry: draws × (entry observable)."""
        return self.entries_obs.astype(np.int64) * self.draws

    @property
    def trials(self):
        return self._entries_per_draw * self.draws

    @property
    def group_trials(self):
        return self._group_sizes * self.draws

    @property
    def group_kept(self):
        """Kept units per input group, from the per-entry counts (unshared masks: one entry per
        unit); with shared axes a group's units share entries, and the groups are not used."""
        if self.axes:
            return np.zeros(len(self.group_labels), dtype=np.int64)
        return np.bincount(self.groups, weights=self.entry_counts.ravel(),
                           minlength=len(self.group_labels) + 1)[1:].astype(np.int64)

    def update(self, kept, entries):
        if self.axes:
            # Where the input is non-zero, every unit of a group must follow the group's mask.
            expected_pattern = np.broadcast_to(entries, kept.shape) & self.observable
            self.sharing_violations += int(np.count_nonzero(expected_pattern != kept))
        np.add(self.entry_counts, entries, out=self.entry_counts)
        self.draws += 1
        self.kept += int(np.count_nonzero(entries))
        if entries.ndim:
            # A sum of bytes is twice as fast as count_nonzero along an axis (same counts).
            rows = entries.reshape(entries.shape[0], -1).view(np.uint8)
            self.row_counts.append(np.add.reduce(rows, axis=1, dtype=np.int32).astype(np.int64))


class MaskPairs:
    """Products of neighbouring mask entries along each axis, and of successive calls' masks."""

    def __init__(self, entries_obs):
        self.entries_obs = entries_obs
        self.all_observable = bool(entries_obs.all())
        self.axis_pairs = {}
        self.call_pairs = PairSums()
        self.identical_consecutive = 0  # consecutive calls with identical masks
        self._previous = None
        self._slices = {}
        for axis in range(entries_obs.ndim):
            if entries_obs.shape[axis] >= 2:
                self.axis_pairs[axis] = PairSums()
                lo = [slice(None)] * entries_obs.ndim
                hi = [slice(None)] * entries_obs.ndim
                lo[axis], hi[axis] = slice(0, -1), slice(1, None)
                both = entries_obs[tuple(lo)] & entries_obs[tuple(hi)]
                self._slices[axis] = (tuple(lo), tuple(hi), None if both.all() else both)

    def update(self, entries):
        for axis, (lo, hi, both) in self._slices.items():
            a, b = entries[lo], entries[hi]
            if both is not None:
                a, b = a[both], b[both]
            self.axis_pairs[axis].add(a, b)
        previous = self._previous
        if previous is not None:
            a, b = (previous, entries) if self.all_observable else (
                previous[self.entries_obs], entries[self.entries_obs])
            self.call_pairs.add(a, b)
            if np.array_equal(previous, entries):
                self.identical_consecutive += 1
        self._previous = entries


class KeptScale:
    """Kept units against the contract's kept forms, and a least-squares fit of their scale.

    Each kept unit must equal one of the forms (exact, or its scale rounded in a lower dtype)
    to one rounding into the output dtype (``tolerance``). The fit ``y ≈ slope·x + offset`` of
    kept units (at unit scale, float64 sums) averages rounding out.
    """

    def __init__(self, contract, keep_prob, x, x_unit, forms, tolerance, observable, unit_counts=None):
        # Bernoulli: a dropped output is 0 within rounding, so the kept units' sums Σ y and
        # Σ x y are those of every observable unit, accumulated per unit in one pass a draw and
        # reduced once at the end (kept counts per unit likewise); alpha's dropped value is not
        # 0, so its sums are masked draw by draw.
        self.per_unit = contract.noise != "alpha"
        self._observable = observable
        self._y_sum = np.zeros(x.shape) if self.per_unit else None
        # Kept counts per unit: an unshared mask's entry counts are exactly that (MaskCounts);
        # otherwise counted here.
        self._unit_counts = unit_counts
        self._kept_count = (np.zeros(x.shape, dtype=np.int64) if self.per_unit and unit_counts is None
                            else None)
        self.contract = contract
        self.p = keep_prob
        self.x = x
        self.kept_forms = forms
        self.tolerance = tolerance
        self.form_values = [f.slope * x + f.offset for f in forms]
        self.kept_value = contract.kept_value(x, keep_prob)
        self._xflat = x_unit.reshape(-1)
        self._x2flat = self._xflat**2
        self.form_matches = np.zeros(len(forms), dtype=np.int64)
        self.fit_sums = np.zeros(5)  # n, Σx, Σx², Σy, Σxy
        self._fit_checked = -1  # per-unit sums: `checked` when fit_sums were last reduced
        self.checked = 0
        self.violations = 0
        self.worst = None  # (x, y, expected) of the first violation
        self.ratios = []   # median kept scale of the first five calls
        # Units whose kept scale is described: a fixed random sample, spread over every
        # position (a prefix or a stride would miss a bug confined to some rows or chunks).
        n = x.size
        self._ratio_units = (np.sort(np.random.default_rng(0).choice(n, RATIO_SAMPLE, replace=False))
                             if n > RATIO_SAMPLE else None)
        self.unobservable = int(observable.size - np.count_nonzero(observable))
        # Scratch arrays reused by every update: a fresh 2 MB array per pass costs more in page
        # faults than the arithmetic.
        self._diff = np.empty(x.shape)
        self._bad = np.empty(x.shape, dtype=bool)

    def update(self, y, y_unit, kept, exact=False):
        """Add one draw: ``y`` in its own units, ``y_unit`` at unit scale, ``kept`` its kept
        units; ``exact``: the caller found every kept unit exactly equal to a kept value that
        is within the first form's tolerance on every unit (Collector._kept_exactly), so there
        is nothing to test and every kept unit counts for the first form."""
        n_kept = int(np.count_nonzero(kept))
        if exact:
            bad, n_bad = None, 0
            self.form_matches[0] += n_kept
        else:
            bad = self._unmatched(y, kept, n_kept)
            n_bad = int(np.count_nonzero(bad))
        if self.per_unit:
            self._y_sum += y_unit
            if self._kept_count is not None:
                self._kept_count += kept
        else:
            kf = kept.reshape(-1).astype(np.float64)
            yk = y_unit.reshape(-1) * kf
            self.fit_sums += (kf.sum(), _dot(self._xflat, kf), _dot(self._x2flat, kf), yk.sum(),
                              _dot(self._xflat, yk))
        self.checked += n_kept
        self.violations += n_bad
        if n_bad and self.worst is None:
            i = int(np.flatnonzero(bad.ravel())[0])
            self.worst = (float(self.x.flat[i]), float(y.flat[i]), float(self.kept_value.flat[i]))
        if n_kept and len(self.ratios) < 5:
            self.ratios.append(self._median_scale(y, kept))

    def _unmatched(self, y, kept, n_kept):
        """Kept units that match none of the forms (a scratch bool array); counts the matches."""
        tol, bad, diff = self.tolerance, self._bad, self._diff
        # bad = kept & (|y − form₀| > tol), in whole-array passes: no fancy indexing
        np.subtract(y, self.form_values[0], out=diff)
        np.abs(diff, out=diff)
        np.greater(diff, tol, out=bad)
        np.logical_and(bad, kept, out=bad)
        self.form_matches[0] += n_kept - int(np.count_nonzero(bad))
        for i in range(1, len(self.form_values)):
            if not bad.any():  # usually every kept unit matches the exact form
                break
            idx = np.flatnonzero(bad)
            hit = np.abs(y.flat[idx] - self.form_values[i].flat[idx]) <= tol.flat[idx]
            self.form_matches[i] += int(np.count_nonzero(hit))
            bad.flat[idx[hit]] = False
        return bad

    def _median_scale(self, y, kept):
        """Median kept scale ``y/x`` of one call (the diagnosis's "scaled by ..."): over every
        kept unit of a small probe, else over the kept units of a fixed random sample of
        :data:`RATIO_SAMPLE` units. A description, not a test statistic: the sample's median
        is the whole call's to well within the digits the diagnosis prints."""
        units = self._ratio_units
        if units is None:
            return float(np.median(self.contract.scale_of(y[kept], self.x[kept], self.p)))
        sel = kept.reshape(-1)[units]
        if not sel.any():  # nothing kept in the sample: every kept unit
            return float(np.median(self.contract.scale_of(y[kept], self.x[kept], self.p)))
        idx = units[sel]
        return float(np.median(self.contract.scale_of(y.reshape(-1)[idx], self.x.reshape(-1)[idx], self.p)))

    def fitted(self, through_origin):
        """Least-squares ``(slope, offset)`` of kept outputs on inputs (None without kept units).

        Averages the rounding of millions of kept units: a scale rounded in a low-precision dtype
        (1/keep_prob in bfloat16) shows as its true value, to about ``eps/sqrt(n)``. The offset
        is at unit scale.
        """
        if self.per_unit and self._fit_checked != self.checked:  # once per collected evidence
            counts = self._kept_count if self._unit_counts is None else self._unit_counts.entry_counts
            c = counts.reshape(-1).astype(np.float64)
            ys = np.where(self._observable, self._y_sum, 0.0).reshape(-1)
            self.fit_sums = np.array([c.sum(), _dot(self._xflat, c), _dot(self._x2flat, c), ys.sum(),
                                      _dot(self._xflat, ys)])
            self._fit_checked = self.checked
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


class NoiseSample:
    """``y/x`` of the non-zero inputs, over the first draws, up to :data:`NOISE_SAMPLE_SIZE` values."""

    def __init__(self, x):
        self._nz = x != 0
        self._x = x[self._nz]
        self.parts = []
        self.size = 0

    def update(self, y):
        if self.size >= NOISE_SAMPLE_SIZE:
            return
        r = (y[self._nz] / self._x).ravel()
        self.parts.append(r)
        self.size += r.size

    @property
    def values(self):
        return np.concatenate(self.parts) if self.parts else None
