"""The verification battery: ``check_*`` functions, :func:`iter_checks`, :func:`verify_dropout`.

Each check is one property and one decision. Statistical checks state their false-fail rate (the
battery's total ``false_fail_rate``, Bonferroni-split over every statistical check at every keep
probability) and the smallest error they detect with probability ``1 − false_pass_rate``. The
number of draws is computed from two targets, per keep probability:

* a keep-rate error of ``KEEP_RATE_ERROR`` (0.002 absolute), exact binomial test;
* a mean error of ``RELATIVE_MEAN_ERROR`` (0.5 % relative), pooled over units.

Exact checks (shapes, eval path, kept-unit scale, mask sharing, input mutation) have no false
fails beyond floating-point rounding, for which they allow 8 units in the last place of the
output dtype.

References
----------
.. [1] scikit-learn's ``utils/estimator_checks.py`` (checks as plain functions, a generator of
   applicable checks, ``parametrize_with_checks``) inspired the structure.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import warnings

import numpy as np
from scipy import stats as sps

from ._contracts import CONTRACTS, ContractModel
from ._parametrize import parametrize_with_checks  # noqa: F401 (DESIGN.md: the battery's pytest entry point)
from ._evidence import Collector
from ._rng import seeded_global_rngs
from ._validation import choice_iv, float_array_iv, keep_prob_iv, probability_iv, seed_iv
from .diagnosis import diagnose
from .montecarlo import RunningMoments
from .results import CheckResult, Decision, TrainMoments, VerificationResult
from .scheme_checks import count_scheme_decisions, scheme_probe, verify_scheme  # noqa: F401 (re-export)
from .stats import (
    decide_dispersion,
    decide_keep_rate,
    decide_mean_equal,
    min_draws_for_mean_error,
    min_trials_for_keep_rate_error,
)

__all__ = [
    "Implementation",
    "verify_dropout",
    "iter_checks",
    "parametrize_with_checks",
    "KEEP_RATE_ERROR",
    "RELATIVE_MEAN_ERROR",
    "verify_scheme",
]

#: Default power targets (issue: "detect a keep-rate error of 0.002 and a mean error of 0.5 %").
KEEP_RATE_ERROR = 0.002
RELATIVE_MEAN_ERROR = 0.005
#: Keep probabilities added for implementations that take keep_prob: asymmetric, so a keep/drop
#: swap (identical in law at 0.5) is visible.
ASYMMETRIC_KEEP_PROBS = (0.8, 0.3)
MIN_DRAWS = 10
NORMAL_UNITS = 1000
MAX_DRAWS = 2_000
DEFAULT_PROBE_SHAPE = (256, 1024)
INVALID_KEEP_PROBS = (0.0, 1.5, -0.25, float("nan"))


def probe_shape(shared_axes):
    """Default probe shape: 2^18 elements, shared axes of length 2.

    Keep-rate power depends on the number of *independent* mask entries, so shared axes are
    kept short and the free axes long: (256, 1024) without sharing, (256, 256, 2, 2) for
    channel dropout, (2, 131072) for one mask per batch, (256, 2, 512) for a mask shared over
    time (batch, time, features), (65536, 4) for one mask per sample.
    """
    if shared_axes == "spatial":
        return (256, 256, 2, 2)
    if shared_axes == "non_batch":
        return (65536, 4)
    if not shared_axes:
        return DEFAULT_PROBE_SHAPE
    axes = tuple(shared_axes)
    ndim = max(2, max(a if a >= 0 else -a - 1 for a in axes) + 2) if any(a > 0 for a in axes) else 2
    resolved = {a % ndim for a in axes}
    free = [i for i in range(ndim) if i not in resolved]
    shape = [2] * ndim
    budget = 2**18 // 2 ** len(resolved)
    for j, i in enumerate(free):
        shape[i] = budget if j == len(free) - 1 else 256
        budget //= 256 if j < len(free) - 1 else 1
    return tuple(shape)


# --- the implementation under test ----------------------------------------------------------
def _takes_keep_prob(fn):
    """True if ``fn`` can be called as ``fn(x, keep_prob)``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(q.kind == q.VAR_POSITIONAL for q in params)


@dataclasses.dataclass(frozen=True)
class Implementation:
    """A dropout implementation and what it claims.

    Parameters
    ----------
    train : callable
        ``f(x)`` or ``f(x, keep_prob)`` (detected from the signature); one stochastic train
        pass drawing its own randomness (numpy's global RNG, its own Generator, torch).
    eval : callable, optional
        ``f(x)`` or ``f(x, keep_prob)``: the inference path.
    keep_prob : float or tuple of float
        Keep probabilities to test. For ``f(x, keep_prob)`` the battery adds values from
        ``ASYMMETRIC_KEEP_PROBS`` (0.8, then 0.3) until at least two are tested and one is not
        0.5; a plain ``f(x)`` is tested at the single value it implements.
    contract : {"inverted", "standard", "gaussian", "moments"}
    shared_axes : tuple of int or {"spatial", "non_batch"}
        Axes along which one mask is broadcast (axis 0 is the batch).
    backward : callable, optional
        ``backward(x, upstream, keep_prob) -> (y, grad)`` from one forward call.
    validates_keep_prob : bool
        Whether the implementation promises to reject keep_prob outside (0, 1].
    example_input : array_like, optional
        Probe; default a standardised N(0, 1) array of :func:`probe_shape` (256, 1024) without
        shared axes).
    name : str, optional
    """

    train: object
    eval: object = None
    keep_prob: object = 0.8
    contract: str = "inverted"
    shared_axes: object = ()
    backward: object = None
    validates_keep_prob: bool = True
    example_input: object = dataclasses.field(default=None, compare=False, hash=False)
    name: str | None = None

    @property
    def takes_keep_prob(self):
        return _takes_keep_prob(self.train)

    @property
    def label(self):
        return self.name or getattr(self.train, "__name__", type(self.train).__name__)

    def keep_probs(self):
        """The keep probabilities the battery tests, in order."""
        given = (self.keep_prob,) if np.ndim(self.keep_prob) == 0 else tuple(self.keep_prob)
        values = [keep_prob_iv(p) for p in given]
        if self.takes_keep_prob:
            # At least two values, at least one asymmetric (≠ 0.5), so a keep/drop swap shows.
            for extra in ASYMMETRIC_KEEP_PROBS:
                if len(values) >= 2 and any(v != 0.5 for v in values):
                    break
                if extra not in values:
                    values.append(extra)
        return tuple(values)

    def bound_train(self, keep_prob):
        """``x -> y`` at ``keep_prob``."""
        return (lambda x: self.train(x, keep_prob)) if self.takes_keep_prob else self.train

    def bound_eval(self, keep_prob):
        if self.eval is None:
            return None
        return (lambda x: self.eval(x, keep_prob)) if _takes_keep_prob(self.eval) else self.eval


def _implementation_iv(impl):
    if not isinstance(impl, Implementation):
        raise TypeError(f"`implementation` must be a stats_dropout.Implementation; got {impl!r}")
    if not callable(impl.train):
        raise TypeError(f"`train` must be callable; got {impl.train!r}")
    if impl.eval is not None and not callable(impl.eval):
        raise TypeError(f"`eval` must be callable or None; got {impl.eval!r}")
    if impl.backward is not None and not callable(impl.backward):
        raise TypeError(f"`backward` must be callable or None; got {impl.backward!r}")
    choice_iv(impl.contract, "contract", CONTRACTS)
    impl.keep_probs()
    return impl


# --- the run: evidence per keep_prob, error budget ------------------------------------------
STATISTICAL_CHECKS = (
    "check_keep_rate", "check_keep_rate_per_position", "check_keep_rate_per_channel",
    "check_keep_rate_vs_input", "check_mean", "check_mean_per_unit", "check_variance",
    "check_row_dispersion", "check_independence_units", "check_independence_rows",
    "check_independence_calls", "check_noise_distribution", "check_output_moments",
)


class _Run:
    """Shared state of one battery: probe, error budget, lazily collected evidence."""

    def __init__(self, impl, *, seed, false_fail_rate, false_pass_rate):
        self.impl = impl
        self.seed = seed
        self.false_fail_rate = false_fail_rate
        self.beta = false_pass_rate
        self.keep_probs = impl.keep_probs()
        self.contract = ContractModel.of(impl.contract, impl.shared_axes)
        self.x = self._probe()
        self.alpha = false_fail_rate / (len(STATISTICAL_CHECKS) * len(self.keep_probs))
        # A pooled statistic sums ≥ NORMAL_UNITS independent terms per draw: normal by the CLT,
        # so its null variance (known from the contract) gives a z test; else a t test.
        self.normal_draws = self.x.size >= NORMAL_UNITS
        self._evidence = {}

    def null_sd(self, p, which):
        """Sd of one draw's pooled statistic under the contract (None: use a t test)."""
        if not self.normal_draws:
            return None
        c, x = self.contract, self.x
        mu, var = c.mean(x, p), c.var(x, p)
        if which == "mean":
            return math.sqrt(c.scheme.linear_statistic_var(mu / np.sum(mu**2), x, p))
        return math.sqrt(c.scheme.squared_deviation_var(np.full(x.shape, 1 / np.sum(var)), x, p))

    def _probe(self):
        impl = self.impl
        if impl.example_input is not None:
            x = float_array_iv(impl.example_input, "example_input", allow_empty=False, allow_0d=False)
            return np.array(x, copy=True)
        return scheme_probe(probe_shape(impl.shared_axes), seed=self.seed)

    def draws_for(self, p):
        """Draws needed at ``p`` for the keep-rate and mean targets (see module docstring)."""
        c, x = self.contract, self.x
        need = MIN_DRAWS
        if p < 1:
            mu = c.mean(x, p)
            sd = math.sqrt(c.scheme.linear_statistic_var(mu / np.sum(mu**2), x, p))
            if sd > 0:
                need = max(need, min_draws_for_mean_error(
                    RELATIVE_MEAN_ERROR, sd, false_fail_rate=self.alpha, false_pass_rate=self.beta,
                    null_sd_known=self.normal_draws))
            if c.has_masks:
                entries = int(np.prod(c.scheme.mask_shape(x.shape)))
                trials = min_trials_for_keep_rate_error(
                    p, min(KEEP_RATE_ERROR, p / 2, (1 - p) / 2),
                    false_fail_rate=self.alpha, false_pass_rate=self.beta)
                need = max(need, math.ceil(trials / entries))
        return min(need, MAX_DRAWS)

    def evidence(self, p):
        if p not in self._evidence:
            k = self.keep_probs.index(p)
            seed_k = int(np.random.SeedSequence(self.seed, spawn_key=(k,)).generate_state(1)[0])
            collector = Collector(self.impl.bound_train(p), self.x, p, self.contract)
            self._evidence[p] = collector.collect(self.draws_for(p), seed_k)
        return self._evidence[p]


# --- helpers for check results --------------------------------------------------------------
def _name(check, p):
    return f"{check}[keep_prob={p:g}]"


def _passed(check, p, decision=None, message=""):
    return CheckResult(_name(check, p), "passed", message, decision, p)


def _skipped(check, p, reason):
    return CheckResult(_name(check, p), "skipped", reason, None, p)


def _failed(check, p, message, decision=None):
    return CheckResult(_name(check, p), "failed", message, decision, p)


def _from_decision(check, p, decision, hint=""):
    if not decision.rejected:
        return _passed(check, p, decision)
    msg = (f"{decision.property}: estimate {decision.estimate:.6g} (CI at confidence "
           f"1 − {decision.false_fail_rate:.2g}: [{decision.ci_low:.6g}, {decision.ci_high:.6g}]) "
           f"differs from {decision.expected:.6g} "
           f"(p = {decision.pvalue:.3g}; false-fail rate {decision.false_fail_rate:.2g}; smallest "
           f"detectable {decision.effect_units} error {decision.min_detectable_effect:.3g} at "
           f"false-pass rate {decision.false_pass_rate:.2g}).")
    return _failed(check, p, msg + (" " + hint if hint else ""), decision)


def _exact_decision(prop, estimate, expected, n, rejected, mde=0.0):
    return Decision(prop, "exact comparison (8 ulp tolerance)", float(estimate), float(expected),
                    float(estimate), float(estimate), 0.0 if rejected else 1.0, 0.0, 0.0,
                    float(mde), int(n), bool(rejected), "relative")


def _unusable(run, check, p, need_masks=False):
    """A skip reason when the evidence cannot support ``check``, else None."""
    ev = run.evidence(p)
    if ev.broken:
        return f"not run: {ev.broken} (see check_output_shape_dtype / check_finite_output)"
    if need_masks and not run.contract.has_masks:
        return f"not applicable: the {run.contract.name!r} contract has no keep/drop mask"
    return None


def _diagnosis(run, p):
    ev = run.evidence(p)
    rate = rate_ci = scale = None
    if not ev.broken and ev.has_masks and ev.trials:
        d = decide_keep_rate(ev.kept, ev.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta)
        rate, rate_ci = d.estimate, (d.ci_low, d.ci_high)
    if ev.scale_ratios:
        scale = float(np.median(ev.scale_ratios))
    eval_ratio = _eval_ratio(run, p)
    return diagnose(keep_prob=p, contract=run.contract.name, rate=rate, rate_ci=rate_ci, scale=scale,
                    only_zero_one=ev.only_zero_one and ev.draws > 0 and not np.all(np.isin(run.x, (0, 1))),
                    identical_calls=ev.draws > 2 and ev.identical_consecutive == ev.draws - 1
                    and p < 1, eval_ratio=eval_ratio)


def _eval_ratio(run, p):
    fn = run.impl.bound_eval(p)
    if fn is None:
        return None
    try:
        z = np.asarray(fn(run.x.copy()), dtype=np.float64)
    except Exception:  # noqa: BLE001 — reported by check_eval_contract
        return None
    if z.shape != run.x.shape:
        return None
    x = run.x.astype(np.float64)
    nz = x != 0
    ratios = z[nz] / x[nz]
    return float(np.median(ratios)) if ratios.size and np.ptp(ratios) < 1e-6 * max(abs(np.median(ratios)), 1) else None


def _hint(run, p):
    found = _diagnosis(run, p)
    if not found:
        return ""
    text = "Likely cause: " + "; ".join(found)
    return text if text.endswith(("?", ".")) else text + "."


# --- exact checks ---------------------------------------------------------------------------
def check_output_shape_dtype(run, p):
    """The train output has the input's shape and dtype, and train does not raise."""
    ev = run.evidence(p)
    if ev.error:
        return _failed("check_output_shape_dtype", p, f"train raised {ev.error}.")
    if ev.shape_error:
        return _failed("check_output_shape_dtype", p, ev.shape_error + ".")
    if ev.dtype_error:
        return _failed("check_output_shape_dtype", p, ev.dtype_error + ": dropout should preserve the dtype.")
    return _passed("check_output_shape_dtype", p)


def check_finite_output(run, p):
    """A finite input gives a finite train output."""
    ev = run.evidence(p)
    if ev.error or ev.shape_error:
        return _skipped("check_finite_output", p, "not run: train failed (see check_output_shape_dtype)")
    if ev.nonfinite:
        return _failed("check_finite_output", p,
                       f"train returned {ev.nonfinite} NaN or infinite value(s) for a finite input "
                       f"(keep_prob={p:g}). Is there a division by zero or by a drop probability of 0?")
    return _passed("check_finite_output", p)


def check_input_unchanged(run, p):
    """Neither train nor eval modifies its input in place."""
    ev = run.evidence(p)
    culprits = ["train"] if ev.mutated else []
    fn = run.impl.bound_eval(p)
    if fn is not None:
        xin = run.x.copy()
        try:
            fn(xin)
        except Exception:  # noqa: BLE001 — reported by check_eval_contract
            pass
        if not np.array_equal(xin, run.x, equal_nan=True):
            culprits.append("eval")
    if culprits:
        return _failed("check_input_unchanged", p,
                       f"{' and '.join(culprits)} modified its input in place (e.g. `x *= mask` or "
                       "`x /= keep_prob`); work on a copy: `out = x * mask / keep_prob`.")
    return _passed("check_input_unchanged", p)


def _call_eval(run, p):
    fn = run.impl.bound_eval(p)
    z1 = fn(run.x.copy())
    z2 = fn(run.x.copy())
    return np.asarray(z1), np.asarray(z2)


def check_eval_deterministic(run, p):
    """Two eval calls on the same input return identical outputs."""
    if run.impl.eval is None:
        return _skipped("check_eval_deterministic", p, "no eval path given")
    try:
        z1, z2 = _call_eval(run, p)
    except Exception as exc:  # noqa: BLE001
        return _failed("check_eval_deterministic", p, f"eval raised {type(exc).__name__}: {exc}.")
    if z1.shape != z2.shape or not np.array_equal(z1, z2, equal_nan=True):
        return _failed("check_eval_deterministic", p,
                       "eval returned different outputs for the same input: dropout must be off at "
                       "test time (no random mask in the eval path).")
    return _passed("check_eval_deterministic", p)


def check_eval_contract(run, p):
    """The eval output equals the contract's: identity (inverted, gaussian, moments) or ``p·x``."""
    if run.impl.eval is None:
        return _skipped("check_eval_contract", p, "no eval path given")
    try:
        z, _ = _call_eval(run, p)
    except Exception as exc:  # noqa: BLE001
        return _failed("check_eval_contract", p, f"eval raised {type(exc).__name__}: {exc}.")
    x = run.x.astype(np.float64)
    expected = run.contract.eval_value(x, p)
    if z.shape != x.shape:
        return _failed("check_eval_contract", p, f"eval returned shape {z.shape} for input shape {x.shape}.")
    z = z.astype(np.float64)
    tol = 8 * np.finfo(run.x.dtype).eps
    err = np.abs(z - expected)
    bad = err > tol * np.abs(expected) + np.finfo(np.float64).tiny
    nz = x != 0
    ratio = float(np.median(z[nz] / x[nz])) if np.any(nz) else np.nan
    want = "x" if run.contract.name != "standard" else f"keep_prob·x = {p:g}·x"
    decision = _exact_decision("eval output / input", ratio, p if run.contract.name == "standard" else 1.0,
                               x.size, bool(bad.any()), tol)
    if bad.any():
        hint = _hint(run, p)
        return _failed("check_eval_contract", p,
                       f"eval output should be {want} for the {run.contract.name!r} contract, but "
                       f"{int(bad.sum())} of {x.size} units differ (median eval/input ratio "
                       f"{ratio:.6g}). " + hint, decision)
    return _passed("check_eval_contract", p, decision)


def check_kept_scale(run, p):
    """Every kept unit equals the contract's kept value (``x/p`` for inverted) exactly."""
    if (reason := _unusable(run, "check_kept_scale", p, need_masks=True)):
        return _skipped("check_kept_scale", p, reason)
    ev = run.evidence(p)
    if ev.scale_checked == 0:
        return _skipped("check_kept_scale", p, "no kept unit observed")
    expected = run.contract.expected_scale(p)
    measured = float(np.median(ev.scale_ratios))
    decision = _exact_decision("kept-unit scale", measured, expected, ev.scale_checked,
                               ev.scale_violations > 0, 8 * np.finfo(run.x.dtype).eps)
    if ev.scale_violations:
        x0, y0, e0 = ev.scale_worst
        return _failed("check_kept_scale", p,
                       f"kept units are scaled by {measured:.6g}, expected {expected:.6g} "
                       f"({'1/keep_prob' if run.contract.name == 'inverted' else 'the contract'}): "
                       f"{ev.scale_violations} of {ev.scale_checked} kept units differ (e.g. x = {x0:.6g} "
                       f"gave {y0:.6g}, expected {e0:.6g}). " + _hint(run, p), decision)
    return _passed("check_kept_scale", p, decision)


def check_sharing_pattern(run, p):
    """Masks are constant along ``shared_axes`` (exactly), when the implementation shares them."""
    if not run.contract.shared_axes:
        return _skipped("check_sharing_pattern", p, "no shared_axes declared (independence checks apply)")
    if (reason := _unusable(run, "check_sharing_pattern", p, need_masks=True)):
        return _skipped("check_sharing_pattern", p, reason)
    ev = run.evidence(p)
    if ev.sharing_violations:
        return _failed("check_sharing_pattern", p,
                       f"masks are not shared along shared_axes={run.contract.shared_axes!r}: "
                       f"{ev.sharing_violations} units disagree with the mask at index 0 of those axes. "
                       "Draw one mask of shape with 1 on the shared axes and broadcast it.")
    return _passed("check_sharing_pattern", p)


def check_keep_prob_one(run, p):
    """``train(x, 1.0)`` returns x unchanged (keep everything, rescale by 1)."""
    name = "check_keep_prob_one"
    if not run.impl.takes_keep_prob:
        return _skipped(name, p, "train does not take keep_prob")
    try:
        y = np.asarray(run.impl.train(run.x.copy(), 1.0), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        return _failed(name, p, f"train(x, keep_prob=1) raised {type(exc).__name__}: {exc}.")
    x = run.x.astype(np.float64)
    if y.shape != x.shape or not np.allclose(y, x, rtol=8 * np.finfo(run.x.dtype).eps, atol=0):
        return _failed(name, p, "train(x, keep_prob=1) must return x unchanged (nothing dropped, "
                                "scale 1/1); it did not.")
    return _passed(name, p)


def check_invalid_keep_prob(run, p):
    """``train(x, keep_prob)`` rejects keep_prob outside (0, 1] with an exception."""
    name = "check_invalid_keep_prob"
    if not run.impl.takes_keep_prob:
        return _skipped(name, p, "train does not take keep_prob")
    if not run.impl.validates_keep_prob:
        return _skipped(name, p, "the implementation declares that it does not validate keep_prob")
    accepted = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a division by zero here is the finding, not a test error
        with np.errstate(all="ignore"):
            for bad in INVALID_KEEP_PROBS:
                try:
                    run.impl.train(run.x[:2].copy(), bad)
                except Exception:  # noqa: BLE001 — any exception is a rejection
                    continue
                accepted.append(bad)
    if accepted:
        return _failed(name, p, f"train accepted keep_prob = {', '.join(map(repr, accepted))} without "
                                "raising; raise ValueError for keep_prob outside (0, 1].")
    return _passed(name, p)


def check_backward_mask(run, p):
    """The gradient equals upstream × the forward's mask × the kept-unit scale."""
    name = "check_backward_mask"
    if run.impl.backward is None:
        return _skipped(name, p, "no backward function given")
    if not run.contract.has_masks or run.contract.noise != "bernoulli":
        return _skipped(name, p, "backward check implemented for Bernoulli masks only")
    rng = np.random.default_rng([run.seed, 99])
    x = run.x
    up = rng.standard_normal(x.shape).astype(x.dtype)
    scale = run.contract.expected_scale(p)
    tol = 8 * np.finfo(x.dtype).eps
    for _ in range(3):
        try:
            y, grad = run.impl.backward(x.copy(), up.copy(), p)
        except Exception as exc:  # noqa: BLE001
            return _failed(name, p, f"backward raised {type(exc).__name__}: {exc}.")
        y = np.asarray(y, dtype=np.float64)
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != x.shape:
            return _failed(name, p, f"gradient has shape {grad.shape}; expected {x.shape}.")
        kept = y != 0
        expected = np.where(kept, up * scale, 0.0)
        bad = np.abs(grad - expected) > tol * np.abs(expected) + 1e-300
        if bad.any():
            unmasked = np.allclose(grad, up * scale, rtol=tol) or np.allclose(grad, up, rtol=tol)
            masked_unscaled = np.allclose(grad, np.where(kept, up, 0.0), rtol=tol)
            if unmasked:
                why = ("the gradient is not masked: backward ignores the forward's mask (was the "
                       "pre-dropout activation cached, or the mask not stored?)")
            elif masked_unscaled and scale != 1:
                why = "the gradient is masked but not divided by keep_prob"
            else:
                why = "the gradient does not use the same mask as the forward pass"
            return _failed(name, p, f"{int(bad.sum())} of {x.size} gradient entries differ from "
                                    f"upstream × mask × {scale:.6g}: {why}.")
    return _passed(name, p)


# --- statistical checks ---------------------------------------------------------------------
def check_keep_rate(run, p):
    """The fraction of kept units equals keep_prob (exact binomial, Clopper–Pearson)."""
    name = "check_keep_rate"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    d = decide_keep_rate(ev.kept, ev.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="fraction of kept units equals keep_prob")
    return _from_decision(name, p, d, _hint(run, p))


def check_keep_rate_per_position(run, p):
    """The keep rate equals keep_prob at every non-batch position (Holm over positions)."""
    name = "check_keep_rate_per_position"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    counts, trials = ev.entry_counts.sum(axis=0), ev.entry_trials.sum(axis=0)
    ok = trials > 0
    if ok.sum() < 2:
        return _skipped(name, p, "fewer than 2 positions with observable masks")
    d = decide_keep_rate(counts[ok], trials[ok], p, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="keep rate equals keep_prob at every position")
    hint = "Some positions are kept more or less often than others: is the mask drawn for one row and reused, or indexed wrongly?"
    return _from_decision(name, p, d, hint)


def check_keep_rate_per_channel(run, p):
    """The keep rate equals keep_prob in every channel (axis 1; Holm over channels)."""
    name = "check_keep_rate_per_channel"
    if run.x.ndim < 3:
        return _skipped(name, p, "input has fewer than 3 dimensions: channels are positions here")
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    other = tuple(a for a in range(ev.entry_counts.ndim) if a != 1)
    d = decide_keep_rate(ev.entry_counts.sum(axis=other), ev.entry_trials.sum(axis=other), p,
                         false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="keep rate equals keep_prob in every channel")
    return _from_decision(name, p, d)


def check_keep_rate_vs_input(run, p):
    """The keep rate does not depend on the input's sign or magnitude (chi-square homogeneity)."""
    name = "check_keep_rate_vs_input"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    if run.contract.shared_axes:
        return _skipped(name, p, "masks are shared across inputs of different values")
    used = ev.group_trials > 0
    if used.sum() < 2 or p == 1:
        return _skipped(name, p, "fewer than two input groups (e.g. an all-positive probe) or keep_prob = 1")
    kept, trials = ev.group_kept[used], ev.group_trials[used]
    table = np.vstack([kept, trials - kept])
    if np.any(table.sum(axis=1) == 0):
        stat, pvalue = 0.0, 1.0
    else:
        stat, pvalue = sps.chi2_contingency(table, correction=False)[:2]
    rates = kept / trials
    g = len(rates)
    pooled = kept.sum() / trials.sum()
    # Smallest difference between two groups' rates seen with power 1 − β (normal approx).
    z = sps.norm.isf(run.alpha / 2) + sps.norm.isf(run.beta)
    mde = float(z * np.sqrt(pooled * (1 - pooled) * (1 / trials.min() + 1 / trials.min())))
    d = Decision("keep rate is the same for every input group", f"chi-square homogeneity over {g} groups",
                 float(rates.max() - rates.min()), 0.0, float(rates.min()), float(rates.max()),
                 float(pvalue), run.alpha, run.beta, mde, int(trials.sum()), bool(pvalue < run.alpha),
                 details={"groups": dict(zip(np.array(ev.group_labels)[used], rates.round(5)))})
    hint = ("Keep rates by input group: " + ", ".join(f"{k}: {v:.4f}" for k, v in d.details["groups"].items())
            + ". The mask must not depend on the input's values (e.g. comparing x or x*rand with keep_prob).")
    return _from_decision(name, p, d, hint)


def _pooled_moments(ev, column):
    s = ev.statistics()[:, column : column + 1]
    return RunningMoments.from_samples(s).to_result(None)


def check_mean(run, p):
    """``E[train(x)]`` equals the contract's mean, pooled over units (0.5 % relative target)."""
    name = "check_mean"
    if (reason := _unusable(run, name, p)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    mom = _pooled_moments(ev, 0)
    d = decide_mean_equal(mom, 1.0, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=1.0,
                          rtol=8 * np.finfo(run.x.dtype).eps, null_sd=run.null_sd(p, "mean"),
                          property="train-time mean / expected mean (projection ratio)")
    want = "the eval output" if run.contract.name != "moments" else "the alpha-dropout mean"
    hint = f"E[train(x)] should equal {want} unit by unit. " + _hint(run, p)
    return _from_decision(name, p, d, hint.strip())


def check_mean_per_unit(run, p):
    """``E[train(x)]`` equals the contract's mean at every unit (Holm over units).

    With a keep/drop mask the kept values are exact (check_kept_scale), so a unit's mean is
    right iff its keep count is ``Binomial(draws, p)``: an exact binomial test per unit, valid
    for any number of draws (a t test is not, when a unit happens to be kept every time).
    With Gaussian noise the unit's mean is exactly normal with the contract's variance: a z test.
    """
    name = "check_mean_per_unit"
    if (reason := _unusable(run, name, p)):
        return _skipped(name, p, reason)
    if p == 1:
        return _skipped(name, p, "keep_prob = 1: covered by check_keep_prob_one")
    ev = run.evidence(p)
    prop = "train-time mean equals the expected mean at every unit"
    if run.contract.has_masks:
        ok = ev.entry_trials > 0
        d = decide_keep_rate(ev.entry_counts[ok], ev.entry_trials[ok], p, false_fail_rate=run.alpha,
                             false_pass_rate=run.beta, property=prop + " (per-unit keep counts)")
    else:
        mom = ev.moments.to_result(None)
        x = run.x.astype(np.float64)
        mu, var = run.contract.mean(x, p), run.contract.var(x, p)
        known = TrainMoments(mom.mean, var * ev.draws / max(ev.draws, 1), ev.draws)
        d = decide_mean_equal(known, mu, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=mu,
                              rtol=8 * np.finfo(run.x.dtype).eps, atol=1e-300, property=prop)
    return _from_decision(name, p, d, ("Some units are biased. " + _hint(run, p)).strip())


def check_variance(run, p):
    """Pooled ``Σ (y − μ)² / Σ σ²`` equals 1: the spread matches theory (THEORY.md §1, §5)."""
    name = "check_variance"
    if (reason := _unusable(run, name, p)):
        return _skipped(name, p, reason)
    if p == 1:
        return _skipped(name, p, "keep_prob = 1: zero variance, covered by check_keep_prob_one")
    ev = run.evidence(p)
    mom = _pooled_moments(ev, 1)
    d = decide_mean_equal(mom, 1.0, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=1.0,
                          rtol=64 * np.finfo(run.x.dtype).eps, null_sd=run.null_sd(p, "variance"),
                          property="train variance / theoretical variance")
    hint = ""
    if run.contract.noise == "gaussian":
        hint = ("The multiplicative noise must have standard deviation sqrt((1 − keep_prob)/keep_prob) = "
                f"{math.sqrt((1 - p) / p):.4f}; estimated ratio {d.estimate:.4f} of the expected variance.")
    return _from_decision(name, p, d, hint or _hint(run, p))


def check_row_dispersion(run, p):
    """Kept counts per row are Binomial (a mask that keeps a fixed number per row fails)."""
    name = "check_row_dispersion"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    if p == 1 or ev.row_size < 10 or not ev.row_counts:
        return _skipped(name, p, "fewer than 10 independent mask entries per row, or keep_prob = 1")
    counts = np.concatenate(ev.row_counts)
    d = decide_dispersion(counts, ev.row_size, None, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                          property="variance of kept counts per row / binomial variance")
    hint = ("Dispersion far below 1 means every row keeps (almost) the same number of units: "
            "units must be kept independently (e.g. rand(...) < keep_prob), not by sampling a fixed "
            "count. Far above 1 means rows are kept or dropped together.")
    return _from_decision(name, p, d, hint)


def _correlation_decision(prop, sums, alpha, beta):
    r = sums.correlation()
    n = sums.n
    if not np.isfinite(r):
        r = 0.0 if n == 0 else (1.0 if sums.sab == sums.sa == sums.sb else 0.0)
    z = r * math.sqrt(max(n, 1))
    pvalue = float(2 * sps.norm.sf(abs(z)))
    half = sps.norm.isf(alpha / 2) / math.sqrt(max(n, 1))
    mde = float((sps.norm.isf(alpha / 2) + sps.norm.isf(beta)) / math.sqrt(max(n, 1)))
    return Decision(prop, "phi correlation z test", float(r), 0.0, float(r - half), float(r + half), pvalue,
                    alpha, beta, mde, int(n), bool(pvalue < alpha))


def check_independence_units(run, p):
    """Masks of neighbouring units (along each non-batch axis) are uncorrelated."""
    name = "check_independence_units"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    axes = [a for a in ev.axis_pairs if a != 0 and ev.axis_pairs[a].n]
    if not axes or p == 1:
        return _skipped(name, p, "no pair of independent units along a non-batch axis, or keep_prob = 1")
    alpha = run.alpha / len(axes)
    decisions = [_correlation_decision(f"correlation of neighbouring masks along axis {a}",
                                       ev.axis_pairs[a], alpha, run.beta) for a in axes]
    d = min(decisions, key=lambda q: q.pvalue)
    return _from_decision(name, p, d, "Units must be dropped independently; a mask shared along an axis "
                                      "must be declared with shared_axes.")


def check_independence_rows(run, p):
    """Masks of neighbouring batch rows are uncorrelated (unless the batch axis is shared)."""
    name = "check_independence_rows"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    if 0 not in ev.axis_pairs or p == 1:
        return _skipped(name, p, "batch axis shared by design, a single row, or keep_prob = 1")
    d = _correlation_decision("correlation of masks of neighbouring batch rows", ev.axis_pairs[0],
                              run.alpha, run.beta)
    return _from_decision(name, p, d, "Every example in a batch must get its own mask (per-sample "
                                      "dropout); if one mask per batch is intended, declare shared_axes=(0,).")


def check_independence_calls(run, p):
    """Masks of successive calls are uncorrelated (a reseeded RNG repeats them)."""
    name = "check_independence_calls"
    if (reason := _unusable(run, name, p, need_masks=True)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    if p == 1:
        return _skipped(name, p, "keep_prob = 1: nothing is dropped")
    d = _correlation_decision("correlation of masks of successive calls", ev.call_pairs, run.alpha, run.beta)
    if d.rejected and ev.identical_consecutive == ev.draws - 1:
        return _failed(name, p, f"every call drops the same units: all {ev.draws} successive calls "
                                "produced identical masks. The function reseeds the random number "
                                "generator (e.g. np.random.seed(1) at the top of the forward pass); "
                                "seed once, outside the training loop.", d)
    return _from_decision(name, p, d, "Successive calls must draw fresh masks.")


def check_noise_distribution(run, p):
    """Gaussian contract: the multiplicative noise ``y/x`` is N(1, (1 − p)/p) (Kolmogorov–Smirnov)."""
    name = "check_noise_distribution"
    if run.contract.noise != "gaussian":
        return _skipped(name, p, f"not applicable to the {run.contract.name!r} contract")
    if (reason := _unusable(run, name, p)):
        return _skipped(name, p, reason)
    if p == 1:
        return _skipped(name, p, "keep_prob = 1: no noise")
    ev = run.evidence(p)
    r = ev.noise_sample
    sd = math.sqrt((1 - p) / p)
    res = sps.ks_1samp(r, sps.norm(1.0, sd).cdf)
    n = r.size
    # Smallest KS distance detected: critical value plus the power margin (asymptotic bounds).
    mde = float(math.sqrt(-math.log(run.alpha / 2) / (2 * n)) + math.sqrt(-math.log(run.beta) / (2 * n)))
    d = Decision("noise y/x follows N(1, (1 − keep_prob)/keep_prob)", "Kolmogorov–Smirnov",
                 float(res.statistic), 0.0, 0.0, float(res.statistic), float(res.pvalue), run.alpha, run.beta,
                 mde, int(n), bool(res.pvalue < run.alpha))
    return _from_decision(name, p, d, f"The noise should be normal with mean 1 and sd {sd:.4f}.")


def check_output_moments(run, p):
    """Moments contract: the output's mean and mean square match alpha dropout's (0 and 1 for N(0,1))."""
    name = "check_output_moments"
    if run.contract.name != "moments":
        return _skipped(name, p, f"not applicable to the {run.contract.name!r} contract")
    if (reason := _unusable(run, name, p)):
        return _skipped(name, p, reason)
    ev = run.evidence(p)
    x = run.x.astype(np.float64)
    mu, var = run.contract.mean(x, p), run.contract.var(x, p)
    targets = (float(np.mean(mu)), float(np.mean(var + mu**2)))
    decisions = []
    for column, target, label in ((2, targets[0], "output mean"), (3, targets[1], "output mean square")):
        mom = _pooled_moments(ev, column)
        decisions.append(decide_mean_equal(mom, target, false_fail_rate=run.alpha / 2, false_pass_rate=run.beta,
                                           rtol=64 * np.finfo(run.x.dtype).eps, atol=1e-12, property=label))
    d = min(decisions, key=lambda q: q.pvalue)
    return _from_decision(name, p, d, "Alpha dropout must keep the mean 0 and variance 1 of N(0, 1) "
                                      "inputs: dropped units take a·α' + b, kept units a·x + b.")


EXACT_CHECKS = (
    check_output_shape_dtype, check_finite_output, check_input_unchanged, check_eval_deterministic,
    check_eval_contract, check_kept_scale, check_sharing_pattern, check_keep_prob_one,
    check_invalid_keep_prob, check_backward_mask,
)
STATISTICAL = (
    check_keep_rate, check_keep_rate_per_position, check_keep_rate_per_channel, check_keep_rate_vs_input,
    check_mean, check_mean_per_unit, check_variance, check_row_dispersion, check_independence_units,
    check_independence_rows, check_independence_calls, check_noise_distribution, check_output_moments,
)
assert tuple(f.__name__ for f in STATISTICAL) == STATISTICAL_CHECKS
_ONCE = {"check_keep_prob_one", "check_invalid_keep_prob"}  # do not depend on the tested keep_prob


# --- entry points -------------------------------------------------------------------------
def _run_check(fn, run, p):
    try:
        return fn(run, p)
    except Exception as exc:  # noqa: BLE001 — a battery bug must fail loudly, never pass or crash
        return _failed(fn.__name__, p, f"the check itself raised {type(exc).__name__}: {exc}; "
                                       "please report this to stats_dropout.")


def _battery_iv(false_fail_rate, false_pass_rate, seed):
    return (probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), seed_iv(seed))


@functools.lru_cache(maxsize=8)
def _run_for(impl, seed, false_fail_rate, false_pass_rate):
    return _Run(impl, seed=seed, false_fail_rate=false_fail_rate, false_pass_rate=false_pass_rate)


def iter_checks(implementation, *, seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3):
    """The checks that apply to ``implementation``: a list of ``(check_id, check)``.

    ``check(implementation) -> CheckResult``; ids look like ``"check_keep_rate[keep_prob=0.8]"``.
    Checks of one implementation share their Monte-Carlo evidence (collected on first use).
    """
    impl = _implementation_iv(implementation)
    false_fail_rate, false_pass_rate, seed = _battery_iv(false_fail_rate, false_pass_rate, seed)
    out = []
    for k, p in enumerate(impl.keep_probs()):
        for fn in EXACT_CHECKS + STATISTICAL:
            if fn.__name__ in _ONCE and k > 0:
                continue

            def check(im, _fn=fn, _p=p):
                run = _run_for(_implementation_iv(im), seed, false_fail_rate, false_pass_rate)
                with seeded_global_rngs(seed):
                    return _run_check(_fn, run, _p)

            check.__name__ = fn.__name__
            out.append((_name(fn.__name__, p), check))
    return out


def _verify_dropout_iv(train, eval, keep_prob, contract, shared_axes, example_input, backward,
                       false_fail_rate, false_pass_rate, seed, validates_keep_prob):
    if not callable(train):
        raise TypeError(f"`train` must be callable (x -> y or (x, keep_prob) -> y); got {train!r}")
    if eval is not None and not callable(eval):
        raise TypeError(f"`eval` must be callable or None; got {eval!r}")
    if keep_prob is None:
        raise TypeError("`keep_prob` is required: the keep probability the implementation uses "
                        "(or values to test when it takes keep_prob)")
    values = (keep_prob,) if np.ndim(keep_prob) == 0 else tuple(keep_prob)
    if not values:
        raise ValueError("`keep_prob` must hold at least one value; got an empty sequence")
    for v in values:
        keep_prob_iv(v)
    choice_iv(contract, "contract", CONTRACTS)
    if example_input is not None:
        float_array_iv(example_input, "example_input", allow_empty=False, allow_0d=False)
    rates = _battery_iv(false_fail_rate, false_pass_rate, seed)
    impl = Implementation(train, eval, keep_prob=values if len(values) > 1 else values[0],
                          contract=contract, shared_axes=tuple(shared_axes) if not isinstance(shared_axes, str)
                          else shared_axes, backward=backward, example_input=example_input,
                          validates_keep_prob=bool(validates_keep_prob))
    return impl, rates


def verify_dropout(train, eval=None, *, keep_prob=None, contract="inverted", shared_axes=(), example_input=None,
                   false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, backward=None,
                   validates_keep_prob=True):
    """Run the battery on a dropout implementation.

    Parameters
    ----------
    train : callable or Implementation
        ``f(x)`` or ``f(x, keep_prob)``: one stochastic train pass drawing its own randomness.
        The battery seeds numpy's global RNG and torch's (if imported) from ``seed`` and
        restores them afterwards. An :class:`Implementation` (e.g. from
        ``stats_dropout.adapters.course_implementation``) carries everything up to
        ``backward``; then only the error rates and ``seed`` are read from the arguments.
    eval : callable, optional
        The inference path, ``f(x)`` or ``f(x, keep_prob)``.
    keep_prob : float or sequence of float
        Required unless ``train`` is an Implementation. Keep probability of the
        implementation (for ``f(x)``) or values to test (for
        ``f(x, keep_prob)``, which is also tested at 0.8 or 0.3 so that at least two values,
        one of them asymmetric, are tested — a keep/drop swap is invisible at 0.5).
    contract : {"inverted", "standard", "gaussian", "moments"}
        What the implementation claims to be (DESIGN.md).
    shared_axes : tuple of int or {"spatial", "non_batch"}
        Axes along which one mask is broadcast (channel dropout: "spatial").
    example_input : array_like, optional
        Probe (float dtype, ≥ 1-D); default a standardised N(0, 1) array of shape (256, 1024).
    false_fail_rate : float, default 1e-6
        Probability that a correct implementation fails (total over the battery).
    false_pass_rate : float, default 1e-3
        Probability of missing a keep-rate error of 0.002 or a mean error of 0.5 %.
    seed : int, default 0
    backward : callable, optional
        ``backward(x, upstream, keep_prob) -> (y, grad)``.
    validates_keep_prob : bool, default True
        Whether ``train(x, keep_prob)`` promises to reject keep_prob outside (0, 1]; False
        (course-style code that never validates) skips ``check_invalid_keep_prob``.

    Returns
    -------
    VerificationResult
        ``.passed``, ``.to_frame()`` (one row per check), ``print(result)`` for a table with
        the evidence, failure messages with hints, and a diagnosis.

    Examples
    --------
    >>> import numpy as np, stats_dropout as sd
    >>> def dropout(x, keep_prob):
    ...     if not 0 < keep_prob <= 1:
    ...         raise ValueError("keep_prob must be in (0, 1]")
    ...     return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob
    >>> sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8).passed
    True
    """
    if isinstance(train, Implementation):
        impl = _implementation_iv(train)
        alpha, beta, seed = _battery_iv(false_fail_rate, false_pass_rate, seed)
    else:
        impl, (alpha, beta, seed) = _verify_dropout_iv(train, eval, keep_prob, contract, shared_axes,
                                                       example_input, backward, false_fail_rate,
                                                       false_pass_rate, seed, validates_keep_prob)
    run = _Run(impl, seed=seed, false_fail_rate=alpha, false_pass_rate=beta)
    results = []
    # Checks outside the evidence pass (eval, keep_prob = 1, backward) call user code too:
    # seed the global RNGs for them as well, and give the caller's RNG state back afterwards.
    with seeded_global_rngs(seed):
        for k, p in enumerate(run.keep_probs):
            for fn in EXACT_CHECKS + STATISTICAL:
                if fn.__name__ in _ONCE and k > 0:
                    continue
                results.append(_run_check(fn, run, p))
    warn = []
    if all(p == 0.5 for p in run.keep_probs):
        warn.append("only keep_prob = 0.5 was tested: there a keep/drop swap (rand > keep_prob) is identical "
                    "in law to correct code; test an asymmetric keep_prob such as 0.8 as well.")
    diagnosis = []
    if any(r.status == "failed" for r in results):
        for p in run.keep_probs:
            for found in _diagnosis(run, p):
                line = f"at keep_prob={p:g}: {found}"
                if line not in diagnosis:
                    diagnosis.append(line)
    return VerificationResult(tuple(results), contract, seed, alpha, beta, tuple(warn), tuple(diagnosis))
