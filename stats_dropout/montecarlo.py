"""Monte-Carlo estimates of train-time moments, streamed in blocks with bounded memory.

Draws are split into *blocks* of ``block_draws(x.size)`` draws — a function of the input size
only, so a result depends on ``(seed, x.shape, draws)`` and nothing else. Each block has its
own generator (:func:`stats_dropout._rng.block_rng`); its moments are computed in one
vectorised pass and merged into the running moments with Chan et al.'s pairwise update, in
block order. Peak memory is therefore a few blocks whatever the number of draws, and the result
is bit-identical for any number of workers.

References
----------
.. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for
   computing sample variances", Stanford CS tech. report STAN-CS-79-773 (1979).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

import numpy as np

from ._rng import block_rng, seeded_global_rngs
from ._validation import float_array_iv, positive_int_iv, seed_iv
from .results import TrainMoments

__all__ = ["estimate_train_moments", "estimate_statistic_moments", "block_draws", "RunningMoments"]

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
    """``(index, size)`` of each block."""
    full, rest = divmod(draws, per_block)
    sizes = [per_block] * full + ([rest] if rest else [])
    return list(enumerate(sizes))


def _moments_vectorised(train, x, statistic, draws, seed, workers):
    def one_block(block):
        index, size = block
        samples = train.sample_train(x, size, rng=block_rng(seed, index))
        return RunningMoments.from_samples(statistic(samples))

    blocks = _blocks(draws, block_draws(x.size))
    if workers == 1:
        parts = map(one_block, blocks)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        with pool:
            parts = list(pool.map(one_block, blocks))  # pool.map keeps block order
    total = None
    for part in parts:
        total = part if total is None else total.merge(part)
    return total


def _moments_sequential(train, x, statistic, draws, seed):
    """One call per draw for callables that draw their own randomness (global RNGs)."""
    per_block = block_draws(x.size)
    total = None
    buffer = []
    with seeded_global_rngs(seed):
        for draw in range(draws):
            # A fresh copy per call: an implementation that writes into its input must not
            # corrupt the following draws (the battery reports the mutation separately).
            buffer.append(_check_output(train(x.copy()), x, draw))
            if len(buffer) == per_block or draw == draws - 1:
                part = RunningMoments.from_samples(statistic(np.stack(buffer)))
                total = part if total is None else total.merge(part)
                buffer = []
    return total


def _estimate_iv(train, x, draws, seed, workers):
    if not callable(train):
        raise TypeError(f"`train` must be callable (x -> y); got {train!r}")
    x = float_array_iv(x)
    draws = positive_int_iv(draws, "draws")
    seed = seed_iv(seed)
    workers = positive_int_iv(workers, "workers")
    return x, draws, seed, workers


def estimate_statistic_moments(train, x, statistic, *, draws, seed=0, workers=1):
    """Mean and variance over draws of a per-draw ``statistic`` of the train output.

    Parameters
    ----------
    train : callable
        ``x -> y`` drawing its own randomness, or an object with a vectorised
        ``sample_train(x, n_draws, rng)`` (a :class:`~stats_dropout.schemes.BoundScheme`).
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


def estimate_train_moments(train, x, *, draws, seed=0, workers=1):
    """Per-element mean and variance of ``draws`` train outputs, streamed with bounded memory.

    Parameters
    ----------
    train : callable
        ``x -> y`` drawing its own randomness (user code on numpy's global RNG, a torch
        module wrapped by :func:`stats_dropout.adapters.from_torch`), or a
        :class:`~stats_dropout.schemes.BoundScheme`, whose draws are vectorised.
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
