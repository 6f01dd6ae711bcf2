"""Monte-Carlo estimates of train-time moments, streamed in blocks with bounded memory.

Draws are split into *blocks* of ``block_draws(x.size)`` draws — a function of the input size
only, so a result depends on ``(seed, x.shape, draws)`` and nothing else. Each block has its
own generator (:func:`stats_dropout._internal.rng.block_rng`); its moments are computed in one
vectorised pass and merged into the running moments with Chan et al.'s pairwise update, in
block order. Peak memory is therefore a few blocks whatever the number of draws, and the result
is bit-identical for any number of workers.

``workers > 1`` runs blocks on threads (numpy releases the GIL in their arithmetic) through a
window of ``2·workers`` blocks that are merged in order as they finish, so parallel runs stay
as memory-flat as serial ones. Only vectorised trains (``sample_train``) run in parallel: a
callable on a global RNG must be called in sequence to be reproducible.

For a reference scheme (a :class:`~stats_dropout.reference.schemes.DropoutScheme` bound to a
``keep_prob``) and a statistic other than the identity, a block's draws are produced and read in
cache-sized pieces (:meth:`~stats_dropout.reference.schemes.DropoutScheme.sample_train_chunks`,
the same stream) instead of as one block-sized array. With masks shared along axes and a
statistic affine in the mask entries, :func:`estimate_mask_affine_moments` computes each draw's
value from its mask alone.

Where a statistic is linear in the masks, :func:`estimate_masked_matmul_moments` averages the
masks instead of the statistic — ``mean_d (D_d∘A/p) W = (D̄∘A/p) W`` exactly, up to rounding —
and replaces ``draws`` matrix products by one.

References
----------
.. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for
   computing sample variances", Stanford CS tech. report STAN-CS-79-773 (1979).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools

import numpy as np

from stats_dropout._internal.rng import block_rng, seeded_global_rngs
from stats_dropout._internal.validation import (
    choice_iv,
    draws_iv,
    float_array_iv,
    keep_prob_iv,
    positive_int_iv,
    seed_iv,
)
from stats_dropout.inference.results import TrainMoments
from stats_dropout.reference.masks import keep_threshold, mask_chunks
from stats_dropout.reference.schemes import BoundScheme, DropoutScheme

__all__ = [
    "BlockMoments",
    "RunningMoments",
    "block_draws",
    "estimate_mask_affine_moments",
    "estimate_masked_matmul_moments",
    "estimate_statistic_moments",
    "estimate_train_moments",
]

#: Elements (draws × input size) per block: 2^20 float64 values = 8 MiB per sample array.
BLOCK_ELEMENTS = 1 << 20


def block_draws(size):
    """Draws per block for an input of ``size`` elements (at least 1)."""
    return max(1, BLOCK_ELEMENTS // max(int(size), 1))


@dataclasses.dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations (``M2``), merged pairwise [1]_."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def from_samples(cls, samples):
        """Moments of ``samples`` along axis 0 (two-pass within the block, for accuracy)."""
        samples = np.asarray(samples, dtype=np.float64)
        mean = samples.mean(axis=0)
        m2 = ((samples - mean) ** 2).sum(axis=0)
        return cls(samples.shape[0], mean, m2)

    @classmethod
    def _from_owned_samples(cls, samples):
        """:meth:`from_samples` for a fresh array nobody else holds: the deviations overwrite it.

        Same operations in the same order, hence the same bits, without two block-sized
        temporaries (the difference and its square).
        """
        if samples.dtype != np.float64:
            samples = samples.astype(np.float64)  # a copy, ours too
        mean = samples.mean(axis=0)
        np.subtract(samples, mean, out=samples)
        np.square(samples, out=samples)
        return cls(samples.shape[0], mean, samples.sum(axis=0))

    def merge(self, other):
        """Chan's update: ``M2 = M2_a + M2_b + δ² n_a n_b / n`` with ``δ = mean_b − mean_a``."""
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return RunningMoments(n, mean, m2)

    def to_result(self, seed):
        var = self.m2 / (self.n - 1) if self.n > 1 else np.full_like(self.m2, np.nan)
        return TrainMoments(mean=self.mean, var=var, n_draws=self.n, seed=seed)


def _is_vectorised(train):
    return callable(getattr(train, "sample_train", None))


def _check_output(y, x, draw):
    y = np.asarray(y)
    if y.shape != x.shape:
        raise ValueError(f"`train` returned shape {y.shape} on draw {draw}; expected {x.shape}")
    return y


def _blocks(draws, per_block):
    """``(index, size)`` of each block, lazily (a long run does not hold a list of them)."""
    full, rest = divmod(draws, per_block)
    sizes = itertools.chain(itertools.repeat(per_block, full), [rest] if rest else [])
    return enumerate(sizes)


def _merge_in_order(parts):
    """Chan-merge block moments in block order: the same sequence of merges, the same bits."""
    total = None
    for part in parts:
        total = part if total is None else total.merge(part)
    return total


def _ordered_map(fn, items, workers):
    """``map(fn, items)`` on ``workers`` threads, yielded in order, at most ``2·workers`` in flight.

    ``Executor.map`` would submit every block at once and keep every result until the
    slowest earlier one is merged; the bounded window keeps memory flat in the number of
    draws while both cores stay busy (numpy releases the GIL in the block's arithmetic).
    """
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        window = collections.deque(pool.submit(fn, item) for item in itertools.islice(items, 2 * workers))
        while window:
            result = window.popleft().result()
            for item in itertools.islice(items, 1):
                window.append(pool.submit(fn, item))
            yield result


def _chunked_values(train, x, statistic, size, rng):
    """``statistic(train.sample_train(x, size, rng))`` piece by piece, for a statistic of each draw alone.

    The scheme's own pieces (:meth:`~stats_dropout.reference.schemes.BoundScheme.sample_train_chunks`:
    the same draws from the same stream) are read by the statistic while they are in cache,
    instead of one block-sized output written to memory and read back once per statistic.
    """
    # np.array copies: a statistic may return a view of the piece, whose buffer the next reuses.
    return np.concatenate([np.array(statistic(piece)) for _, piece in train.sample_train_chunks(x, size, rng=rng)])


def _moments_vectorised(train, x, statistic, draws, seed, workers):
    # Our own schemes return fresh output arrays, so the identity statistic's moments can be
    # computed in place; a user's sample_train might hand back an array it keeps.
    ours = isinstance(train, BoundScheme)
    owned = statistic is _identity and ours
    # A statistic's value for a draw depends on that draw alone (the documented contract), so
    # it may be applied to our schemes' draws in pieces; the identity keeps the whole block.
    chunked = ours and statistic is not _identity and isinstance(train.scheme, DropoutScheme)

    def one_block(block):
        index, size = block
        rng = block_rng(seed, index)
        if chunked:
            values = _chunked_values(train, x, statistic, size, rng)
        else:
            values = statistic(train.sample_train(x, size, rng=rng))
        return RunningMoments._from_owned_samples(values) if owned else RunningMoments.from_samples(values)

    blocks = _blocks(draws, block_draws(x.size))
    parts = map(one_block, blocks) if workers == 1 else _ordered_map(one_block, blocks, workers)
    return _merge_in_order(parts)


def _block_moments(statistic, outputs):
    """Moments of one block of per-draw outputs; the stacked block is freed on return."""
    values = statistic(np.stack(outputs))
    if statistic is _identity:  # np.stack made a fresh array: deviations may overwrite it
        return RunningMoments._from_owned_samples(values)
    return RunningMoments.from_samples(values)


class BlockMoments:
    """Per-element moments of a stream of outputs, one draw at a time, merged block by block.

    The one accumulator behind every per-call Monte-Carlo loop — :func:`estimate_train_moments`
    on a callable and the battery's evidence collector: outputs are buffered in blocks of
    :func:`block_draws` draws, each block's moments computed in one vectorised pass and
    Chan-merged in block order, so the same outputs give the same bits whoever streams them.

    Parameters
    ----------
    size : int
        Elements of one output (fixes the block length).
    statistic : callable, optional
        Applied to each stacked block (default: the outputs themselves).
    """

    def __init__(self, size, statistic=None):
        self.per_block = block_draws(size)
        self.statistic = _identity if statistic is None else statistic
        self._buffer = []
        self._total = None

    def update(self, y):
        self._buffer.append(y)
        if len(self._buffer) == self.per_block:
            self._flush()

    def _flush(self):
        if self._buffer:
            part = _block_moments(self.statistic, self._buffer)
            self._buffer = []
            self._total = part if self._total is None else self._total.merge(part)

    def result(self):
        """The :class:`RunningMoments` of every output so far (None before the first)."""
        self._flush()
        return self._total


def _moments_sequential(train, x, statistic, draws, seed):
    """One call per draw for callables that draw their own randomness (global RNGs)."""
    moments = BlockMoments(x.size, statistic)
    with seeded_global_rngs(seed):
        for draw in range(draws):
            # A fresh copy per call: an implementation that writes into its input must not
            # corrupt the following draws (the battery reports the mutation separately).
            moments.update(_check_output(train(x.copy()), x, draw))
    return moments.result()


def _estimate_iv(train, x, draws, seed, workers):
    if not callable(train):
        raise TypeError(f"`train` must be callable (x -> y); got {train!r}")
    x = float_array_iv(x)
    draws = draws_iv(draws, "draws")
    seed = seed_iv(seed)
    workers = positive_int_iv(workers, "workers")
    return x, draws, seed, workers


def estimate_statistic_moments(train, x, statistic, *, draws, seed=0, workers=1):
    """Mean and variance over draws of a per-draw ``statistic`` of the train output.

    Parameters
    ----------
    train : callable
        ``x -> y`` drawing its own randomness, or an object with a vectorised
        ``sample_train(x, n_draws, rng)`` (a :class:`~stats_dropout.reference.schemes.BoundScheme`).
    x : array_like of float
        Input of each train pass (never modified).
    statistic : callable
        Maps stacked outputs ``(n, *x.shape)`` to per-draw values ``(n, *k)``. Each draw's
        value must depend on that draw only.
    draws : int
        Number of train passes.
    seed : int
        Seeds block generators (vectorised trains) or numpy's/torch's global RNGs, which are
        restored afterwards (other callables).
    workers : int
        Threads for vectorised trains; the result is identical for any value.

    Returns
    -------
    TrainMoments
        Moments of the statistic's values.
    """
    x, draws, seed, workers = _estimate_iv(train, x, draws, seed, workers)
    if _is_vectorised(train):
        total = _moments_vectorised(train, x, statistic, draws, seed, workers)
    else:
        total = _moments_sequential(train, x, statistic, draws, seed)
    return total.to_result(seed)


def _identity(samples):
    return samples


#: Largest ``(groups + 1) · x.size`` of the basis masks :func:`_mask_affine_form` evaluates at once.
AFFINE_MAX_ELEMENTS = 1 << 24


def _mask_affine_form(train, x, statistic):
    """``(flip, c, W)`` with ``statistic(kept · m) = c + vec(m ⊕ flip) W`` for every 0/1 mask, or None.

    Read off the statistic at the base mask (all dropped, or all kept when ``flip`` — for
    ``keep_prob > 1/2``, so that the typical draw differs from the base in few entries and
    ``c + Σ w`` adds few terms) and at each mask that differs from it in one entry (a row of
    ``W`` each); then checked at ten more masks (all flipped, alternate entries flipped, eight
    uniformly random ones from a fixed stream): a statistic with a product of entries (not
    affine) differs there with probability ≥ 1 − 2^-8 per term, and gets the general path. A mask
    of more than :data:`AFFINE_MAX_ELEMENTS` elements over all its basis masks (``groups ·
    x.size``) takes the general path too, whose memory is bounded by its blocks.
    """
    probe = train.shared_mask_draws(x, 1, rng=np.random.default_rng(0))  # a throwaway stream
    if probe is None:
        return None
    keep, kept = probe
    flip = train.keep_prob > 0.5
    mask_shape = keep.shape[1:]
    groups = int(np.prod(mask_shape))
    if (groups + 1) * x.size > AFFINE_MAX_ELEMENTS:
        return None

    def at(changes):  # the statistic at the masks base ⊕ changes, one row of `changes` each
        masks = np.abs(changes - float(flip)).reshape((len(changes),) + mask_shape)
        return np.asarray(statistic(kept * masks.astype(kept.dtype)), dtype=np.float64)

    values = at(np.concatenate([np.zeros((1, groups)), np.eye(groups)]))
    c, w = values[0], (values[1:] - values[0]).reshape(groups, -1)
    random = np.random.default_rng(0).random((8, groups)) < 0.5
    tests = np.concatenate([np.stack([np.ones(groups), np.arange(groups) % 2 == 0]), random]).astype(np.float64)
    got = at(tests)
    scale = np.abs(c).reshape(-1) + np.abs(w).sum(axis=0)
    if got.shape[0] != len(tests) or not np.all(
            np.abs(got.reshape(len(tests), -1) - (c.reshape(-1) + tests @ w)) <= 1e-9 * (1.0 + scale)):
        return None
    return flip, c, w


#: Most elements of one matrix-vector product in :func:`_affine_values`: below it OpenBLAS runs
#: on the calling thread; above, its threads cost more than they save on a busy machine.
_GEMV_ELEMENTS = 1 << 18


def _affine_values(masks, w, c):
    """``c + masks @ w`` as matrix-vector products of at most :data:`_GEMV_ELEMENTS` elements.

    A ``(draws, groups) @ (groups, k)`` product with small ``k`` is a pathological shape for
    a threaded BLAS (it measured 10–40× slower than ``k`` single-threaded products here).
    """
    rows = max(1, _GEMV_ELEMENTS // max(masks.shape[1], 1))
    out = np.empty((w.shape[1], masks.shape[0]))
    for j in range(w.shape[1]):
        column = np.ascontiguousarray(w[:, j])
        for start in range(0, masks.shape[0], rows):
            np.dot(masks[start:start + rows], column, out=out[j, start:start + rows])
    out += c[:, None]
    return out.T


def estimate_mask_affine_moments(train, x, statistic, *, draws, seed=0):
    """:func:`estimate_statistic_moments` for a statistic affine in a shared dropout mask.

    For a reference scheme with masks shared along axes (one entry per group ``g``), a train
    pass is ``y = q ∘ B(m)``: the broadcast 0/1 mask ``m`` times the kept value ``q``. A
    statistic ``T`` with ``T(y) = c + Σ_g m_g w_g`` for every 0/1 mask — a linear form
    ``Σ_i e_i y_i``, a separable sum ``Σ_i h_i(y_i)``, or a sum over the mask groups of
    functions of each group (``Σ_g (Σ_{i∈g} s_i (y_i − μ_i))²``) — is then computed from the
    masks alone: ``c`` and ``w`` are read off the statistic at ``1 + groups`` basis masks (the
    all-dropped mask and its one-entry changes, or for ``keep_prob > 1/2`` the all-kept one, so
    that a draw adds few terms), and each draw costs ``groups`` multiply-adds instead of a whole
    output and its statistic.

    The masks are those :func:`estimate_statistic_moments` draws (same blocks, block generators
    and order), so both give the same values up to floating-point rounding (the sums are taken
    in another order). Any other ``train`` (a callable, unshared or non-Bernoulli noise,
    ``keep_prob = 1``), or a statistic that is not affine in the mask (checked at two more
    masks), is passed to :func:`estimate_statistic_moments` unchanged.

    Parameters
    ----------
    train : BoundScheme or callable
    x : array_like of float
    statistic : callable
        ``(n, *x.shape) -> (n, *k)``, affine in the mask entries as above.
    draws : int
    seed : int, default 0

    Returns
    -------
    TrainMoments
        Moments of the statistic's values.
    """
    x, draws, seed, _ = _estimate_iv(train, x, draws, seed, 1)
    ours = isinstance(train, BoundScheme) and isinstance(train.scheme, DropoutScheme)
    form = _mask_affine_form(train, x, statistic) if ours else None
    if form is None:
        return estimate_statistic_moments(train, x, statistic, draws=draws, seed=seed)
    flip, c, w = form

    def one_block(block):
        index, size = block
        keep, _ = train.shared_mask_draws(x, size, rng=block_rng(seed, index))
        changes = (~keep if flip else keep).reshape(size, -1).astype(np.float64)
        values = _affine_values(changes, w, c.reshape(-1))
        return RunningMoments.from_samples(values.reshape((size,) + c.shape))

    return _merge_in_order(map(one_block, _blocks(draws, block_draws(x.size)))).to_result(seed)


def estimate_train_moments(train, x, *, draws, seed=0, workers=1):
    """Per-element mean and variance of ``draws`` train outputs, streamed with bounded memory.

    Parameters
    ----------
    train : callable
        ``x -> y`` drawing its own randomness (user code on numpy's global RNG, a torch
        module wrapped by :func:`stats_dropout.adapters.from_torch`), or a
        :class:`~stats_dropout.reference.schemes.BoundScheme`, whose draws are vectorised.
    x : array_like of float
        Input of every train pass; never modified.
    draws : int
        Number of train passes, ≥ 1.
    seed : int, default 0
        Makes the estimate reproducible.
    workers : int, default 1
        Threads over blocks (vectorised trains only); the result does not depend on it.

    Returns
    -------
    TrainMoments
        ``mean``, ``var`` (ddof 1), ``std_error``, ``n_draws`` and
        ``confidence_interval(level)``, each per element of ``x``.

    Notes
    -----
    Memory is ``O(x.size · block_draws)`` with ``block_draws · x.size ≈ 2^20``, independent
    of ``draws``; block moments merge with Chan's pairwise update.

    Examples
    --------
    >>> import numpy as np, stats_dropout as sd
    >>> layer = sd.get_scheme("inverted").bind(0.8)
    >>> est = sd.estimate_train_moments(layer, np.ones(3), draws=10_000, seed=1)
    >>> bool(np.all(np.abs(est.mean - 1) < 6 * est.std_error))
    True
    """
    return estimate_statistic_moments(train, x, _identity, draws=draws, seed=seed, workers=workers)


def _masked_matmul_iv(activations, weights, keep_prob, draws, seed, method):
    activations = float_array_iv(activations, "activations")
    weights = float_array_iv(weights, "weights")
    if activations.ndim != 2 or weights.ndim != 2:
        raise ValueError(
            f"`activations` and `weights` must be 2-D; got shapes {activations.shape} and {weights.shape}"
        )
    if activations.shape[1] != weights.shape[0]:
        raise ValueError(
            f"`activations` has {activations.shape[1]} columns but `weights` has {weights.shape[0]} rows"
        )
    keep_prob = keep_prob_iv(keep_prob)
    draws = draws_iv(draws, "draws")
    seed = seed_iv(seed)
    method = choice_iv(method, "method", ("masks", "binomial"))
    return activations, weights, keep_prob, draws, seed, method


def _keep_counts_from_masks(shape, keep_prob, draws, seed):
    """Per-element number of kept draws, from the very masks the vectorised engine draws.

    Same blocks, block generators and chunk order as ``estimate_statistic_moments`` on
    ``get_scheme("inverted").bind(keep_prob)`` — only the masks are formed, never the outputs.
    """
    size = int(np.prod(shape))
    counts = np.zeros(size, dtype=np.int64)
    for index, rows in _blocks(draws, block_draws(size)):
        for _, cols, keep in mask_chunks(block_rng(seed, index), rows, size, keep_prob):
            counts[cols] += np.count_nonzero(keep, axis=0)
    return counts.reshape(shape)


def estimate_masked_matmul_moments(activations, weights, keep_prob, *, draws, seed=0, method="masks"):
    """Monte-Carlo ``E[(D ∘ A / p) W]`` over inverted-dropout masks ``D``, by linearity.

    The statistic is linear in the mask, so the mean over draws of ``(D_d ∘ A / p) W`` is
    ``(D̄ ∘ A / p) W`` with ``D̄`` the mean mask: one matrix product instead of ``draws``.
    With ``method="masks"`` the masks are exactly those that
    ``estimate_statistic_moments(get_scheme("inverted").bind(p), A, lambda Y: Y @ W, ...)``
    draws for the same seed, so both means agree up to floating-point rounding.

    Parameters
    ----------
    activations : array_like, shape (n, k)
        ``A``, the layer input that dropout masks (never modified).
    weights : array_like, shape (k, m)
        ``W``, the next layer's weights.
    keep_prob : float in (0, 1]
        ``p``.
    draws : int
        Number of masks ``D_d``.
    seed : int, default 0
    method : {"masks", "binomial"}, default "masks"
        ``"masks"`` counts kept draws from the engine's own masks (cost ``O(draws · A.size)``
        bit operations, no float outputs, no products). ``"binomial"`` draws each element's
        count directly from ``Binomial(draws, t / 2^m)`` — the same law at cost ``O(A.size)``,
        but other random numbers than the engine's.

    Returns
    -------
    TrainMoments
        ``mean``: the Monte-Carlo estimate, shape ``(n, m)``. ``var``: the *exact* variance of
        one draw's statistic, ``(1 − p)/p · (A∘A)(W∘W)`` (THEORY.md §1, weighted sum with
        independent masks), so ``std_error`` and ``confidence_interval`` describe the
        estimate. ``n_draws``: ``draws``.

    Notes
    -----
    Exact in law, not an approximation: only the order of floating-point additions differs
    from averaging ``draws`` matrix products. The exact mean is ``A W``; this estimator exists
    to test the Monte-Carlo machinery (and teaching material) at the cost of one product.

    Examples
    --------
    >>> import numpy as np
    >>> from stats_dropout.inference.montecarlo import estimate_masked_matmul_moments
    >>> A, W = np.ones((2, 3)), np.ones((3, 1))
    >>> est = estimate_masked_matmul_moments(A, W, 0.5, draws=100_000, seed=0)
    >>> bool(np.all(np.abs(est.mean - A @ W) < 6 * est.std_error))
    True
    """
    activations, weights, keep_prob, draws, seed, method = _masked_matmul_iv(
        activations, weights, keep_prob, draws, seed, method
    )
    a = activations.astype(np.float64)
    w = weights.astype(np.float64)
    if keep_prob == 1.0:
        counts = np.full(a.shape, draws, dtype=np.int64)
    elif method == "masks":
        counts = _keep_counts_from_masks(a.shape, keep_prob, draws, seed)
    else:
        threshold, bits, _ = keep_threshold(keep_prob)
        counts = block_rng(seed, 0).binomial(draws, threshold / 2.0**bits, size=a.shape)
    kept_value = a / keep_prob  # fl(a / p): what a kept unit of the train pass is
    mean = (kept_value * (counts / draws)) @ w
    var = (1.0 - keep_prob) / keep_prob * ((a * a) @ (w * w))
    return TrainMoments(mean=mean, var=var, n_draws=draws, seed=seed)
