"""Training experiments of issue #4; public through :mod:`stats_dropout.studies.experiments`.

- :func:`mc_averaging`: Monte-Carlo model averaging vs weight scaling on scikit-learn's
  bundled 8×8 digits (Srivastava et al. [1]_ Fig. 11 in miniature).
- :func:`training_equivalence`: standard vs inverted dropout training with identical masks
  (THEORY.md §3).
- :func:`regression_dropout`: dropout in linear regression is an adaptive ridge ([1]_ §9.1).

References
----------
.. [1] N. Srivastava et al., "Dropout: a simple way to prevent neural networks from
   overfitting", JMLR 15 (2014) 1929-1958.
.. [2] D. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
.. [3] B. T. Polyak, A. B. Juditsky, "Acceleration of stochastic approximation by averaging",
   SIAM J. Control Optim. 30 (1992) 838-855.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from stats_dropout._internal.numerics import TWO_ROUTE_RTOL
from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import (
    draws_iv,
    keep_prob_iv,
    keep_probs_iv,
    positive_int_iv,
    probability_iv,
    seed_iv,
)
from stats_dropout.inference import stats
from stats_dropout.inference.montecarlo import RunningMoments, estimate_statistic_moments
from stats_dropout.reference import theory
from stats_dropout.reference.networks import init_mlp, to_inverted
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.reference.training import train_mlp

__all__ = ["mc_averaging", "PendingTable", "training_equivalence", "regression_dropout", "load_digits_split"]

DEFAULT_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


#: Floating-point dead band for comparisons with closed forms (``_internal.numerics``).
FP_RTOL = TWO_ROUTE_RTOL


def decide_with_dead_band(moments, expected, **kwargs):
    """:func:`stats_dropout.inference.stats.decide_mean_equal` with the floating-point dead band."""
    return stats.decide_mean_equal(moments, expected, rtol=FP_RTOL, atol=FP_RTOL, **kwargs)


def load_digits_split(seed=0, n_test=600):
    """scikit-learn's bundled 8×8 digits (no download), pixels scaled to [0, 1], split by ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # optional dependency: the `report` extra
        raise ImportError("mc_averaging needs scikit-learn (pip install 'stats-dropout[report]')") from exc
    data = load_digits()
    X = data.data / 16.0
    y = data.target.astype(np.int64)
    order = stream_rng(seed, "digits_split").permutation(len(y))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


# --- Monte-Carlo averaging vs weight scaling --------------------------------------------------
def _mc_averaging_iv(ks, n_seeds, seed, keep_prob, input_keep_prob, hidden, epochs, confidence_level):
    if np.ndim(ks) == 0 or len(ks) == 0:
        raise ValueError(f"`ks` must be a non-empty sequence of positive integers; got {ks!r}")
    ks = tuple(sorted({positive_int_iv(k, "ks") for k in ks}))
    n_seeds = positive_int_iv(n_seeds, "n_seeds")
    if n_seeds < 2:
        raise ValueError(f"`n_seeds` must be at least 2 (a CI across seeds); got {n_seeds}")
    return (ks, n_seeds, seed_iv(seed), keep_prob_iv(keep_prob),
            keep_prob_iv(input_keep_prob, "input_keep_prob"),
            positive_int_iv(hidden, "hidden"), positive_int_iv(epochs, "epochs"),
            probability_iv(confidence_level, "confidence_level"))


def _first_k_from_which(ks, holds):
    """Smallest k such that ``holds`` is true for it and every larger k (None if never)."""
    first = None
    for j in range(len(ks) - 1, -1, -1):
        if not holds[j]:
            break
        first = ks[j]
    return first


def _t_ci(values, level):
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / math.sqrt(n)
    low, high = stats.t_interval(mean, se, n - 1, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * sps.t.sf(np.abs(mean) / np.where(se > 0, se, 1.0), n - 1),
                     np.where(mean == 0, 1.0, 0.0))
    return mean, low, high, p


def _trained_network(s, X, y, keep_prob, input_keep_prob, hidden, epochs):
    """The 64-``hidden``-10 network of :func:`mc_averaging`'s replicate with seed ``s``, trained."""
    net = init_mlp([64, hidden, 10], ["relu", "softmax"], dropout=["inverted", "inverted"],
                   keep_prob=[input_keep_prob, keep_prob], seed=s)
    return train_mlp(net, X, y, optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs,
                     batch_size=32, seed=s)[0]


def _test_errors(net, s, X_test, y_test, ks):
    """``(weight-scaling error, MC error at each k)`` of the trained ``net`` (replicate seed ``s``)."""
    err_ws = np.mean(net.predict(X_test).argmax(axis=1) != y_test)
    rng = stream_rng(s, "mc_averaging")
    k_max = ks[-1]
    cum = np.zeros((k_max + 1,) + (X_test.shape[0], 10))
    block = 100  # passes per sample_train call: it fixes the order of the masks (the stream)
    for start in range(0, k_max, block):
        n = min(block, k_max - start)
        probs = net.sample_train(X_test, n, rng)
        cum[start + 1:start + 1 + n] = cum[start] + np.cumsum(probs, axis=0)
    err_mc = np.empty(len(ks))
    for j, k in enumerate(ks):
        g = k_max // k
        group_sums = cum[k:g * k + 1:k] - cum[0:(g - 1) * k + 1:k]
        err_mc[j] = np.mean(group_sums.argmax(axis=2) != y_test)
    return err_ws, err_mc


class PendingTable:
    """A table whose Monte-Carlo passes may still be running: :meth:`result` waits and builds it."""

    def __init__(self, futures, build, pool=None, bar=None):
        self._futures, self._build, self._pool, self._bar = futures, build, pool, bar

    def result(self):
        """The table (a replicate's error is raised here)."""
        try:
            return self._build([future.result() for future in self._futures])
        finally:
            self.close()

    def close(self):
        """Stop: passes not started are dropped, the ones under way finish (a replicate's worth)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._bar is not None:
            self._bar.close()


def _start_replicates(seeds, train, test, threads, progress, build):
    """:class:`PendingTable` of ``build([test(train(s), s) for s in seeds])``.

    Training is Python-bound (batches of 32): on threads it would only contend for the GIL
    (two at once took four times as long as one after the other), so the networks are trained
    here, one after the other, before this returns. With ``threads > 1`` each network's
    Monte-Carlo passes (numpy, which releases the GIL) then run on a pool of that many threads,
    started as soon as the network is trained; with 1 they run here too. Every replicate has
    its own seeds: where and in which order changes nothing. ``progress``: a tqdm bar over
    finished replicates.
    """
    import concurrent.futures

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc="training (mc_averaging)", unit="net", leave=None)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    futures = []
    try:
        for s in seeds:
            net = train(s)
            if pool is None:
                futures.append(concurrent.futures.Future())
                futures[-1].set_result(test(net, s))
            else:
                futures.append(pool.submit(test, net, s))
            if bar is not None:  # tqdm's update is thread-safe
                futures[-1].add_done_callback(lambda _: bar.update(1))
    except BaseException:  # Ctrl-C or an error while training: nothing more is started
        PendingTable(futures, build, pool, bar).close()
        raise
    return PendingTable(futures, build, pool, bar)


def mc_averaging(*, ks=DEFAULT_KS, n_seeds=4, seed=0, keep_prob=0.5, input_keep_prob=0.8, hidden=128,
                 epochs=25, confidence_level=0.95, equivalence_margin=0.01, progress=False, threads=1,
                 wait=True):
    """Test error of Monte-Carlo averaging over k passes vs weight scaling, on the digits.

    For each of ``n_seeds`` replicates (replicate r uses seed ``10000·seed + r`` for its
    initialisation, minibatch order and masks; the train/test split depends on ``seed`` only)
    a 64-``hidden``-10 ReLU/softmax MLP is trained
    with inverted dropout (``input_keep_prob`` on the pixels, ``keep_prob`` on the hidden
    layer; SGD with momentum 0.9) on 1197 of scikit-learn's bundled 8×8 digits and tested on
    the other 600. Weight scaling (for inverted dropout: the plain network) is compared with
    the average of the class probabilities of k stochastic passes, as in Srivastava et al.
    [1]_ Fig. 11 (MNIST: MC matches weight scaling at about k = 50). To reduce noise at small
    k, ``max(ks)`` passes are drawn once per replicate and split into ``max(ks) // k`` disjoint
    groups of k; the replicate's MC error is the mean over groups.

    Across replicates: mean errors with Student-t CIs (``n_seeds − 1`` df) and the paired
    difference ``error_mc − error_weight_scaling``. MC is *not worse* at k when the difference's
    CI reaches 0 or below (no significant excess error at ``confidence_level``);
    ``k_meets_weight_scaling`` is the smallest k from which MC stays not worse for every larger
    k in ``ks`` (also in ``DataFrame.attrs``). ``equivalent`` is the TOST decision
    (:func:`stats_dropout.inference.stats.decide_equivalence`, level ``1 − confidence_level``, t with
    ``n_seeds − 1`` df) that ``|error_mc − error_weight_scaling| < equivalence_margin`` (default
    one percentage point of test error);
    ``k_equivalent`` in ``attrs`` is the smallest k from which it holds for every larger k.

    ``progress=True`` shows a tqdm bar over the replicates on stderr (each trains a network:
    about 1 s at the defaults); it draws no random numbers and changes no result. ``threads``
    replicates run at a time (each on its own seeds, so the table does not depend on it).
    ``wait=False`` returns a :class:`PendingTable` as soon as the networks are trained (in this
    thread, one after the other: training is GIL-bound), their Monte-Carlo passes going on in the
    background with ``threads > 1``: its ``result()`` is the table. For a caller with other work
    meanwhile (the claims ledger).

    Returns
    -------
    DataFrame
        ``k, error_mc, error_mc_ci_low, error_mc_ci_high, error_weight_scaling,
        error_weight_scaling_ci_low, error_weight_scaling_ci_high, diff, diff_ci_low,
        diff_ci_high, diff_pvalue, not_worse, equivalent, equivalence_pvalue, equivalence_margin,
        k_meets_weight_scaling, n_groups, n_seeds,
        n_test, keep_prob, input_keep_prob, seed, confidence_level``.
    """
    ks, n_seeds, seed, p, p_in, hidden, epochs, level = _mc_averaging_iv(
        ks, n_seeds, seed, keep_prob, input_keep_prob, hidden, epochs, confidence_level)
    if not (isinstance(equivalence_margin, (int, float)) and equivalence_margin > 0):
        raise ValueError(f"`equivalence_margin` must be a positive number; got {equivalence_margin!r}")
    margin = float(equivalence_margin)
    threads = positive_int_iv(threads, "threads")
    X, y, X_test, y_test = load_digits_split(seed)
    train = functools.partial(_trained_network, X=X, y=y, keep_prob=p, input_keep_prob=p_in, hidden=hidden,
                              epochs=epochs)
    test = functools.partial(_test_errors, X_test=X_test, y_test=y_test, ks=ks)
    build = functools.partial(_mc_table, ks=ks, seed=seed, keep_prob=p, input_keep_prob=p_in, level=level,
                              margin=margin, n_test=len(y_test))
    pending = _start_replicates([10_000 * seed + r for r in range(n_seeds)], train, test, threads, progress, build)
    return pending.result() if wait else pending


def _mc_table(errors, *, ks, seed, keep_prob, input_keep_prob, level, margin, n_test):
    """:func:`mc_averaging`'s table from the replicates' ``(weight-scaling error, MC errors)``."""
    p, p_in, n_seeds = keep_prob, input_keep_prob, len(errors)
    err_ws = np.array([e[0] for e in errors])
    err_mc = np.array([e[1] for e in errors])
    k_max = ks[-1]
    mc_mean, mc_lo, mc_hi, _ = _t_ci(err_mc, level)
    ws_mean, ws_lo, ws_hi, _ = _t_ci(err_ws, level)
    d_mean, d_lo, d_hi, d_p = _t_ci(err_mc - err_ws[:, None], level)
    not_worse = d_lo <= 0
    diffs = err_mc - err_ws[:, None]
    tost = [stats.decide_equivalence(float(d_mean[j]), float(diffs[:, j].std(ddof=1) / math.sqrt(n_seeds)),
                                     margin, df=n_seeds - 1, alpha=1 - level) for j in range(len(ks))]
    equivalent = np.array([t.equivalent for t in tost])
    k_meets, k_equiv = _first_k_from_which(ks, not_worse), _first_k_from_which(ks, equivalent)
    out = pd.DataFrame({
        "k": ks, "error_mc": mc_mean, "error_mc_ci_low": mc_lo, "error_mc_ci_high": mc_hi,
        "error_weight_scaling": ws_mean, "error_weight_scaling_ci_low": ws_lo,
        "error_weight_scaling_ci_high": ws_hi, "diff": d_mean, "diff_ci_low": d_lo,
        "diff_ci_high": d_hi, "diff_pvalue": d_p, "not_worse": not_worse, "equivalent": equivalent,
        "equivalence_pvalue": [t.pvalue for t in tost], "equivalence_margin": margin,
        "k_meets_weight_scaling": k_meets if k_meets is not None else -1,
        "n_groups": [k_max // k for k in ks], "n_seeds": n_seeds, "n_test": n_test,
        "keep_prob": p, "input_keep_prob": p_in, "seed": seed, "confidence_level": level,
    })
    out.attrs["k_meets_weight_scaling"] = k_meets
    out.attrs["k_equivalent"] = k_equiv
    out.attrs["per_seed_error_weight_scaling"] = err_ws.tolist()
    return out


# --- standard vs inverted training ------------------------------------------------------------
def _blobs(seed, n=256, d=20, n_classes=3):
    rng = stream_rng(seed, "blobs")
    centres = rng.standard_normal((n_classes, d)) * 1.5
    y = rng.integers(0, n_classes, size=n)
    return centres[y] + rng.standard_normal((n, d)), y


def _trajectory_deviation(hist_std, hist_inv, net_std):
    """Max |W'_t/p − W_t| (consuming weights) and |b'_t − b_t| over the recorded steps."""
    worst = 0.0
    for ws, wi, bs, bi in zip(hist_std.weights, hist_inv.weights, hist_std.biases, hist_inv.biases):
        for layer, a, b in zip(net_std.layers, ws, wi):
            scale = layer.keep_prob if layer.dropout == "standard" else 1.0
            worst = max(worst, float(np.max(np.abs(b / scale - a))))
        for a, b in zip(bs, bi):
            worst = max(worst, float(np.max(np.abs(b - a))))
    return worst


def training_equivalence(*, keep_probs=(0.5, 0.8), seed=0, epochs=5, lr_sgd=0.05, lr_adam=0.005,
                         eps=1e-8):
    """Standard-dropout vs inverted-dropout training with identical masks (THEORY.md §3).

    A 20-32-3 ReLU/softmax MLP with standard dropout on its input and hidden layer is trained
    on seeded Gaussian blobs (256 examples, batches of 32). Its inverted twin starts at
    ``W' = pW`` (:func:`~stats_dropout.reference.networks.to_inverted`) and draws the same masks. With the
    mapping of §3 — SGD with or without momentum (0.9, unchanged): lr ``p²η`` on the consuming
    weights; Adam [2]_: lr ``pη`` and
    ``ε/p`` on them; biases unchanged — the two runs are the same model: ``W'_t = p W_t`` at
    every step (``max_abs_deviation`` compares ``W'_t/p`` with ``W_t`` and the biases) and equal
    eval predictions (``prediction_max_abs_deviation``), up to rounding. ``lr_mapping="same"``
    reruns the inverted twin with the standard run's lr and ε: it moves ``1/p²`` (SGD) or about
    ``1/p`` (Adam) faster and drifts. ``weight_ratio`` is the least-squares slope of the final
    inverted consuming weights on the standard ones (``p`` under the mapping: the learned
    weights come out downscaled by p).

    Returns
    -------
    DataFrame
        ``optimizer, lr_mapping, keep_prob, lr, weight_lr_scale, weight_eps_scale, n_steps,
        max_abs_deviation, max_rel_deviation, prediction_max_abs_deviation, weight_ratio,
        final_loss_standard, final_loss_inverted, seed``.
    """
    keep_probs = keep_probs_iv(keep_probs)
    seed = seed_iv(seed)
    epochs = positive_int_iv(epochs, "epochs")
    X, y = _blobs(seed)
    rows = []
    for opt, p in ((o, p) for o in ("sgd", "sgd+momentum", "adam") for p in keep_probs):
        sgd = opt != "adam"
        lr = lr_sgd if sgd else lr_adam
        net_std = init_mlp([20, 32, 3], ["relu", "softmax"], dropout=["standard", "standard"],
                           keep_prob=[p, p], seed=seed)
        net_inv = to_inverted(net_std)
        common = dict(optimizer="sgd" if sgd else "adam", momentum=0.9 if opt == "sgd+momentum" else 0.0,
                      lr=lr, epochs=epochs, batch_size=32, eps=eps, seed=seed, record_every=1)
        trained_std, hist_std = train_mlp(net_std, X, y, **common)
        lr_scale = [p**2 if sgd else p for _ in net_std.layers]
        eps_scale = [1.0 if sgd else 1.0 / p for _ in net_std.layers]
        for mapping in ("mapped", "same"):
            kw = dict(weight_lr_scale=lr_scale, weight_eps_scale=eps_scale) if mapping == "mapped" else {}
            trained_inv, hist_inv = train_mlp(net_inv, X, y, **common, **kw)
            dev = _trajectory_deviation(hist_std, hist_inv, net_std)
            w_std = np.concatenate([l.weights.ravel() for l in trained_std.layers])
            w_inv = np.concatenate([l.weights.ravel() for l in trained_inv.layers])
            pred_dev = float(np.max(np.abs(trained_std.predict(X) - trained_inv.predict(X))))
            rows.append({
                "optimizer": opt, "lr_mapping": mapping, "keep_prob": p, "lr": lr,
                "weight_lr_scale": lr_scale[0] if mapping == "mapped" else 1.0,
                "weight_eps_scale": eps_scale[0] if mapping == "mapped" else 1.0,
                "n_steps": hist_std.steps, "max_abs_deviation": dev,
                "max_rel_deviation": dev / float(np.max(np.abs(w_std))),
                "prediction_max_abs_deviation": pred_dev,
                "weight_ratio": float(w_inv @ w_std / (w_std @ w_std)),
                "final_loss_standard": float(np.mean(hist_std.loss[-8:])),
                "final_loss_inverted": float(np.mean(hist_inv.loss[-8:])),
                "seed": seed,
            })
    return pd.DataFrame(rows)


# --- dropout in linear regression: an adaptive ridge ------------------------------------------
def _regression_data(seed, n=100, d=5):
    rng = stream_rng(seed, "regression_data")
    scales = np.array([1.0, 2.0, 0.5, 1.5, 1.0, 3.0, 0.7, 1.2])[:d] if d <= 8 else np.ones(d)
    X = rng.standard_normal((n, d)) * scales
    w_true = rng.standard_normal(d)
    return X, X @ w_true + 0.5 * rng.standard_normal(n)


def _loss_statistic(y, w):
    def statistic(samples):  # samples: (n, rows, d) dropped design matrices R∘X
        resid = y - np.asarray(samples) @ w
        return np.sum(resid**2, axis=1)[:, None]
    return statistic


def regression_dropout(*, keep_probs=(0.5, 0.8), seed=0, draws=20_000, n_seeds=20, steps=4000,
                       false_fail_rate=1e-6):
    """Dropout in linear regression: expected loss and the dropout-SGD minimiser ([1]_ §9.1).

    Data: 100 rows, 5 features of unequal scales, ``y = X w + 0.5 ε``. For each keep_prob:

    ``expected_loss``
        MC mean over ``draws`` input masks ``R`` of ``‖y − (R∘X)w‖²`` (standard dropout, at
        ``w = w_LS``) vs ``‖y − pXw‖² + p(1−p)‖Γw‖²``
        (``theory.linear_regression_dropout_loss``).
    ``weights_vs_adaptive_ridge`` / ``weights_vs_least_squares``
        Full-batch dropout SGD (a fresh mask per step, lr ``1/λ_max`` of the expected Hessian,
        burn-in until the initial error has shrunk by ``e^-30``, then Polyak averaging [3]_)
        in ``n_seeds`` independent replicates. The test-time weights ``p w̄`` are tested
        element-wise (Holm) against ``w~ = (XᵀX + (1−p)/p diag XᵀX)⁻¹ Xᵀy``
        (``theory.adaptive_ridge_solution``) and against least squares. The test is exact in
        expectation: the stochastic gradient is affine in ``w`` with a mask independent of
        ``w_t``, so ``E w_t`` follows the deterministic gradient recursion to the minimiser.

    Returns
    -------
    DataFrame
        ``keep_prob, quantity, estimate, expected, ci_low, ci_high, pvalue, rejected,
        min_detectable_effect, distance, n, seed, confidence_level`` (``distance``: Euclidean
        distance of ``p w̄`` to the target; ``estimate``/``expected``: the loss, or the element
        with the smallest p-value).
    """
    keep_probs = keep_probs_iv(keep_probs)
    seed = seed_iv(seed)
    draws = draws_iv(draws, "draws")
    n_seeds = positive_int_iv(n_seeds, "n_seeds")
    steps = positive_int_iv(steps, "steps")
    if n_seeds < 2 or draws < 2:
        raise ValueError(f"`n_seeds` and `draws` must be at least 2; got {n_seeds}, {draws}")
    alpha = stats.split_false_fail_rate(false_fail_rate, 3 * len(keep_probs))
    X, y = _regression_data(seed)
    n, d = X.shape
    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    rows = []
    for i, p in enumerate(keep_probs):
        # expected dropout loss at the least-squares weights
        layer = get_scheme("standard").bind(p)
        mom = estimate_statistic_moments(layer, X, _loss_statistic(y, w_ls), draws=draws, seed=seed + 31 * i)
        expected = theory.linear_regression_dropout_loss(X, y, w_ls, p)
        dec = decide_with_dead_band(mom, expected, false_fail_rate=alpha, property="E dropout loss")
        rows.append({"keep_prob": p, "quantity": "expected_loss", "estimate": dec.estimate,
                     "expected": expected, "ci_low": dec.ci_low, "ci_high": dec.ci_high,
                     "pvalue": dec.pvalue, "rejected": dec.rejected,
                     "min_detectable_effect": dec.min_detectable_effect, "distance": np.nan,
                     "n": draws, "seed": seed, "confidence_level": 1 - alpha})
        # dropout SGD on L(w) = ‖y − (R∘X)w‖² / n, all replicates at once
        gram = X.T @ X
        hessian = 2.0 / n * (p**2 * gram + p * (1 - p) * np.diag(np.diag(gram)))
        eig = np.linalg.eigvalsh(hessian)
        lr = 1.0 / eig[-1]
        burn_in = math.ceil(30.0 / (lr * eig[0]))
        rng = stream_rng(seed, "regression_dropout", i)
        w = np.zeros((n_seeds, d))
        total = np.zeros_like(w)
        for t in range(burn_in + steps):
            Xr = X * get_scheme("standard").sample_train(np.ones_like(X), p, n_seeds, rng)
            resid = y - np.einsum("snd,sd->sn", Xr, w)
            w = w + lr * 2.0 / n * np.einsum("snd,sn->sd", Xr, resid)
            if t >= burn_in:
                total += w
        test_w = p * total / steps
        moments = RunningMoments.from_samples(test_w).to_result(seed)
        w_ridge = theory.adaptive_ridge_solution(X, y, p)
        for quantity, target in (("weights_vs_adaptive_ridge", w_ridge), ("weights_vs_least_squares", w_ls)):
            dec = decide_with_dead_band(moments, target, false_fail_rate=alpha,
                                          property=f"dropout-SGD test weights equal {quantity[12:]}")
            rows.append({"keep_prob": p, "quantity": quantity, "estimate": dec.estimate,
                         "expected": dec.expected, "ci_low": dec.ci_low, "ci_high": dec.ci_high,
                         "pvalue": dec.pvalue, "rejected": dec.rejected,
                         "min_detectable_effect": dec.min_detectable_effect,
                         "distance": float(np.linalg.norm(moments.mean - target)),
                         "n": n_seeds, "seed": seed, "confidence_level": 1 - alpha})
    return pd.DataFrame(rows)
