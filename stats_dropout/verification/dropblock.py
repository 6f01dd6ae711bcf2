"""DropBlock verified from its outputs: the rescale, the block structure and the keep rate of γ.

DropBlock [1]_ (Algorithm 1 and the authors' reference code) draws block *seeds* as
``Bernoulli(γ)`` on the ``(H − bs + 1) × (W − bs + 1)`` positions whose ``bs × bs`` block lies
inside the map, drops every unit a seeded block covers, and rescales the kept units by the
ratio ``numel / ΣM`` (or by ``1 / keep_prob``). Its keep rate comes from Eq. 1,

    γ = (1 − keep_prob) / bs² · HW / ((H − bs + 1)(W − bs + 1)),

and a unit covered by ``c_u`` block positions is kept with probability ``(1 − γ)^{c_u}``
(:mod:`stats_dropout.reference.structured_theory`; THEORY.md §7). Blocks overlap, so the expected
kept fraction ``mean_u (1 − γ)^{c_u}`` is a little above ``keep_prob``; this is what a correct
implementation keeps, and a wrong γ (the ``/bs²`` or the valid-region factor forgotten) moves it.

:func:`verify_dropblock` calls the implementation on a probe of ones of the site's shape (every
unit observable; the masks of DropBlock do not depend on the input) and runs three checks:

- ``check_dropblock_rescale`` (exact): in every call the kept outputs are one value, the ratio
  ``numel/ΣM`` (over the call or per sample) or ``1/keep_prob``, the same rule in every call, to
  4 ulps of float32 (or of the probe's dtype if coarser);
- ``check_dropblock_blocks`` (exact): every dropped region is a union of whole ``bs × bs``
  blocks inside the map (a morphological opening leaves it unchanged);
- ``check_dropblock_keep_rate`` (statistical): the mean dropped fraction over ``T`` calls equals
  ``1 − mean_u (1 − γ)^{c_u}``, a z test with the exact null variance of the kept count
  (``kept_sum_moments``, maps independent); ``T`` is sized so that a relative error
  ``relative_effect`` of the dropped fraction is caught with probability ``1 − false_pass_rate``.

References
----------
.. [1] G. Ghiasi, T.-Y. Lin, Q. V. Le, "DropBlock: A regularization method for convolutional
   networks", NeurIPS 2018.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from stats_dropout._internal.timeouts import guarded_call
from stats_dropout._internal.validation import callable_iv, draws_iv, positive_int_iv, probability_iv, seed_iv
from stats_dropout.inference.design import min_draws_for_mean_error
from stats_dropout.inference.results import ExactComparison, TrainMoments
from stats_dropout.inference.stats import decide_mean_equal
from stats_dropout.inference.verdicts import CheckResult, VerificationResult
from stats_dropout.reference import structured_theory as st

__all__ = ["verify_dropblock", "dropblock_draws", "opening_is_identity"]

CHECKS = ("check_dropblock_rescale", "check_dropblock_blocks", "check_dropblock_keep_rate")
#: Relative tolerance of the exact rescale check, in units of the output dtype's epsilon.
RESCALE_ULPS = 4


def _null_sd(keep_prob, block_size, hw, n_maps):
    """sd of one call's dropped fraction divided by its expectation (maps independent)."""
    _, var_s = st.kept_sum_moments(keep_prob, block_size, hw)
    kept = st.kept_fraction(keep_prob, block_size, hw)
    return math.sqrt(var_s / n_maps) / (hw[0] * hw[1]) / (1.0 - kept)


def dropblock_draws(shape, keep_prob, block_size, *, relative_effect=0.1, false_fail_rate=1e-6,
                    false_pass_rate=1e-3):
    """Calls ``T`` of :func:`verify_dropblock`'s keep-rate check for a site of ``shape``.

    ``T`` is the smallest number of calls whose z test (null sd known, ``max`` step included) has
    power ``1 − false_pass_rate`` at a relative error ``relative_effect`` of the dropped fraction
    (:func:`~stats_dropout.inference.design.min_draws_for_mean_error`), at least 2.
    """
    shape = tuple(shape)
    hw = shape[-2:]
    sd = _null_sd(keep_prob, block_size, hw, int(np.prod(shape[:-2], dtype=np.int64)) or 1)
    return max(2, min_draws_for_mean_error(relative_effect, sd, false_fail_rate=false_fail_rate,
                                           false_pass_rate=false_pass_rate, null_sd_known=True))


def opening_is_identity(dropped, block_size):
    """True for each map (``(..., H, W)`` bool) whose dropped units are a union of whole blocks.

    A unit's block windows: the ``bs × bs`` windows inside the map all of whose units are dropped
    (2-D cumulative sums); the opening is the union of those windows. It equals ``dropped``
    exactly when every dropped unit lies in such a window.
    """
    bs = int(block_size)
    d = np.asarray(dropped, dtype=bool)
    *lead, h, w = d.shape
    c = np.zeros((*lead, h + 1, w + 1), dtype=np.int64)
    c[..., 1:, 1:] = d.cumsum(-2).cumsum(-1)
    full = (c[..., bs:, bs:] - c[..., :-bs, bs:] - c[..., bs:, :-bs] + c[..., :-bs, :-bs]) == bs * bs
    opened = np.zeros_like(d)
    for i in range(bs):
        for j in range(bs):
            opened[..., i:i + h - bs + 1, j:j + w - bs + 1] |= full
    return np.all(opened == d, axis=(-2, -1))


def _scale_candidates(kept, keep_prob):
    """The scales a correct DropBlock may apply: ratio over the call, ratio per sample, 1/keep."""
    n = kept.size
    total = int(kept.sum())
    per_sample = kept.reshape(kept.shape[0], -1).sum(axis=1) if kept.ndim > 2 else None
    out = {"1/keep_prob": np.float64(1.0 / keep_prob)}
    if total:
        out["numel/sum(mask)"] = np.float64(n / total)
    if per_sample is not None and per_sample.all():
        size = kept[0].size
        out["numel/sum(mask) per sample"] = (size / per_sample).reshape((-1,) + (1,) * (kept.ndim - 1))
    return out


def _rescales_of(y, kept, keep_prob, tol):
    """The names of the candidate scales every kept unit of this call matches (a set; may be empty).

    All matches, not the first: a call that keeps exactly ``keep_prob · numel`` units has
    ``numel/ΣM = 1/keep_prob``, and must not make a ratio rescale look inconsistent.
    """
    out = set()
    for name, scale in _scale_candidates(kept, keep_prob).items():
        target = np.broadcast_to(scale, y.shape)[kept]
        if np.all(np.abs(y[kept] - target) <= tol * np.abs(target)):
            out.add(name)
    return out


def _failed(name, message, keep_prob, decision=None):
    return CheckResult(name, "failed", message, decision, keep_prob)


def verify_dropblock(train, shape, keep_prob, block_size, *, relative_effect=0.1, seed=0,
                     false_fail_rate=1e-6, false_pass_rate=1e-3, draws=None, dtype=np.float64):
    """Verify a DropBlock implementation at one keep probability and block size.

    Parameters
    ----------
    train : callable
        ``train(x) -> y``, one train-mode call on a float array ``x`` of ``shape``
        ``(..., H, W)`` (a torch module is wrapped by the caller; its RNG seeded there).
    shape : tuple of int
        At least 2-D; the last two axes are the map, the others index independent maps.
    keep_prob : float in (0, 1)
        The keep probability the implementation was built with.
    block_size : int
        ``bs ≤ min(H, W)``.
    relative_effect : float, default 0.1
        Relative error of the dropped fraction the keep-rate check detects with probability
        ``1 − false_pass_rate``.
    seed : int
        Recorded in the result (the caller seeds the implementation's RNG).
    false_fail_rate, false_pass_rate : float
        The keep-rate check's α (the only statistical check) and β.
    draws : int, optional
        Calls; default :func:`dropblock_draws`.
    dtype : float dtype
        Dtype of the probe of ones.

    Returns
    -------
    VerificationResult
        ``contract="dropblock"``; ``checks`` are the three checks of the module docstring. An
        exception from ``train`` (anything but KeyboardInterrupt), a call over the enclosing time
        limit, or output that is not a float array of ``shape`` with finite values fails every
        check with its message.
    """
    train = callable_iv(train, "train")
    try:
        shape = tuple(operator.index(v) for v in shape)
    except TypeError:
        raise TypeError(f"`shape` must be a tuple of ints; got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"`shape` must be (..., H, W) with at least 2 positive axes; got {shape!r}")
    keep_prob = probability_iv(keep_prob, "keep_prob")
    bs = positive_int_iv(block_size, "block_size")
    hw = shape[-2:]
    if bs > min(hw):
        raise ValueError(f"`block_size` must be ≤ min(H, W) = {min(hw)}; got {block_size!r}")
    alpha = probability_iv(false_fail_rate, "false_fail_rate")
    beta = probability_iv(false_pass_rate, "false_pass_rate")
    seed = seed_iv(seed)
    relative_effect = probability_iv(relative_effect, "relative_effect")
    n_maps = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    n = dropblock_draws(shape, keep_prob, bs, relative_effect=relative_effect, false_fail_rate=alpha,
                        false_pass_rate=beta) if draws is None else draws_iv(draws, "draws")
    x = np.ones(shape, dtype=dtype)
    # A scale computed in float32 (timm's numel / mask.float().sum()) is correct on a float64
    # probe too: the tolerance is never below float32's. One kept unit more or less changes
    # numel/ΣM by 1/ΣM relative, far above it for maps of fewer than ~10^6 units.
    tol = RESCALE_ULPS * max(float(np.finfo(dtype).eps), float(np.finfo(np.float32).eps))
    kept_expected = st.kept_fraction(keep_prob, bs, hw)
    ratios, scales, broken_maps, bad_scale = [], None, 0, None
    for call in range(n):
        try:  # under the enclosing time limit, if any (verify_model's timeout=, --timeout)
            y = np.asarray(guarded_call(f"call {call + 1} of the DropBlock site", train, x.copy()), dtype=np.float64)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 — the user's implementation failing is a finding
            message = f"call {call + 1} raised {type(exc).__name__}: {exc}"
            return _result([_failed(c, message, keep_prob) for c in CHECKS], seed, alpha, beta)
        if y.shape != shape or not np.all(np.isfinite(y)):
            message = (f"call {call + 1} returned shape {y.shape} for input {shape}" if y.shape != shape
                       else f"call {call + 1} returned non-finite values")
            return _result([_failed(c, message, keep_prob) for c in CHECKS], seed, alpha, beta)
        kept = y != 0
        if kept.any():
            names = _rescales_of(y, kept, keep_prob, tol)
            if not names and bad_scale is None:
                values = np.unique(y[kept])
                bad_scale = (call + 1, values[:3], int(kept.sum()))
            if names:  # the rescales consistent with every call so far
                scales = names if scales is None else scales & names
        broken_maps += int(np.sum(~opening_is_identity(~kept, bs)))
        ratios.append((1.0 - kept.mean()) / (1.0 - kept_expected))
    checks = [_rescale_check(bad_scale, scales, keep_prob, shape, tol),
              _blocks_check(broken_maps, n * n_maps, bs, keep_prob),
              _keep_rate_check(np.asarray(ratios), keep_prob, bs, hw, n_maps, kept_expected, alpha, beta, seed)]
    return _result(checks, seed, alpha, beta)


def _result(checks, seed, alpha, beta):
    return VerificationResult(checks=tuple(checks), contract="dropblock", seed=seed, false_fail_rate=alpha,
                              false_pass_rate=beta)


def _rescale_check(bad_scale, scales, keep_prob, shape, tol):
    name = "check_dropblock_rescale"
    if bad_scale is not None:
        call, values, count = bad_scale
        size = int(np.prod(shape))
        return _failed(name, f"call {call}: kept units of a probe of ones are {values.tolist()}, not one of "
                             f"numel/sum(mask) = {size}/{count} = {size / count:.6g}, the same per sample, or "
                             f"1/keep_prob = {1 / keep_prob:.6g} (a missing or wrong rescale)", keep_prob,
                       ExactComparison(property="scale of kept units", method="exact, every call",
                                       estimate=float(values[0]), expected=1.0 / keep_prob,
                                       tolerance=tol, n=1, rejected=True))
    if scales is not None and not scales:
        return _failed(name, "the rescale changes between calls: no one of numel/sum(mask), the same per "
                             "sample, or 1/keep_prob fits every call", keep_prob)
    return CheckResult(name, "passed", "", None, keep_prob)


def _blocks_check(broken, total, bs, keep_prob):
    name = "check_dropblock_blocks"
    if broken:
        return _failed(name, f"{broken} of {total} maps drop units outside any whole {bs}×{bs} block inside "
                             "the map (units dropped one by one, a wrong block size, or blocks cut at the "
                             "edges)", keep_prob)
    return CheckResult(name, "passed", "", None, keep_prob)


def _keep_rate_check(ratios, keep_prob, bs, hw, n_maps, kept_expected, alpha, beta, seed):
    name = "check_dropblock_keep_rate"
    sd = _null_sd(keep_prob, bs, hw, n_maps)
    moments = TrainMoments(np.array([ratios.mean()]), np.array([ratios.var(ddof=1) if ratios.size > 1 else 0.0]),
                           int(ratios.size), seed)
    gamma = st.seed_rate(keep_prob, bs, hw)
    d = decide_mean_equal(moments, 1.0, false_fail_rate=alpha, false_pass_rate=beta, null_sd=sd, scale=1.0,
                          property=f"dropped fraction / its expectation 1 − {kept_expected:.5f} (γ = {gamma:.5g}, "
                                   f"Ghiasi et al. 2018 Eq. 1)")
    if d.rejected:
        measured = 1.0 - d.estimate * (1.0 - kept_expected)
        return _failed(name, f"kept fraction {measured:.5f}, expected {kept_expected:.5f} from γ = {gamma:.5g} "
                             f"(block {bs} on a {hw[0]}×{hw[1]} map at keep {keep_prob:g}); dropped fraction "
                             f"off by {d.estimate - 1:+.2%}, p = {d.pvalue:.2g}: a wrong seed rate γ", keep_prob, d)
    return CheckResult(name, "passed", "", d, keep_prob)
