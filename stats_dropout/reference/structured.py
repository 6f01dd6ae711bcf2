"""Structured dropout reference schemes: DropBlock and stochastic depth (drop path).

Both have the interface of :class:`~stats_dropout.reference.schemes.DropoutScheme` —
``train(x, keep_prob, rng)``, ``eval(x, keep_prob)``, vectorised ``sample_train``, ``bind``,
``mask_shape``, ``train_mean``/``train_var`` where a closed form exists — and live in their own
registry :data:`STRUCTURED_SCHEMES`: the report's sweep iterates every name of
:data:`~stats_dropout.reference.schemes.SCHEMES` with the unstructured probes and contracts, which
DropBlock (a biased scheme, 2-D maps only) does not fit.

DropBlock [1]_ (``x`` of shape ``(..., H, W)``, NCHW: every leading index — sample, channel — gets
its own mask, as in the reference code's noise of ``net.shape``): block corners are drawn
``Bernoulli(γ)`` on the ``(H − bs + 1) × (W − bs + 1)`` valid positions (:func:`seed_rate`, Eq. 1),
each seed zeroes a ``bs × bs`` square, and the output is

* ``normalize="ratio"`` (the paper and its reference code, timm): ``x · M · numel(M) / ΣM``, the
  ratio over the whole tensor of one call (batch × channels × space). When every unit is dropped
  (ΣM = 0) the output is **0**: timm's ``ΣM + 1e-7`` gives 0; the TensorFlow reference divides by
  zero (NaN) — we choose 0 and the theory counts that event as an output of 0.
* ``normalize="keep_prob"``: ``x · M / keep_prob`` (a fixed rescale).

The block size is clamped to the map (``min(bs, H, W)``, as the reference code and timm do).

Stochastic depth / drop path [2]_: one ``Bernoulli(keep)`` per sample (``mode="sample"``, axis 0,
broadcast over the other axes: transformers' and timm's ``drop_path``, torchvision's
``stochastic_depth(mode="row")``) or one per call (``mode="batch"``, the paper; torchvision's
``mode="batch"``), with ``normalize`` ``"keep_prob"`` (divide by keep), ``"ratio"``
(``numel/ΣM``: ``B/K`` per sample; 1 when one draw per batch is kept) or ``"eval"`` (the paper:
no train rescale, eval multiplies by keep).

References
----------
.. [1] G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: a regularization method for convolutional
   networks", NeurIPS 2018.
.. [2] G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Q. Weinberger, "Deep networks with stochastic
   depth", ECCV 2016.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from scipy import stats

from stats_dropout._internal.validation import (
    choice_iv,
    float_array_iv,
    keep_prob_iv,
    positive_int_iv,
    rng_iv,
)
from stats_dropout.reference import structured_theory as st
from stats_dropout.reference.masks import bernoulli_mask
from stats_dropout.reference.schemes import BoundScheme, scheme_name_iv

__all__ = ["DropBlockScheme", "StochasticDepthScheme", "STRUCTURED_SCHEMES", "get_structured_scheme",
           "dropblock_mask"]

_GHIASI = "Ghiasi, Lin & Le 2018 (NeurIPS), Eq. 1 and Algorithm 1"
_HUANG = "Huang et al. 2016 (ECCV)"


def _dilate(seeds, bs, axis):
    """Full-length OR-dilation along ``axis``: position ``k`` of ``m`` covers ``k..k+bs−1`` of ``m+bs−1``.

    Window lengths double (1, 2, 4, … then the rest): ``⌈log2 bs⌉`` OR passes instead of ``bs``.
    """
    m = seeds.shape[axis]
    n = m + bs - 1

    def part(start, stop):
        index = [slice(None)] * seeds.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    shape = list(seeds.shape)
    shape[axis] = n
    out = np.zeros(shape, dtype=bool)
    out[part(0, m)] = seeds
    width = 1
    while width < bs:  # out[k] = OR of seeds[k − width + 1 .. k]; extend the window by `shift`
        shift = min(width, bs - width)
        out[part(shift, n)] |= out[part(0, n - shift)].copy()
        width += shift
    return out


def dropblock_mask(rng, shape, keep_prob, block_size):
    """Boolean keep mask of DropBlock for arrays of ``shape`` ``(..., H, W)``: one mask per leading index.

    Seeds are exact ``Bernoulli(γ)`` (integer thresholds, :func:`~stats_dropout.reference.masks.bernoulli_mask`)
    on the valid positions; a unit is kept iff no seeded block covers it.
    """
    *lead, h, w = shape
    bs = min(int(block_size), h, w)
    gamma = st.seed_rate(keep_prob, bs, (h, w))
    if gamma == 0.0:
        return np.ones(shape, dtype=bool)
    seeds = bernoulli_mask(rng, (*lead, h - bs + 1, w - bs + 1), gamma)
    return ~_dilate(_dilate(seeds, bs, -2), bs, -1)


class _StructuredBase:
    """What both structured schemes share: validation, the public paths, binding."""

    def train(self, x, keep_prob, rng=None):
        """One stochastic train-time forward pass (same shape and dtype; ``x`` is not modified)."""
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        return self._sample(x, keep_prob, rng, None)

    def sample_train(self, x, keep_prob, n_draws, rng=None):
        """``n_draws`` independent train passes on a new leading axis (vectorised)."""
        x, keep_prob, rng = self._train_iv(x, keep_prob, rng)
        return self._sample(x, keep_prob, rng, positive_int_iv(n_draws, "n_draws"))

    def bind(self, keep_prob, rng=None):
        """A :class:`~stats_dropout.reference.schemes.BoundScheme` at a fixed ``keep_prob``."""
        return BoundScheme(self, keep_prob_iv(keep_prob), rng_iv(rng))

    def eval(self, x, keep_prob):
        """Identity (``keep · x`` for stochastic depth with ``normalize="eval"``)."""
        x = float_array_iv(x)
        keep_prob = keep_prob_iv(keep_prob)
        if getattr(self, "normalize", None) == "eval":
            return (x.astype(np.float64) * keep_prob).astype(x.dtype)
        return x.copy()

    def _train_iv(self, x, keep_prob, rng):
        x = float_array_iv(x)
        keep_prob = keep_prob_iv(keep_prob)
        if x.ndim < self.min_ndim:
            raise ValueError(f"`x` must have at least {self.min_ndim} dimension(s) for scheme "
                             f"{self.name!r}; got {x.ndim}")
        return x, keep_prob, rng_iv(rng)

    def _finish(self, x, keep, keep_prob, lead):
        """``x · M · scale`` with the scheme's normalisation, per draw, in float64 then ``x``'s dtype."""
        if self.normalize == "ratio":
            axes = tuple(range(len(lead), keep.ndim))
            # kept elements after broadcasting the mask over x (numel(M)/sum(M) of the full mask)
            spread = x.size // int(np.prod(keep.shape[len(lead):]))
            kept = np.count_nonzero(keep, axis=axes).reshape(lead + (1,) * x.ndim) * spread
            with np.errstate(divide="ignore"):
                scale = np.where(kept > 0, x.size / np.maximum(kept, 1), 0.0)  # all dropped: 0
        else:
            scale = 1.0 / keep_prob if self.normalize == "keep_prob" else 1.0
        out = np.multiply(keep, scale, dtype=np.float64)
        out = out * x if out.shape != lead + x.shape else np.multiply(out, x, out=out)
        return out.astype(x.dtype, copy=False)


@dataclasses.dataclass(frozen=True)
class DropBlockScheme(_StructuredBase):
    """DropBlock [1]_ with block size ``block_size`` (clamped to the map) and a normalisation."""

    name: str = "dropblock"
    block_size: int = 7
    normalize: Literal["ratio", "keep_prob"] = "ratio"
    contract: str = "approximate mean"
    reference: str = _GHIASI
    description: str = ""
    min_ndim = 2

    def __post_init__(self):
        positive_int_iv(self.block_size, "block_size")
        choice_iv(self.normalize, "normalize", ("ratio", "keep_prob"))

    def with_block_size(self, block_size):
        """The same scheme with another block size."""
        return dataclasses.replace(self, block_size=positive_int_iv(block_size, "block_size"))

    def effective_block_size(self, shape):
        """The block size used on an input of ``shape`` (clamped to ``H`` and ``W``)."""
        return min(self.block_size, *shape[-2:])

    def mask_shape(self, shape):
        """One mask entry per element (every sample and channel has its own blocks)."""
        if len(shape) < 2:
            raise ValueError(f"`x` must have at least 2 dimensions (..., H, W) for DropBlock; got {len(shape)}")
        return tuple(shape)

    def keep_probabilities(self, shape, keep_prob):
        """``P(M_u = 1) = (1 − γ)^{c_u}`` per unit of one ``H×W`` map (exact)."""
        return st.keep_probabilities(keep_prob, self.effective_block_size(shape), shape[-2:])

    def train_mean(self, x, keep_prob):
        """Exact ``E[train(x)]``: ``x (1−γ)^{c_u}/keep`` (fixed rescale); ratio normalisation
        ``x (1 + b_u)`` with :func:`~stats_dropout.reference.structured_theory.ratio_bias_exact`
        over the ``x.size / HW`` maps of one call (ValueError where that is not feasible)."""
        x = np.asarray(x, dtype=np.float64)
        bs, hw = self.effective_block_size(x.shape), x.shape[-2:]
        if self.normalize == "keep_prob":
            return x * (1.0 + st.fixed_rescale_bias(keep_prob, bs, hw))
        n_maps = x.size // (hw[0] * hw[1])
        return x * (1.0 + st.ratio_bias_exact(keep_prob, bs, hw, n_maps=n_maps))

    def _sample(self, x, keep_prob, rng, n_draws):
        lead = () if n_draws is None else (n_draws,)
        if keep_prob == 1.0:
            return np.broadcast_to(x, lead + x.shape).copy()
        keep = dropblock_mask(rng, lead + x.shape, keep_prob, self.block_size)
        return self._finish(x, keep, keep_prob, lead)


@dataclasses.dataclass(frozen=True)
class StochasticDepthScheme(_StructuredBase):
    """Stochastic depth / drop path [2]_: one Bernoulli(keep) per sample or per call for a branch."""

    name: str = "stochastic_depth"
    mode: Literal["sample", "batch"] = "sample"
    normalize: Literal["keep_prob", "ratio", "eval"] = "keep_prob"
    contract: str = "mean"
    reference: str = _HUANG
    description: str = ""
    min_ndim = 1

    def __post_init__(self):
        choice_iv(self.mode, "mode", ("sample", "batch"))
        choice_iv(self.normalize, "normalize", ("keep_prob", "ratio", "eval"))

    def mask_shape(self, shape):
        """``(B, 1, …, 1)`` per sample, ``(1, …, 1)`` per batch."""
        if len(shape) < 1:
            raise ValueError("`x` must have at least 1 dimension (the batch) for stochastic depth; got 0")
        first = shape[0] if self.mode == "sample" else 1
        return (first,) + (1,) * (len(shape) - 1)

    def relative_bias(self, batch_size, keep_prob):
        """Exact ``E[y_b]/eval_b − 1`` (:func:`~stats_dropout.reference.structured_theory.stochastic_depth_bias`)."""
        return st.stochastic_depth_bias(keep_prob, batch_size, self.mode, self.normalize)

    def train_mean(self, x, keep_prob):
        """Exact ``E[train(x)]``: ``x`` (``keep_prob``), ``keep · x`` (``eval``), ``x(1 + bias)`` (ratio)."""
        x = np.asarray(x, dtype=np.float64)
        if self.normalize == "eval":
            return keep_prob * x
        return x * (1.0 + self.relative_bias(x.shape[0] if x.ndim else 1, keep_prob))

    def train_var(self, x, keep_prob):
        """Exact per-element ``Var[train(x)]``.

        ``keep_prob``: ``x²(1−p)/p``; ``eval``: ``x² p(1−p)``; ``ratio`` per sample:
        ``x² (B E[1{K≥1}/K] − (1 − q^B)²)`` with ``K ~ Binomial(B, p)`` (``E[M_b B²/K²] =
        B E[1{K≥1}/K]``, exact sum); per batch: ``x² p(1−p)``.
        """
        x = np.asarray(x, dtype=np.float64)
        p = keep_prob
        if self.normalize == "keep_prob":
            return x**2 * (1.0 - p) / p
        if self.normalize == "eval" or self.mode == "batch":
            return x**2 * p * (1.0 - p)
        b = x.shape[0] if x.ndim else 1
        k = np.arange(1, b + 1)
        second = b * float(np.sum(stats.binom.pmf(k, b, p) / k))
        return x**2 * (second - (1.0 - (1.0 - p) ** b) ** 2)

    def _sample(self, x, keep_prob, rng, n_draws):
        lead = () if n_draws is None else (n_draws,)
        if keep_prob == 1.0:
            return np.broadcast_to(x, lead + x.shape).copy()
        keep = bernoulli_mask(rng, lead + self.mask_shape(x.shape), keep_prob)
        return self._finish(x, keep, keep_prob, lead)


#: The structured reference schemes (not in ``SCHEMES``: see the module docstring).
STRUCTURED_SCHEMES = {
    s.name: s
    for s in (
        DropBlockScheme("dropblock", description="DropBlock, ratio normalisation numel(M)/sum(M) over the "
                        "call, block 7, one mask per (sample, channel)"),
        DropBlockScheme("dropblock_keep_prob", normalize="keep_prob",
                        description="DropBlock with a fixed 1/keep_prob rescale, block 7"),
        StochasticDepthScheme("stochastic_depth",
                              description="one Bernoulli(keep) per sample for the branch, divided by keep "
                                          "(drop_path; same law as SCHEMES['drop_path'])"),
        StochasticDepthScheme("stochastic_depth_batch", mode="batch",
                              description="one Bernoulli(keep) per call for the whole batch, divided by keep"),
        StochasticDepthScheme("stochastic_depth_ratio", normalize="ratio",
                              description="per-sample Bernoulli(keep), rescaled by B/K (numel/sum of the mask)"),
        StochasticDepthScheme("stochastic_depth_eval", mode="batch", normalize="eval",
                              description="the paper: one draw per batch, no train rescale, eval keep·x"),
    )
}


def get_structured_scheme(name):
    """The structured scheme called ``name`` (ValueError listing the known names otherwise)."""
    return STRUCTURED_SCHEMES[scheme_name_iv(name, STRUCTURED_SCHEMES)]
