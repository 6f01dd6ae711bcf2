"""Reference dropout schemes: one ``DropoutScheme`` type, a registry, exact masks.

A scheme is noise (``bernoulli``, ``gaussian``, ``alpha``) × ``shared_axes`` (axes along which
one mask is broadcast) × rescaling side (``train``: inverted dropout divides kept units by
``keep_prob`` at train; ``eval``: Srivastava's original dropout multiplies by ``keep_prob`` at
eval). Every scheme has a contract (``mean``: ``E[train(x)] = eval(x)`` for every x;
``moments``: output mean and variance preserved for ``x ~ N(0, 1)``) and closed-form mean and
variance of its train output (:mod:`stats_dropout.reference.theory`).

Bernoulli masks come from integer thresholds (:mod:`stats_dropout.reference.masks`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from stats_dropout._internal.validation import (
    choice_iv,
    float_array_iv,
    keep_prob_iv,
    positive_int_iv,
    rng_iv,
)
from stats_dropout.reference import masks as mask_ops
from stats_dropout.reference import theory
from stats_dropout.reference.masks import (
    apply_mask,
    bernoulli_mask,
    keep_threshold,
    kernel_applies,
    masked_full,
    masked_full_fused,
)

__all__ = ["DropoutScheme", "BoundScheme", "SCHEMES", "get_scheme", "scheme_name_iv", "keep_threshold",
           "bernoulli_mask"]

Noise = Literal["bernoulli", "gaussian", "alpha"]
Rescale = Literal["train", "eval"]

#: Symbolic ``shared_axes``: all axes from 2 on (channel dropout) or from 1 on (one mask per
#: sample, drop-path). Integers name axes directly (0 is the batch).
SPATIAL = "spatial"
NON_BATCH = "non_batch"

def resolve_shared_axes(spec, ndim, scheme_name):
    """Turn a ``shared_axes`` spec into a tuple of non-negative axes of an ``ndim`` array."""
    if spec == SPATIAL:
        need = 2
        axes = tuple(range(2, ndim))
    elif spec == NON_BATCH:
        need = 1
        axes = tuple(range(1, ndim))
    else:
        axes = tuple(a % ndim if ndim else a for a in spec)
        need = max((a + 1 if a >= 0 else -a for a in spec), default=0)
    if ndim < need:
        raise ValueError(
            f"`x` must have at least {need} dimension(s) for scheme {scheme_name!r} "
            f"(shared_axes={spec!r}); got {ndim}"
        )
    return axes


@dataclasses.dataclass(frozen=True)
class DropoutScheme:
    """A reference dropout scheme.

    Parameters
    ----------
    name : str
        Registry name.
    noise : {"bernoulli", "gaussian", "alpha"}
        Multiplicative Bernoulli mask, multiplicative ``N(1, (1−p)/p)`` noise, or alpha
        dropout's affine saturation.
    shared_axes : tuple of int or {"spatial", "non_batch"}
        Axes along which one mask is broadcast. ``()`` draws one mask entry per element.
    rescale : {"train", "eval"}
        Where the ``keep_prob`` correction lives (Bernoulli only): ``train`` divides kept
        units by ``keep_prob`` (inverted dropout); ``eval`` multiplies the eval output by
        ``keep_prob`` (Srivastava et al. 2014, weight scaling).
    contract : {"mean", "moments"}
        What the scheme promises (see module docstring).
    reference : str
        Where the scheme is defined.
    """

    name: str
    noise: Noise = "bernoulli"
    shared_axes: tuple | str = ()
    rescale: Rescale = "train"
    contract: Literal["mean", "moments"] = "mean"
    reference: str = ""
    description: str = ""

    # --- the two paths -------------------------------------------------------------------
    def train(self, x, keep_prob, rng=None):
        """One stochastic train-time forward pass; ``x`` is never modified.

        Parameters
        ----------
        x : array_like of float16, float32 or float64
            Input; axis 0 is the batch (see DESIGN.md's axis convention).
        keep_prob : float in (0, 1]
        rng : numpy.random.Generator or seed, optional

        Returns
        -------
        numpy.ndarray
            Same shape and dtype as ``x``.
        """
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        return self._sample(x, keep_prob, rng, n_draws=None)

    def eval(self, x, keep_prob):
        """The deterministic inference path: identity, or ``keep_prob · x`` for ``rescale='eval'``."""
        x = float_array_iv(x)
        keep_prob = keep_prob_iv(keep_prob)
        if self.noise == "bernoulli" and self.rescale == "eval":
            return (x.astype(np.float64) * keep_prob).astype(x.dtype)
        return x.copy()

    def sample_train(self, x, keep_prob, n_draws, rng=None):
        """``n_draws`` independent train passes stacked on a new leading axis.

        Equivalent in law to ``np.stack([train(x) for _ in range(n_draws)])`` but vectorised;
        used by :func:`stats_dropout.estimate_train_moments`.
        """
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        n_draws = positive_int_iv(n_draws, "n_draws")
        return self._sample(x, keep_prob, rng, n_draws=n_draws)

    def sample_train_chunks(self, x, keep_prob, n_draws, rng=None):
        """The draws of :meth:`sample_train` in consecutive pieces of rows: ``(rows, block)`` pairs.

        The same random numbers in the same order, hence the same values:
        ``np.concatenate([b.copy() for _, b in sample_train_chunks(x, p, n, rng)])`` equals
        ``sample_train(x, p, n, rng)`` from the same generator state, bit for bit, and leaves
        the generator in the same state. Pieces are
        about the mask engine's chunk (1 MiB of float64), so a per-draw statistic reads each one
        while it is still in cache instead of streaming a whole block from memory; shared masks
        are drawn for all ``n_draws`` first, exactly as :meth:`sample_train` draws them.

        Returns
        -------
        iterator of (slice, numpy.ndarray)
            ``(rows, block)``: ``rows``, the draws of ``block`` along the leading axis of
            :meth:`sample_train`'s result; ``block``, ``(rows.stop - rows.start, *x.shape)`` of
            ``x``'s dtype. For Bernoulli noise it is one buffer that the next piece overwrites:
            read (or copy) it before asking for the next. Arguments are checked on the call.
        """
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        n_draws = positive_int_iv(n_draws, "n_draws")
        return self._sample_chunks(x, keep_prob, rng, n_draws)

    def bind(self, keep_prob, rng=None):
        """Return a :class:`BoundScheme`: ``train(x)`` and ``eval(x)`` at a fixed ``keep_prob``."""
        return BoundScheme(self, keep_prob_iv(keep_prob), rng_iv(rng))

    # --- theory --------------------------------------------------------------------------
    def train_mean(self, x, keep_prob):
        """Closed-form ``E[train(x)]`` per element (THEORY.md §1, §5)."""
        return self._moment_function("mean")(x, keep_prob)

    def train_var(self, x, keep_prob):
        """Closed-form ``Var[train(x)]`` per element (THEORY.md §1, §5).

        Sharing a mask along axes changes covariances between elements, not these.
        """
        return self._moment_function("var")(x, keep_prob)

    def noise_loadings(self, x, keep_prob):
        """Write the train output as ``y = c + s · ξ`` with ξ the (possibly shared) noise.

        Returns ``(s, v, kappa)``: per-element loadings ``s``, the noise variance
        ``v = Var ξ`` and ``kappa = Var (ξ − Eξ)²``. Inverted Bernoulli: ``s = x/p``,
        ``v = p(1−p)``, ``kappa = p(1−p)(1−2p)²``; standard: ``s = x``; Gaussian: ``s = x``,
        ``v = (1−p)/p``, ``kappa = 2v²``; alpha: ``s = a(x − α')`` [derived]. These give exact
        variances of linear statistics (:meth:`linear_statistic_var`), hence computed
        sample sizes.
        """
        x = np.asarray(x, dtype=np.float64)
        p = keep_prob
        if self.noise == "gaussian":
            v = (1.0 - p) / p
            return x, v, 2.0 * v**2
        v, kappa = p * (1.0 - p), p * (1.0 - p) * (1.0 - 2.0 * p) ** 2
        if self.noise == "alpha":
            a, _ = theory.alpha_affine(p)
            return a * (x - theory.ALPHA_PRIME), v, kappa
        return (x / p if self.rescale == "train" else x), v, kappa

    def linear_statistic_var(self, weights, x, keep_prob):
        """Exact ``Var Σ_i w_i y_i`` of one train pass: ``v Σ_g (Σ_{i∈g} w_i s_i)²`` over mask groups g."""
        s, v, _ = self.noise_loadings(x, keep_prob)
        group_sums = self._group_sums(np.asarray(weights, dtype=np.float64) * s)
        return float(v * np.sum(group_sums**2))

    def projection_ratio_sd(self, expected, x, keep_prob):
        """Exact sd of one train pass's projection ratio ``r = Σ y_i e_i / Σ e_i²``.

        ``r`` is the linear statistic with weights ``e / Σ e²`` (:meth:`linear_statistic_var`);
        its mean is 1 exactly when ``E y = e``. Every pooled mean decision of the package (the
        battery's ``check_mean``, :func:`~stats_dropout.verify_scheme`, the report's bias) sizes
        its draws with this sd.
        """
        e = np.asarray(expected, dtype=np.float64)
        return math.sqrt(self.linear_statistic_var(e / np.sum(e**2), x, keep_prob))

    def squared_deviation_sd(self, var, x, keep_prob):
        """Exact sd of one pass's squared-deviation ratio ``Σ (y − μ)² / Σ σ²`` (``var`` = σ²)."""
        return math.sqrt(self.squared_deviation_var(np.full(np.shape(x), 1 / np.sum(var)), x, keep_prob))

    def squared_deviation_var(self, weights, x, keep_prob):
        """Exact ``Var Σ_i w_i (y_i − E y_i)²``: ``kappa Σ_g (Σ_{i∈g} w_i s_i²)²`` [derived]."""
        s, _, kappa = self.noise_loadings(x, keep_prob)
        group_sums = self._group_sums(np.asarray(weights, dtype=np.float64) * s**2)
        return float(kappa * np.sum(group_sums**2))

    def _group_sums(self, values):
        axes = resolve_shared_axes(self.shared_axes, values.ndim, self.name)
        return np.sum(values, axis=axes) if axes else values

    def mask_shape(self, shape):
        """Shape of one mask for an input of ``shape``: shared axes have length 1."""
        axes = resolve_shared_axes(self.shared_axes, len(shape), self.name)
        return tuple(1 if i in axes else n for i, n in enumerate(shape))

    # --- internals -----------------------------------------------------------------------
    def _moment_function(self, which):
        if self.noise == "alpha":
            return getattr(theory, f"alpha_{which}")
        if self.noise == "gaussian":
            return getattr(theory, f"gaussian_{which}")
        kind = "inverted" if self.rescale == "train" else "standard"
        return getattr(theory, f"{kind}_{which}")

    def _train_iv(self, x, keep_prob, rng):
        x = float_array_iv(x, allow_nonfinite=True)
        keep_prob = keep_prob_iv(keep_prob)
        shape = self.mask_shape(x.shape)  # raises a clear error if x has too few dimensions
        kernel = self.noise == "bernoulli" and keep_prob < 1 and shape == x.shape and kernel_applies(x)
        if not kernel:  # the C kernel checks finiteness in its own pass (see masked_full)
            float_array_iv(x)
        return x, keep_prob, rng_iv(rng)

    def _sample(self, x, keep_prob, rng, n_draws):
        lead = () if n_draws is None else (n_draws,)
        if keep_prob == 1.0:
            return np.broadcast_to(x, lead + x.shape).copy()
        mask_shape = lead + self.mask_shape(x.shape)
        if self.noise == "gaussian":
            noise = rng.standard_normal(mask_shape)
            noise *= theory.gaussian_std(keep_prob)
            noise += 1.0
            out = x.astype(np.float64, copy=False) * noise
        elif self.noise == "alpha":
            keep = bernoulli_mask(rng, mask_shape, keep_prob)
            a, b = theory.alpha_affine(keep_prob)
            out = np.where(keep, a * x.astype(np.float64, copy=False) + b, a * theory.ALPHA_PRIME + b)
        else:
            divisor = keep_prob if self.rescale == "train" else 1.0
            if mask_shape == lead + x.shape:
                # One mask entry per element: fused, chunked, exact (see masked_full).
                return masked_full(x, keep_prob, rng, n_draws, divisor)
            keep = bernoulli_mask(rng, mask_shape, keep_prob)
            out = np.empty(lead + x.shape, dtype=x.dtype)
            with np.errstate(invalid="ignore"):  # see masked_full
                apply_mask(out, x, keep, divisor)  # broadcasts the shared mask
            return out
        return out.astype(x.dtype, copy=False)

    def _sample_chunks(self, x, keep_prob, rng, n_draws):
        """Generator behind :meth:`sample_train_chunks` (arguments validated)."""
        # Rows per piece: the row count of masks._chunks, so the unshared kernel, called piece by
        # piece, cuts (and draws) the very chunks it cuts for the whole block.
        per = max(1, mask_ops.CHUNK // max(x.size, 1))
        pieces = [slice(start, min(n_draws, start + per)) for start in range(0, n_draws, per)]
        mask_shape = (n_draws,) + self.mask_shape(x.shape)
        if keep_prob == 1.0:
            full = self._sample(x, keep_prob, rng, n_draws)  # no randomness: nothing to gain
            for rows in pieces:
                yield rows, full[rows]
            return
        if self.noise == "gaussian":
            # Consecutive standard_normal calls continue one stream: piece by piece, the same
            # numbers, and _sample's operations in its order on each (the same bits).
            std = theory.gaussian_std(keep_prob)
            x64 = x.astype(np.float64, copy=False)
            for rows in pieces:
                noise = rng.standard_normal((rows.stop - rows.start,) + x.shape)
                noise *= std
                noise += 1.0
                np.multiply(x64, noise, out=noise)
                yield rows, noise.astype(x.dtype, copy=False)
            return
        if self.noise == "alpha":
            keep = bernoulli_mask(rng, mask_shape, keep_prob)  # the whole block's masks, as _sample
            a, b = theory.alpha_affine(keep_prob)
            kept, dropped = a * x.astype(np.float64, copy=False) + b, a * theory.ALPHA_PRIME + b
            for rows in pieces:
                yield rows, np.where(keep[rows], kept, dropped).astype(x.dtype, copy=False)
            return
        divisor = keep_prob if self.rescale == "train" else 1.0
        buffer = np.empty((min(per, n_draws),) + x.shape, dtype=x.dtype)  # in cache, reused
        if mask_shape == (n_draws,) + x.shape:
            # Unshared: the fused kernel on one chunk at a time (one thread, no start-up cost),
            # the same chunks in the same order, hence the same stream as the whole block.
            kernel = kernel_applies(x) and isinstance(rng.bit_generator, mask_ops.KERNEL_BIT_GENERATORS)
            x1 = x.reshape(x.size)
            for rows in pieces:
                k = rows.stop - rows.start
                if not kernel:
                    yield rows, masked_full(x, keep_prob, rng, k, divisor)
                    continue
                out = buffer[:k]
                if not masked_full_fused(x1, out.reshape(k, x.size), keep_prob, rng, divisor):
                    float_array_iv(x)  # raises the usual "`x` must be finite" error
                yield rows, out
            return
        # Shared masks: the whole block's masks first, exactly as _sample draws them; then
        # ``q · keep`` (see _kept_values) one piece at a time, or apply_mask where q overflows.
        keep = bernoulli_mask(rng, mask_shape, keep_prob)
        kept = self._kept_values(x, keep_prob)
        fast = kept is not None
        keep_values = keep.astype(x.dtype) if fast else keep
        for rows in pieces:
            out = buffer[:rows.stop - rows.start]
            if fast:
                np.multiply(kept, keep_values[rows], out=out)
            else:
                with np.errstate(invalid="ignore"):
                    apply_mask(out, x, keep[rows], divisor)
            yield rows, out

    def _kept_values(self, x, keep_prob):
        """What a kept unit of a Bernoulli train pass is: ``fl(x / keep_prob)`` (``x`` for
        ``rescale='eval'``) in ``x``'s dtype, apply_mask's rounding; None where that overflows.

        A dropped unit is ±0 with the sign of ``x``, so ``q · m`` with the mask ``m`` as 0/1
        floats is the train output bit for bit (``0 · inf`` would be nan: hence None).
        """
        if self.rescale != "train":
            return x
        with np.errstate(over="ignore"):  # the caller then takes apply_mask's path, which warns
            kept = np.divide(x, keep_prob, dtype=np.float64).astype(x.dtype)
        return kept if np.all(np.isfinite(kept)) else None

    def shared_mask_draws(self, x, keep_prob, n_draws, rng=None):
        """The masks behind :meth:`sample_train` for a Bernoulli scheme with shared masks.

        Returns ``(keep, kept)``: ``keep``, boolean ``(n_draws, *mask_shape(x.shape))``, the very
        masks :meth:`sample_train` draws from the same generator state (it consumes the same
        random numbers); ``kept``, the value of a kept unit (``x / keep_prob`` rounded to ``x``'s
        dtype, or ``x`` for ``rescale='eval'``), so that ``sample_train(x, p, n, rng)`` equals
        ``kept * keep`` bit for bit (dropped units are ±0). ``None`` when that product does not
        describe the draws: other noise, unshared masks, ``keep_prob == 1``, or an ``x / keep_prob``
        that overflows — and then ``rng`` is left untouched.
        """
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        n_draws = positive_int_iv(n_draws, "n_draws")
        mask_shape = self.mask_shape(x.shape)
        if self.noise != "bernoulli" or keep_prob == 1.0 or mask_shape == x.shape:
            return None
        kept = self._kept_values(x, keep_prob)
        if kept is None:
            return None
        return bernoulli_mask(rng, (n_draws,) + mask_shape, keep_prob), kept


@dataclasses.dataclass(frozen=True)
class BoundScheme:
    """A scheme at a fixed ``keep_prob`` with its own Generator: callables ``x -> y``."""

    scheme: DropoutScheme
    keep_prob: float
    rng: np.random.Generator = dataclasses.field(repr=False, compare=False)

    def __call__(self, x):
        return self.scheme.train(x, self.keep_prob, self.rng)

    train = __call__

    def eval(self, x):
        return self.scheme.eval(x, self.keep_prob)

    def sample_train(self, x, n_draws, rng=None):
        """Vectorised draws (see :meth:`DropoutScheme.sample_train`); ``rng`` overrides the bound one."""
        return self.scheme.sample_train(x, self.keep_prob, n_draws, self.rng if rng is None else rng)

    def sample_train_chunks(self, x, n_draws, rng=None):
        """:meth:`sample_train` in pieces of rows (see :meth:`DropoutScheme.sample_train_chunks`)."""
        return self.scheme.sample_train_chunks(x, self.keep_prob, n_draws, self.rng if rng is None else rng)

    def shared_mask_draws(self, x, n_draws, rng=None):
        """Masks of :meth:`sample_train` (see :meth:`DropoutScheme.shared_mask_draws`)."""
        return self.scheme.shared_mask_draws(x, self.keep_prob, n_draws, self.rng if rng is None else rng)


_SRIVASTAVA = "Srivastava et al. 2014, JMLR 15"

SCHEMES: dict[str, DropoutScheme] = {
    s.name: s
    for s in (
        DropoutScheme("inverted", reference=_SRIVASTAVA + " §10; every modern framework",
                      description="kept units x/p at train, identity at eval"),
        DropoutScheme("standard", rescale="eval", reference=_SRIVASTAVA + " §4",
                      description="kept units x at train, p·x at eval (weight scaling)"),
        DropoutScheme("batch_shared", shared_axes=(0,),
                      reference="THEORY.md §1 (one mask for the whole batch)",
                      description="inverted, one mask shared by all samples of a batch"),
        DropoutScheme("channel", shared_axes=SPATIAL, reference="Tompson et al. 2015",
                      description="inverted, one mask per (sample, channel), shared over space"),
        DropoutScheme("time_locked", shared_axes=(1,), reference="Gal & Ghahramani 2016",
                      description="inverted, one mask per sequence, repeated at every time step"),
        DropoutScheme("drop_path", shared_axes=NON_BATCH, reference="Huang et al. 2016",
                      description="inverted, one mask per sample for a whole residual branch"),
        DropoutScheme("gaussian", noise="gaussian", reference=_SRIVASTAVA + " §10",
                      description="multiplicative N(1, (1-p)/p) noise, identity at eval"),
        DropoutScheme("alpha", noise="alpha", contract="moments",
                      reference="Klambauer et al. 2017",
                      description="SELU-saturating alpha dropout, identity at eval"),
        DropoutScheme("dropconnect", rescale="eval", reference="Wan et al. 2013",
                      description="applied to a weight matrix W: M∘W at train, p·W at eval"),
    )
}


def scheme_name_iv(name, registry):
    """``name`` if it is a key of ``registry``; else a TypeError (not a str) or a ValueError
    listing the known names. Shared by every scheme registry (SCHEMES, STRUCTURED_SCHEMES)."""
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a scheme name (str); got {name!r}")
    return choice_iv(name, "name", tuple(registry))


def get_scheme(name):
    """Return the registered :class:`DropoutScheme` called ``name``.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known names.
    """
    return SCHEMES[scheme_name_iv(name, SCHEMES)]
