"""The ``linear`` contract: dropout inside an op whose output is linear in the mask, verified
from outputs alone (docs/THEORY.md §8).

Attention with dropout on its probabilities, ``out = (D∘P/keep)V`` (times ``W_o`` in a
multi-head layer), dropout followed by a linear layer and DropConnect all have the form
``out = offset + Σ_k L_k m_k / keep_prob`` with ``m_k ~ Bernoulli(keep_prob)`` iid for fixed
inputs. A :class:`LinearOp` states that form (the op's *loadings* ``L``); :func:`verify_linear`
draws the op repeatedly and decides, each at a Bonferroni share of the false-fail rate, that

* ``E[out]`` equals the no-dropout output (a scale error — no rescale, rescaled twice, keep and
  drop confused — moves a GLS projection of the residuals),
* ``Σ (out − ref)² / Σ Var`` is 1 with ``Var[out_u] = (1 − keep)/keep · Σ_k L_uk²``,
* masks of successive calls, and of neighbouring groups / entries along named axes (batch rows,
  heads), are independent.

Units of one group share mask entries, so no statistic treats them as independent: each is a
linear or quadratic form in the mask whose exact null variance comes from the loadings
(:class:`~stats_dropout.verification.linear_checks.LinearModel`). Adapters for attention layers:
:mod:`stats_dropout.verification.adapters.attention`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import numpy as np

from stats_dropout._internal.rng import seeded_global_rngs
from stats_dropout._internal.threads import single_threaded_blas
from stats_dropout._internal.validation import (
    callable_iv,
    float_array_iv,
    keep_prob_iv,
    positive_int_iv,
    probability_iv,
    seed_iv,
)
from stats_dropout.inference.design import min_draws_for_mean_error
from stats_dropout.inference.stats import split_false_fail_rate
from stats_dropout.inference.verdicts import VerificationResult
from stats_dropout.verification.checks.common import failed, from_decision, passed, skipped
from stats_dropout.verification.evidence import call_user
from stats_dropout.verification.linear_checks import (
    LinearModel,
    decide_statistic,
    diagnose_linear,
    fixed_units_result,
    reference_result,
)

__all__ = ["LinearOp", "verify_linear", "dropout_then_linear", "dropconnect",
           "RELATIVE_BIAS", "VARIANCE_ERROR", "CORRELATION", "MIN_DRAWS", "MAX_DRAWS"]

#: Default smallest effects detected with probability 1 − false_pass_rate: a relative bias of the
#: mean, a relative error of the variance, a mask correlation between neighbours or calls.
RELATIVE_BIAS = 0.01
VARIANCE_ERROR = 0.1
CORRELATION = 0.1
MIN_DRAWS = 20
MAX_DRAWS = 2000
CHECK_NAMES = {"mean": "check_linear_mean", "variance": "check_linear_variance",
               "calls": "check_linear_independence_calls"}


@dataclasses.dataclass(frozen=True, eq=False)
class LinearOp:
    """An op whose output is linear in its dropout mask, for fixed inputs.

    ``out = offset + Σ_k loadings[..., k] · m_k / keep_prob`` with ``m_k ~ Bernoulli(keep_prob)``
    independent. The output's ``group_axes`` index independent groups of mask entries; units
    along the other output axes share their group's entries.

    Parameters
    ----------
    train : callable
        ``train() -> array``: one stochastic forward pass on the fixed inputs.
    loadings : array_like
        Shape ``(*out_shape, *entry_shape)``: ``loadings[u, k]`` is what output u gains from
        mask entry k of u's group at keep_prob = 1 (for attention ``P_ik V_kj``).
    keep_prob : float in (0, 1]
    reference : array_like, optional
        The no-dropout output from the op's own deterministic path (``dropout_p=0``, eval mode,
        ``deterministic=True``). Checked against ``offset + Σ_k loadings`` (exact up to rounding);
        default that sum.
    offset : array_like, default 0
        The part of the output that does not depend on the mask (an output bias).
    group_axes : tuple of int, default ()
        Output axes along which mask entries are independent groups (e.g. batch, head, query
        row of an attention output). ``()``: one group, always valid but costly for large ops.
    independent_axes : dict, optional
        ``name -> axis of loadings`` along which neighbouring mask entries must be independent:
        a group axis (neighbouring groups, e.g. ``"batch"``) or an entry axis (entries of one
        group, e.g. the head axis of a multi-head layer whose heads mix in W_o).
    reseed : callable, optional
        ``reseed(seed)`` sets the op's own randomness (a JAX key, a keras seed generator); numpy's
        and torch's global RNGs are seeded by :func:`verify_linear` itself.
    name : str
    rng_source : str, optional
        Where the randomness comes from (``"torch"``, ``"flax-rngs"``, ``"keras-seed"``); names the
        cause when masks repeat.
    dtype : dtype, optional
        The op's output dtype, for rounding dead bands (default the reference's).
    """

    train: Callable
    loadings: Any
    keep_prob: float
    reference: Any = None
    offset: Any = 0.0
    group_axes: tuple = ()
    independent_axes: dict = dataclasses.field(default_factory=dict)
    reseed: Callable | None = None
    name: str = "linear op"
    rng_source: str | None = None
    dtype: Any = None

    def __post_init__(self):
        set_ = object.__setattr__
        callable_iv(self.train, "train")
        callable_iv(self.reseed, "reseed", optional=True)
        set_(self, "keep_prob", keep_prob_iv(self.keep_prob))
        lo = float_array_iv(self.loadings, "loadings", allow_empty=False, allow_0d=False)
        set_(self, "loadings", lo)
        ref = None if self.reference is None else float_array_iv(self.reference, "reference", allow_empty=False)
        if ref is not None and (ref.ndim > lo.ndim or lo.shape[:ref.ndim] != ref.shape):
            raise ValueError(f"`loadings` must have shape (*reference.shape, *entry_shape); got loadings {lo.shape} "
                             f"and reference {ref.shape}")
        out_ndim = ref.ndim if ref is not None else lo.ndim - 1
        if out_ndim >= lo.ndim:
            raise ValueError("`loadings` must have at least one entry axis after the output axes; got shape "
                             f"{lo.shape}")
        off = float_array_iv(np.asarray(self.offset, dtype=np.float64) if np.ndim(self.offset) == 0 else self.offset,
                             "offset")
        try:
            np.broadcast_to(off, lo.shape[:out_ndim])
        except ValueError:
            raise ValueError(f"`offset` must broadcast to the output shape {lo.shape[:out_ndim]}; got shape "
                             f"{off.shape}") from None
        set_(self, "offset", off)
        axes = tuple(self.group_axes) if isinstance(self.group_axes, (tuple, list)) else (self.group_axes,)
        axes = tuple(_axis_iv(a, out_ndim, "group_axes") for a in axes)
        if len(set(axes)) != len(axes):
            raise ValueError(f"`group_axes` must not repeat an axis; got {self.group_axes!r}")
        set_(self, "group_axes", axes)
        named = {}
        for key, axis in dict(self.independent_axes or {}).items():
            a = _axis_iv(axis, lo.ndim, f"independent_axes[{key!r}]")
            if a < out_ndim and a not in axes:
                raise ValueError(f"`independent_axes[{key!r}]` = {axis!r} is a unit axis of the output (units of a "
                                 "group share its mask entries); name a group axis or an entry axis")
            if lo.shape[a] < 2:
                raise ValueError(f"`independent_axes[{key!r}]` = {axis!r} has length {lo.shape[a]}: no neighbours")
            named[str(key)] = a
        set_(self, "independent_axes", named)
        set_(self, "reference", ref if ref is not None else None)
        set_(self, "dtype", np.dtype(self.dtype) if self.dtype is not None else (ref.dtype if ref is not None
                                                                                  else np.dtype(np.float64)))

    @property
    def out_shape(self):
        """Shape of one train output."""
        return self.loadings.shape[:self.loadings.ndim - len(self.entry_shape)]

    @property
    def entry_shape(self):
        """Shape of one group's mask entries."""
        n = self.reference.ndim if self.reference is not None else self.loadings.ndim - 1
        return self.loadings.shape[n:]

    def model_reference(self):
        """``offset + Σ_k loadings``: the mean the description implies."""
        entries = tuple(range(len(self.out_shape), self.loadings.ndim))
        return np.asarray(self.offset, dtype=np.float64) + self.loadings.astype(np.float64).sum(axis=entries)


def _axis_iv(axis, ndim, name):
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ValueError(f"`{name}` must be an axis in [-{ndim}, {ndim}); got {axis!r}")
    return int(axis) % ndim


def _effect_iv(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a positive number; got {value!r}")
    return float(value)


def _verify_linear_iv(op, draws, seed, false_fail_rate, false_pass_rate, effects):
    if not isinstance(op, LinearOp):
        raise TypeError(f"`op` must be a LinearOp (see stats_dropout.adapters.attention); got {op!r}")
    if draws is not None and positive_int_iv(draws, "draws") < 3:
        raise ValueError(f"`draws` must be at least 3; got {draws!r}")
    return (seed_iv(seed), probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"),
            {k: _effect_iv(v, k) for k, v in effects.items()})


def _draws_for(model, alpha, beta, effects):
    """Draws the statistics need for their smallest detectable effects (z test, exact null sd).

    The need grows as the standardised effect (effect / one draw's sd) shrinks, so only the
    statistic with the smallest one is sized exactly (``min_draws_for_mean_error`` with
    ``null_sd_known``: the power of the max(sample, null) sd step); the others need no more.
    """
    def effect(name):
        return effects["relative_bias" if name == "mean" else "variance_error" if name == "variance"
                       else "correlation"]

    sized = {name: effect(name) / sd for name, (sd, _, _) in model.stats.items() if sd > 0}
    if not sized:
        return 2
    name = min(sized, key=sized.get)
    return min_draws_for_mean_error(effect(name), model.stats[name][0], false_fail_rate=alpha,
                                    false_pass_rate=beta, null_sd_known=True) + (name == "calls")


def _collect(op, model, draws, seed):
    """Per-draw statistics of ``draws`` train calls, the fixed units' worst excess, or a failure."""
    values = {name: [] for name in model.stats}
    slopes = {name: [] for name in model.stats}
    worst, previous = -np.inf, None
    fixed = model.fixed
    with seeded_global_rngs(seed, op.reseed):
        for t in range(draws):
            y, error = call_user(op.train)
            if error is None:
                y = np.asarray(y) if hasattr(y, "__array__") else y
                if not isinstance(y, np.ndarray) or y.shape != op.out_shape:
                    error = (f"returned {type(y).__name__}{getattr(y, 'shape', '')} instead of an array of shape "
                             f"{op.out_shape}")
                elif not np.all(np.isfinite(y)):
                    error = f"returned {int(np.size(y) - np.count_nonzero(np.isfinite(y)))} NaN or infinite value(s)"
            if error is not None:
                return None, None, f"call {t + 1} of {draws} {error}"
            e = model.to_groups(y) - model.ref
            if np.any(fixed):
                worst = max(worst, float(np.max(np.abs(e[fixed]) - model.eps[fixed])))
            got, slope, previous = model.statistics(e, previous)
            for name, v in got.items():
                values[name].append(v)
            for name, v in slope.items():
                slopes[name].append(v)
    adjusted, _ = model.adjusted(values, {k: v for k, v in slopes.items() if v})
    return adjusted, worst, None


def verify_linear(op, *, draws=None, seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3,
                  relative_bias=RELATIVE_BIAS, variance_error=VARIANCE_ERROR, correlation=CORRELATION):
    """Verify an op whose output is linear in its dropout mask (the ``linear`` contract).

    Parameters
    ----------
    op : LinearOp
        From an adapter (``stats_dropout.adapters.attention.from_sdpa`` and friends,
        :func:`dropout_then_linear`, :func:`dropconnect`) or built by hand.
    draws : int, optional
        Train calls; default computed from the effects below (at least MIN_DRAWS, at most MAX_DRAWS).
    seed : int, default 0
        Seeds numpy's and torch's global RNGs (restored afterwards) and ``op.reseed``.
    false_fail_rate : float, default 1e-6
        Probability that a correct op fails, in total (Bonferroni over the statistical checks).
    false_pass_rate : float, default 1e-3
        Probability of missing each effect below.
    relative_bias, variance_error, correlation : float
        Smallest relative error of the mean, relative error of the variance and mask correlation
        (between calls, or neighbours along an independent axis) the draws are sized to detect.

    Returns
    -------
    VerificationResult
        Contract ``"linear"``; one row per check with estimate, interval, p-value and smallest
        detectable effect.
    """
    seed, alpha_total, beta, effects = _verify_linear_iv(
        op, draws, seed, false_fail_rate, false_pass_rate,
        {"relative_bias": relative_bias, "variance_error": variance_error, "correlation": correlation})
    p = op.keep_prob
    ref = op.reference if op.reference is not None else op.model_reference()
    with single_threaded_blas():
        model = LinearModel(op.loadings, op.offset, ref, p, op.group_axes, op.independent_axes, op.dtype)
    alpha = split_false_fail_rate(alpha_total, max(len(model.stats), 1))
    need = _draws_for(model, alpha, beta, effects)
    warnings = []
    n = draws if draws is not None else max(MIN_DRAWS, need)
    if draws is None and n > MAX_DRAWS:
        warnings.append(f"the requested effects need {n} draws; capped at {MAX_DRAWS}, so the smallest detectable "
                        "effects are larger (see min_detectable_effect)")
        n = MAX_DRAWS
    values, worst, broken = _collect(op, model, n, seed)
    if p == 0.5:
        warnings.append("keep_prob = 0.5: a keep/drop swap (mask kept with probability 1 − keep_prob) is identical "
                        "in law to correct code here; verify at an asymmetric keep_prob such as 0.8 as well.")
    tag = f" (seed {seed}, {n} draws of {op.name})"
    results = [failed("check_linear_output", p, broken + tag) if broken else passed("check_linear_output", p)]
    if op.reference is not None:
        results.append(reference_result("check_linear_reference", model, p))
    if np.any(model.fixed):
        results.append(skipped("check_linear_fixed_units", p, f"not run: {broken}") if broken
                       else fixed_units_result("check_linear_fixed_units", model, p, worst, n))
    decisions = {} if broken else {name: decide_statistic(model, name, values[name], alpha, beta)
                                   for name in model.stats}
    repeated = "calls" in decisions and decisions["calls"].rejected and decisions["calls"].estimate > 0.5
    for name in model.stats:
        check = CHECK_NAMES.get(name, f"check_linear_independence_{name}")
        if broken:
            results.append(skipped(check, p, f"not run: {broken}"))
            continue
        hint = f"Reproduce with seed={seed}, draws={n} ({op.name})."
        if repeated and name != "calls":
            hint = ("Every call repeats (almost) one mask (check_linear_independence_calls), so this statistic "
                    "is one draw seen again and again: fix that first. " + hint)
        results.append(from_decision(check, p, decisions[name], hint))
    diagnosis = tuple(diagnose_linear(model, decisions, op.rng_source, n)) if any(
        r.failed for r in results) else ()
    not_applicable = []
    if p == 1:
        not_applicable.append("statistical checks: need keep_prob < 1 (at keep_prob = 1 every unit is checked "
                              "exactly by check_linear_fixed_units)")
    elif not op.independent_axes:
        not_applicable.append("check_linear_independence_<axis>: needs independent_axes")
    return VerificationResult(tuple(results), "linear", seed, alpha_total, beta, tuple(warnings), diagnosis,
                              convention=f"{op.name}: train() -> output of shape {op.out_shape}, {n} draws",
                              not_applicable=tuple(not_applicable), per_check_false_fail_rate=alpha)


# --- two linear ops built from numpy arrays -------------------------------------------------
def _linear_inputs_iv(x, weight, bias, keep_prob, scaling):
    x = float_array_iv(x, "x", allow_empty=False)
    w = float_array_iv(weight, "weight", allow_empty=False)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"`x` must be (batch, in_features) and `weight` (out_features, in_features); got "
                         f"{x.shape} and {w.shape}")
    b = 0.0 if bias is None else float_array_iv(bias, "bias")
    if np.ndim(b) and np.shape(b) != (w.shape[0],):
        raise ValueError(f"`bias` must have shape ({w.shape[0]},); got {np.shape(b)}")
    if scaling not in ("inverted", "standard"):
        raise ValueError(f"`scaling` must be 'inverted' or 'standard'; got {scaling!r}")
    p = keep_prob_iv(keep_prob)
    lo = w.astype(np.float64)[None, :, :] * x.astype(np.float64)[:, None, :]  # (batch, out, in)
    return (lo * p if scaling == "standard" else lo), b, p, np.result_type(x.dtype, w.dtype)


def dropout_then_linear(train, x, weight, bias=None, *, keep_prob, reference=None, scaling="inverted", name=None):
    """:class:`LinearOp` of ``y = dropout(x) Wᵀ + b`` on a fixed batch ``x``.

    ``train() -> y`` of shape (batch, out_features), e.g. ``lambda: model(x)`` for a torch
    ``nn.Sequential(nn.Dropout(p), nn.Linear(...))`` (numpy out). Loadings ``W_oi x_bi``; groups
    are batch rows (one mask row per example); neighbouring rows and features must be independent.
    ``scaling="standard"``: kept units are not rescaled at train (E y = p x Wᵀ + b).
    """
    lo, b, p, dtype = _linear_inputs_iv(x, weight, bias, keep_prob, scaling)
    return LinearOp(train, lo, p, reference=reference, offset=b, group_axes=(0,),
                    independent_axes={"batch": 0, "features": 2}, name=name or "dropout then linear",
                    dtype=dtype)


def dropconnect(train, x, weight, bias=None, *, keep_prob, per_example=False, reference=None,
                scaling="inverted", name=None):
    """:class:`LinearOp` of DropConnect ``y_bo = Σ_i M_oi W_oi x_bi / keep + b_o`` (Wan et al. 2013).

    ``per_example=False``: one weight mask per call, shared by the batch (groups: output rows;
    the examples of a batch are units sharing a row's mask). ``True``: a mask per example.
    ``scaling="standard"`` for the paper's form (no rescale at train, ``E u = p W v``).
    """
    lo, b, p, dtype = _linear_inputs_iv(x, weight, bias, keep_prob, scaling)
    groups, axes = ((0, 1), {"batch": 0, "outputs": 1, "inputs": 2}) if per_example else (
        (1,), {"outputs": 1, "inputs": 2})
    return LinearOp(train, lo, p, reference=reference, offset=b, group_axes=groups, independent_axes=axes,
                    name=name or "DropConnect", dtype=dtype)
