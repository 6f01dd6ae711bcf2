"""Exact theory of structured dropout: DropBlock's keep rates and ratio bias, stochastic depth.

DropBlock [1]_ on an ``H × W`` map with block size ``bs``: block corners are sampled
``Bernoulli(γ)`` on the ``(H − bs + 1) × (W − bs + 1)`` valid positions (every block lies inside
the map), ``γ = (1 − keep)/bs² · HW / ((H − bs + 1)(W − bs + 1))`` (Eq. 1), and each seed zeroes a
``bs × bs`` square. Unit ``u`` is covered by ``c_u = c(r) c(c)`` valid positions, so

    P(M_u = 1) = (1 − γ)^{c_u},    P(M_u = M_v = 1) = (1 − γ)^{|C_u ∪ C_v|}     [derived]

(``C_u`` the positions whose block covers ``u``). γ makes the expected *total block area*
``γ (H−bs+1)(W−bs+1) bs²`` equal ``(1 − keep) HW``; blocks overlap, so the expected dropped
fraction ``1 − mean_u (1 − γ)^{c_u}`` is below ``1 − keep``, and the interior (``c_u = bs²``)
is dropped more often than the border.

Ratio normalisation ``y = x M N / ΣM`` (``N`` units in the normalisation, ``S = ΣM``; ``y = 0``
when ``S = 0``): summing over units, ``Σ_u E[M_u N/S] / N = P(S > 0)`` exactly, so the *average*
relative bias over the units is ``−P(S = 0)``; per unit ``E[M_u N/S] − 1`` needs the joint law of
``(M_u, S)``: exact here by a transfer-matrix recursion over rows (:func:`kept_sum_distribution`,
feasible for small maps), otherwise the second-order delta method
(:func:`ratio_bias_approx`) whose error the tests measure, and Monte Carlo
(:mod:`stats_dropout.studies.structured`).

Stochastic depth / drop path [2]_: one ``Bernoulli(keep)`` per sample (or per batch) for a whole
branch. With ``1/keep`` it is exactly unbiased; with ratio normalisation over a batch of ``B``
(``y_b = x_b M_b B / K``, ``K = Σ M_b``) ``E y_b = (1 − (1 − keep)^B) x_b`` [derived], and with
one draw per batch the ratio cancels the draw: ``E y = keep · x``.

References
----------
.. [1] G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: a regularization method for convolutional
   networks", NeurIPS 2018, Eq. 1 and Algorithm 1.
.. [2] G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Q. Weinberger, "Deep networks with stochastic
   depth", ECCV 2016.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import sparse, stats

__all__ = [
    "map_shape",
    "seed_rate",
    "cover_counts",
    "keep_probabilities",
    "kept_fraction",
    "fixed_rescale_bias",
    "pair_keep_probabilities",
    "kept_sum_moments",
    "orbits",
    "exact_is_feasible",
    "kept_sum_distribution",
    "all_dropped_probability",
    "ratio_bias_exact",
    "ratio_bias_approx",
    "orbit_statistic_sd",
    "stochastic_depth_bias",
    "stochastic_depth_statistic_sd",
]

#: Largest transfer-matrix work (states × seed patterns of a row; states × values of ΣM) that
#: :func:`kept_sum_distribution` accepts: 7×7 maps with any block size, 14×14 only with bs ≥ 10.
MAX_TRANSITIONS = 1 << 22
MAX_STATE_VALUES = 1 << 24


# --- geometry and keep rates --------------------------------------------------------------
def map_shape(feat_size):
    """``(H, W)`` from a size ``fs`` (square map) or a pair."""
    if np.ndim(feat_size) == 0:
        h = w = int(feat_size)
    else:
        h, w = (int(v) for v in feat_size)
    if h < 1 or w < 1:
        raise ValueError(f"`feat_size` must be positive; got {feat_size!r}")
    return h, w


def _geometry_iv(block_size, feat_size):
    h, w = map_shape(feat_size)
    bs = int(block_size)
    if not 1 <= bs <= min(h, w):
        raise ValueError(f"`block_size` must be in [1, {min(h, w)}] for a {h}×{w} map; got {block_size!r}")
    return bs, h, w


def seed_rate(keep_prob, block_size, feat_size):
    """γ of Eq. 1 [1]_: ``(1 − keep)/bs² · HW / ((H − bs + 1)(W − bs + 1))``.

    For a square map ``(1 − keep)/bs² · fs²/(fs − bs + 1)²`` (``theory.dropblock_gamma``). Always
    ``≤ 1 − keep``: ``bs (n − bs + 1) ≥ n`` on each axis (``(bs − 1)(n − bs) ≥ 0``).
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    return (1.0 - keep_prob) / bs**2 * (h * w) / ((h - bs + 1) * (w - bs + 1))


def _axis_counts(n, bs):
    """Valid block positions (corner k covers units k..k+bs−1) covering each unit of an axis."""
    r = np.arange(n)
    return np.minimum(n - bs, r) - np.maximum(0, r - bs + 1) + 1


def cover_counts(block_size, feat_size):
    """``c_u``: number of valid block positions whose block covers unit ``u`` (an H×W int array)."""
    bs, h, w = _geometry_iv(block_size, feat_size)
    return np.outer(_axis_counts(h, bs), _axis_counts(w, bs))


def keep_probabilities(keep_prob, block_size, feat_size):
    """``P(M_u = 1) = (1 − γ)^{c_u}`` for every unit (H×W array) [derived]."""
    gamma = seed_rate(keep_prob, block_size, feat_size)
    return (1.0 - gamma) ** cover_counts(block_size, feat_size)


def kept_fraction(keep_prob, block_size, feat_size):
    """Exact expected fraction of kept units, ``mean_u (1 − γ)^{c_u}`` (≥ keep_prob; = for bs = 1)."""
    return float(np.mean(keep_probabilities(keep_prob, block_size, feat_size)))


def fixed_rescale_bias(keep_prob, block_size, feat_size):
    """Per-unit relative bias of the fixed ``1/keep`` rescale: ``(1 − γ)^{c_u} / keep − 1`` (exact)."""
    return keep_probabilities(keep_prob, block_size, feat_size) / keep_prob - 1.0


def _axis_ranges(n, bs):
    r = np.arange(n)
    return np.maximum(0, r - bs + 1), np.minimum(n - bs, r)


def pair_keep_probabilities(keep_prob, block_size, feat_size):
    """``P(M_u = M_v = 1) = (1 − γ)^{|C_u ∪ C_v|}`` for all pairs: an ``(HW, HW)`` array [derived].

    ``C_u`` is a rectangle of block positions, so ``|C_u ∩ C_v|`` is a product of the overlaps of
    two intervals per axis.
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    gamma = seed_rate(keep_prob, bs, (h, w))
    overlaps = []
    for n in (h, w):
        lo, hi = _axis_ranges(n, bs)
        overlaps.append(np.maximum(0, np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :]) + 1))
    inter = np.einsum("ac,bd->abcd", overlaps[0], overlaps[1]).reshape(h * w, h * w)
    c = cover_counts(bs, (h, w)).ravel()
    return (1.0 - gamma) ** (c[:, None] + c[None, :] - inter)


@functools.lru_cache(maxsize=256)
def kept_sum_moments(keep_prob, block_size, feat_size):
    """``(E S, Var S)`` of the kept count ``S = Σ_u M_u`` of one map (exact, from pairs).

    ``Cov(M_u, M_v) = (1 − γ)^{c_u + c_v} ((1 − γ)^{−|C_u ∩ C_v|} − 1)`` is zero unless the two
    units share a block position, i.e. lie within ``bs − 1`` of each other on both axes; the sum
    runs over those ``(2 bs − 1)²`` offsets, ``O(HW bs²)`` time and ``O(HW)`` memory (the
    ``(HW)²`` table of :func:`pair_keep_probabilities` gives the same numbers on small maps).
    ``feat_size`` must be hashable (an int or a tuple).
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    q = 1.0 - seed_rate(keep_prob, bs, (h, w))
    p = keep_probabilities(keep_prob, bs, (h, w))
    ranges = [_axis_ranges(n, bs) for n in (h, w)]
    var = 0.0
    for dr in range(-(bs - 1), bs):
        rows = _offset_overlaps(ranges[0], h, dr)
        for dc in range(-(bs - 1), bs):
            cols = _offset_overlaps(ranges[1], w, dc)
            (ra, rb, ov_r), (ca, cb, ov_c) = rows, cols
            inter = np.outer(ov_r, ov_c)
            pu, pv = p[ra][:, ca], p[rb][:, cb]
            var += float(np.sum(pu * pv * (q ** (-inter) - 1.0)))
    return float(p.sum()), var


def _offset_overlaps(ranges, n, d):
    """Units ``r`` and ``r + d`` of an axis (index arrays) and the overlap of their position ranges."""
    lo, hi = ranges
    a = np.arange(max(0, -d), min(n, n - d))
    b = a + d
    return a, b, np.maximum(0, np.minimum(hi[a], hi[b]) - np.maximum(lo[a], lo[b]) + 1)


def orbits(feat_size):
    """Units grouped by the map's symmetries (the law of the mask is invariant under them).

    Square maps: the 8 symmetries of the square; otherwise the 4 reflections. Returns
    ``(labels, representatives)``: an H×W int array of orbit indices and one ``(row, col)`` per
    orbit (the first in row-major order).
    """
    h, w = map_shape(feat_size)
    idx = np.arange(h * w).reshape(h, w)
    images = [idx, idx[::-1], idx[:, ::-1], idx[::-1, ::-1]]
    if h == w:
        images += [m.T for m in images]
    least = np.minimum.reduce(images)
    reps, labels = np.unique(least.ravel(), return_inverse=True)
    return labels.reshape(h, w), [(int(i) // w, int(i) % w) for i in reps]


# --- exact law of the kept count (transfer matrix over rows) -------------------------------
def _work(bs, h, w):
    mc = w - bs + 1
    states = bs**mc
    return states * 2**mc, states * (h * w + 1)


def exact_is_feasible(block_size, feat_size):
    """Whether :func:`kept_sum_distribution` runs within its work limits for this geometry."""
    bs, h, w = _geometry_iv(block_size, feat_size)
    if bs == 1:
        return True
    transitions, values = _work(bs, h, w)
    return transitions <= MAX_TRANSITIONS and values <= MAX_STATE_VALUES


def kept_sum_distribution(keep_prob, block_size, feat_size, unit=None):
    """Exact ``P(S = s)`` (``unit=None``) or ``P(M_u = 1, S = s)`` for ``s = 0..HW`` [derived].

    Transfer matrix over unit rows. The state is, per valid block column ``l``, how many more
    rows (0..bs−1) the seeds drawn so far in that column still cover; at row ``r < H − bs + 1`` a
    seed pattern of the ``W − bs + 1`` positions of block row ``r`` is drawn (probability
    ``γ^k (1 − γ)^{m−k}``), a seeded column covers the next ``bs`` rows, and unit ``(r, c)`` is
    dropped iff a covering column ``l ∈ [c − bs + 1, c]`` is active. The kept count of the row
    shifts the distribution of ΣM. Work ``bs^m 2^m`` per row (``m = W − bs + 1``): limited by
    :data:`MAX_TRANSITIONS` (:func:`exact_is_feasible`).
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    n = h * w
    if bs == 1:  # γ = 1 − keep: independent units, S ~ Binomial(N, keep)
        if unit is None:
            return stats.binom.pmf(np.arange(n + 1), n, keep_prob)
        return np.concatenate([[0.0], keep_prob * stats.binom.pmf(np.arange(n), n - 1, keep_prob)])
    if not exact_is_feasible(bs, (h, w)):
        raise ValueError(f"the exact law of ΣM for block size {bs} on a {h}×{w} map needs "
                         f"{_work(bs, h, w)[0]:.3g} transitions per row (limit {MAX_TRANSITIONS}); use "
                         "ratio_bias_approx or a Monte-Carlo estimate (studies.structured)")
    gamma = seed_rate(keep_prob, bs, (h, w))
    mr, mc = h - bs + 1, w - bs + 1
    n_states = bs**mc
    powers = bs ** np.arange(mc)
    digits = (np.arange(n_states)[:, None] // powers) % bs                   # (states, mc)
    patterns = ((np.arange(2**mc)[:, None] >> np.arange(mc)) & 1).astype(bool)  # (2^mc, mc)
    seeds = patterns.sum(axis=1)
    p_pattern = gamma**seeds * (1.0 - gamma) ** (mc - seeds)
    cover = np.zeros((mc, w), dtype=bool)  # block column l covers unit columns l..l+bs-1
    for col in range(mc):
        cover[col, col:col + bs] = True
    dist = np.zeros((n_states, n + 1))
    dist[0, 0] = 1.0
    for r in range(h):
        if r < mr:
            remaining = np.where(patterns[None, :, :], bs, digits[:, None, :])  # (states, 2^mc, mc)
            weight = np.broadcast_to(p_pattern, remaining.shape[:2]).copy()
        else:
            remaining = digits[:, None, :]
            weight = np.ones(remaining.shape[:2])
        dropped = ((remaining >= 1)[..., :, None] & cover).any(axis=-2)    # (states, k, w)
        kept = w - dropped.sum(axis=-1)
        if unit is not None and unit[0] == r:
            weight = weight * ~dropped[..., unit[1]]
        nxt = (np.maximum(remaining - 1, 0) * powers).sum(axis=-1)
        src = np.broadcast_to(np.arange(n_states)[:, None], kept.shape)
        new = np.zeros_like(dist)
        for k in np.unique(kept):
            sel = (kept == k) & (weight > 0)
            if not sel.any():
                continue
            step = sparse.csr_matrix((weight[sel], (nxt[sel], src[sel])), shape=(n_states, n_states))
            new[:, k:] += step @ dist[:, :n + 1 - k]
        dist = new
    return dist.sum(axis=0)


def _sum_distribution_power(dist, copies):
    """Law of the sum of ``copies`` independent copies of a count with law ``dist``."""
    out = np.array([1.0])
    for _ in range(copies):
        out = np.convolve(out, dist)
    return out


def all_dropped_probability(keep_prob, block_size, feat_size, n_maps=1):
    """``P(ΣM = 0)`` over ``n_maps`` independent maps: the map-average ratio bias is minus this.

    Exact where :func:`exact_is_feasible`; otherwise an upper bound from units ``bs`` apart
    (disjoint covering sets): ``Π (1 − (1 − γ)^{c_u})`` over them.
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    if exact_is_feasible(bs, (h, w)):
        return float(kept_sum_distribution(keep_prob, bs, (h, w))[0] ** n_maps)
    p = keep_probabilities(keep_prob, bs, (h, w))[::bs, ::bs]
    return float(np.prod(1.0 - p) ** n_maps)


def ratio_bias_exact(keep_prob, block_size, feat_size, n_maps=1):
    """Exact per-unit bias ``E[M_u N/ΣM] − 1`` of ratio normalisation (H×W array) [derived].

    ``N = n_maps · HW``: the normalisation sums over ``n_maps`` independent maps (batch ×
    channels in the reference code); ``y = 0`` when ΣM = 0. ``bs = 1`` (independent units,
    ``S ~ Binomial(N, keep)``): ``−(1 − keep)^N`` at every unit. Otherwise one transfer-matrix run
    per orbit of :func:`orbits` (raises ValueError where :func:`exact_is_feasible` is false).
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    n_total = n_maps * h * w
    if bs == 1:
        return np.full((h, w), 0.0 - (1.0 - keep_prob) ** n_total)  # 0.0 −: no −0 on underflow
    rest = _sum_distribution_power(kept_sum_distribution(keep_prob, bs, (h, w)), n_maps - 1)
    labels, reps = orbits((h, w))
    values = np.empty(len(reps))
    s1 = np.arange(h * w + 1)
    total = s1[:, None] + np.arange(rest.size)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(total > 0, 1.0 / total, 0.0)
    for i, unit in enumerate(reps):
        joint = kept_sum_distribution(keep_prob, bs, (h, w), unit=unit)  # zero at s1 = 0
        values[i] = n_total * float(joint @ inverse @ rest) - 1.0
    return values[labels]


def ratio_bias_approx(keep_prob, block_size, feat_size, n_maps=1):
    """Second-order delta-method per-unit bias of ratio normalisation (H×W array) [approx].

    ``E[M_u/S] ≈ P_u/μ − Cov(M_u, S)/μ² + P_u Var S/μ³`` with ``μ = E S``, ``S`` over ``n_maps``
    maps (``Var S = n Var S_1``; ``Cov(M_u, S) = Cov(M_u, S_1)``), all exact from pair
    probabilities; ignores ``S = 0`` and third and higher moments. Its error against
    :func:`ratio_bias_exact` is measured in the tests.
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    p = keep_probabilities(keep_prob, bs, (h, w)).ravel()
    joint = pair_keep_probabilities(keep_prob, bs, (h, w))
    cov_u = joint.sum(axis=1) - p * p.sum()
    mu = n_maps * p.sum()
    var = n_maps * float(cov_u.sum())
    n_total = n_maps * h * w
    return (n_total * (p / mu - cov_u / mu**2 + p * var / mu**3) - 1.0).reshape(h, w)


def orbit_statistic_sd(keep_prob, block_size, feat_size, normalize, n_maps=1):
    """Sd of one draw of each orbit's statistic: the mean of ``y_u / x_u`` over the orbit's units
    and the ``n_maps`` maps of one call; one value per orbit of :func:`orbits`.

    ``normalize="keep_prob"``: exact, ``sqrt(Var M̄_O / n) / keep`` from pair probabilities.
    ``"ratio"``: a planning value for sample sizes (the t tests estimate the variance
    themselves), the larger of the exact sd of ``M̄_O N/E S`` (ΣM replaced by its mean) and the
    delta method's ``(N/μ) sd(M̄_O − P̄_O S/μ)`` [approx] — the latter alone is 0 when one block
    covers the map (ΣM is then all or nothing) and the former alone may fall short when ΣM and
    the orbit are weakly correlated.
    """
    bs, h, w = _geometry_iv(block_size, feat_size)
    labels, reps = orbits((h, w))
    lab = labels.ravel()
    avg = np.zeros((len(reps), h * w))
    avg[lab, np.arange(h * w)] = 1.0
    avg /= avg.sum(axis=1, keepdims=True)
    p = keep_probabilities(keep_prob, bs, (h, w)).ravel()
    cov = pair_keep_probabilities(keep_prob, bs, (h, w)) - np.outer(p, p)
    var_o = np.einsum("oi,ij,oj->o", avg, cov, avg)  # Var M̄_O of one map
    if normalize == "keep_prob":
        return np.sqrt(var_o / n_maps) / keep_prob
    mu1, pbar = p.sum(), avg @ p
    # Var of (M̄_O − P̄_O S/μ) with S over n maps: every term scales as 1/n
    lin = var_o - 2 * pbar / mu1 * (avg @ cov.sum(axis=1)) + (pbar / mu1) ** 2 * cov.sum()
    return h * w / mu1 * np.sqrt(np.maximum(var_o, lin) / n_maps)


# --- stochastic depth ---------------------------------------------------------------------
def stochastic_depth_bias(keep_prob, batch_size, mode="sample", normalize="keep_prob"):
    """Exact relative bias ``E[y_b]/x_b − 1`` of stochastic depth / drop path [derived].

    ``normalize="keep_prob"`` (``M/keep``, torchvision, timm) and ``"eval"`` (the paper: train
    ``M x``, eval ``keep · x``): 0. ``"ratio"`` (``M N/ΣM``, 0 when all are dropped): per sample
    ``−(1 − keep)^B`` (``Σ_k C(B−1,k−1) p^k q^{B−k} B/k = 1 − q^B``); one draw per batch:
    ``keep − 1`` — the ratio undoes the draw's rescale.
    """
    if normalize != "ratio":
        return 0.0
    return -(1.0 - keep_prob) ** batch_size if mode == "sample" else keep_prob - 1.0


def stochastic_depth_statistic_sd(keep_prob, batch_size, mode="sample", normalize="keep_prob"):
    """Exact sd of one draw of the batch mean of ``y_b / x_b`` (relative to the eval output).

    Per sample: ``keep_prob`` → ``sqrt((1−p)/(pB))``; ``ratio`` → the mean is ``1{K > 0}``:
    ``sqrt(q^B (1 − q^B))``; ``eval`` → ``sqrt((1−p)/(pB))`` as well (``K/(pB)`` against
    ``keep``). One draw per batch: ``sqrt((1−p)/p)``; ``ratio`` → ``sqrt(p(1−p))/p``.
    """
    p, b = keep_prob, batch_size
    if normalize == "ratio":
        if mode == "sample":
            q = (1.0 - p) ** b
            return math.sqrt(q * (1.0 - q))
        return math.sqrt(p * (1.0 - p)) / p
    return math.sqrt((1.0 - p) / (p * (b if mode == "sample" else 1)))
