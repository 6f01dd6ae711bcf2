"""The battery: a run's probe, error budget and evidence, and the entry points.

:func:`verify_dropout` runs every check that applies to an implementation and gathers a
:class:`~stats_dropout.inference.verdicts.VerificationResult`; :func:`iter_checks` yields them one by
one for pytest (:mod:`stats_dropout.verification.parametrize`).
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np

from stats_dropout._internal.numerics import unit_exponent
from stats_dropout._internal.rng import seeded_global_rngs
from stats_dropout._internal.timeouts import CallGuard, current_guard, timeout_iv
from stats_dropout._internal.validation import float_array_iv, keep_probs_iv, probability_iv, seed_iv
from stats_dropout.inference.stats import (
    min_draws_for_mean_error,
    min_trials_for_keep_rate_error,
    split_false_fail_rate,
)
from stats_dropout.inference.units import min_trials_for_silent_group
from stats_dropout.inference.verdicts import BatteryCost, VerificationResult
from stats_dropout.reference.contracts import ContractModel
from stats_dropout.reference.probes import probe_shape, scheme_probe
from stats_dropout.verification.accounting import CallLedger
from stats_dropout.verification.adapters.dispatch import implementation as adapters_implementation
from stats_dropout.verification.adapters.dispatch import is_layer
from stats_dropout.verification.checks.common import NOTHING_OBSERVABLE, check_id, diagnosis_of, failed
from stats_dropout.verification.evidence import Collector
from stats_dropout.verification.implementation import Implementation, function_iv, implementation_iv
from stats_dropout.verification.registry import NEED_WORDS, REGISTRY, applicable_checks, missing_needs

#: Default power targets (issue: "detect a keep-rate error of 0.002 and a mean error of 0.5 %").
KEEP_RATE_ERROR = 0.002
RELATIVE_MEAN_ERROR = 0.005
MIN_DRAWS = 10
NORMAL_UNITS = 1000
MAX_DRAWS = 2_000


# --- the run: evidence per keep_prob, error budget ------------------------------------------


class BatteryRun:
    """One battery's shared state, the object every check receives: ``check(run, keep_prob)``.

    Attributes
    ----------
    impl : Implementation
        The implementation under test.
    x : ndarray
        The probe every call gets a fresh copy of (``impl.example_input``, or a standardised
        N(0, 1) array of :func:`~stats_dropout.reference.probes.probe_shape` in ``impl.dtype``).
    contract : ContractModel
        What the implementation promises, value by value (:mod:`stats_dropout.reference.contracts`).
    keep_probs : tuple of float
        The keep probabilities tested, in order.
    checks : tuple of (float, CheckSpec)
        Every check that applies (:func:`~stats_dropout.verification.registry.applicable_checks`).
    seed : int
    false_fail_rate : float
        The battery's total.
    alpha : float
        Each statistical check's share of ``false_fail_rate``: the total split over the
        ``n_statistical`` statistical checks that run.
    beta : float
        The false-pass rate (not split).
    normal_draws : bool
        A pooled statistic sums enough independent mask entries per draw for a z test with the
        contract's null variance (:meth:`null_sd`); else a t test.
    warnings : list of str
        Said in the result (e.g. draws capped below the power targets).

    Methods
    -------
    evidence(keep_prob)
        The streamed :class:`~stats_dropout.verification.evidence.Evidence` of the train calls at
        ``keep_prob`` (collected on first use, then shared by every check).
    draws_for(keep_prob)
        Draws computed from the power targets.
    null_sd(keep_prob, which)
        Sd of one draw's pooled statistic under the contract, or None (use a t test).
    """

    def __init__(self, impl, *, seed, false_fail_rate, false_pass_rate):
        self.impl = impl
        self.seed = seed
        self.false_fail_rate = false_fail_rate
        self.beta = false_pass_rate
        self.keep_probs = impl.keep_probs()
        self.contract = ContractModel.of(impl.contract, impl.shared_axes)
        self.x = self._probe()
        # Statistics are computed on the probe rescaled by a power of two to unit magnitude
        # (exact, no rounding), so squares neither underflow (|x| ≲ 1e-154, subnormals) nor
        # overflow (x·1e300) and the verdict on c·x is the verdict on x. Alpha dropout's contract
        # does not scale (its dropped value is fixed): its statistics stay in input units.
        self.unit_exponent = unit_exponent(self.x) if self.contract.homogeneous else 0
        #: The probe in float64 at unit scale (``x · 2^-unit_exponent``), for statistics.
        self.x_unit = np.ldexp(self.x.astype(np.float64), -self.unit_exponent)
        #: Units whose kept and dropped values differ (x ≠ 0 under Bernoulli contracts).
        self.observable_units = int(np.count_nonzero(self.x_unit)) if self.contract.homogeneous else self.x.size
        #: (keep_prob, CheckSpec) of every check that applies, in the order they run.
        self.checks = tuple(applicable_checks(impl, self.contract, self.x.ndim, self.keep_probs))
        #: Bonferroni share of each statistical decision: the total split over the statistical
        #: checks that run (not over every check that exists, which would dilute the budget).
        self.n_statistical = sum(spec.statistical for _, spec in self.checks)
        self.alpha = split_false_fail_rate(false_fail_rate, max(self.n_statistical, 1))
        # A pooled statistic sums ≥ NORMAL_UNITS independent mask entries per draw: normal by the CLT,
        # so its null variance (known from the contract) gives a z test; else a t test.
        entries = int(np.prod(self.contract.scheme.mask_shape(self.x.shape)))
        self.normal_draws = entries >= NORMAL_UNITS
        self._evidence = {}
        self.warnings = [] if self.observable_units else [NOTHING_OBSERVABLE]

    def null_sd(self, p, which):
        """Sd of one draw's pooled statistic under the contract (None: use a t test)."""
        if not self.normal_draws:
            return None
        c, x = self.contract, self.x_unit
        mu, var = c.mean(x, p), c.var(x, p)
        if which == "mean":
            return c.scheme.projection_ratio_sd(mu, x, p)
        return c.scheme.squared_deviation_sd(var, x, p)

    def _probe(self):
        impl = self.impl
        if impl.example_input is not None:
            x = float_array_iv(impl.example_input, "example_input", allow_empty=False, allow_0d=False)
            return np.array(x, copy=True)
        x = scheme_probe(probe_shape(impl.shared_axes), seed=self.seed)
        return x if impl.dtype is None else x.astype(impl.dtype)

    def draws_for(self, p):
        """Draws needed at ``p`` for the keep-rate and mean targets (see module docstring)."""
        c, x = self.contract, self.x_unit
        need = MIN_DRAWS
        if p < 1 and self.observable_units:
            mu = c.mean(x, p)
            sd = c.scheme.projection_ratio_sd(mu, x, p)
            if sd > 0:
                need = max(need, min_draws_for_mean_error(
                    RELATIVE_MEAN_ERROR, sd, false_fail_rate=self.alpha, false_pass_rate=self.beta,
                    null_sd_known=self.normal_draws))
            need = max(need, self.unit_draws(p))
            if c.has_masks:
                entries = int(np.prod(c.scheme.mask_shape(x.shape)))
                trials = min_trials_for_keep_rate_error(
                    p, min(KEEP_RATE_ERROR, p / 2, (1 - p) / 2),
                    false_fail_rate=self.alpha, false_pass_rate=self.beta)
                need = max(need, math.ceil(trials / entries))
        if need > MAX_DRAWS:
            self.warnings.append(
                f"at keep_prob={p:g} the power targets need {need} draws; capped at {MAX_DRAWS}, so "
                "the smallest detectable errors are larger than the defaults (see min_detectable_effect); "
                "a larger example_input restores them")
        return min(need, MAX_DRAWS)

    def unit_draws(self, p):
        """Draws for check_mean_per_unit to catch one wrong unit among all (Holm over units).

        Masks: a unit that is never kept (its keep count 0 in every draw) is rejected when
        ``2 (1 − p)^n < α/m`` for m observable mask entries
        (:func:`~stats_dropout.inference.units.min_trials_for_silent_group`). Gaussian noise: a
        unit whose mean is 0 instead of x (a zeroed unit, standardised effect ``√(p/(1 − p))``)
        with the z test's power: ``n = ((z_{α/2m} + z_β) √((1 − p)/p))²``.
        """
        c = self.contract
        if p == 1:
            return MIN_DRAWS
        if c.has_masks:
            # Every mask entry counted, observable or not: at most a draw more than needed.
            m = int(np.prod(c.scheme.mask_shape(self.x.shape)))
            return min_trials_for_silent_group(p, max(m, 1), false_fail_rate=self.alpha)
        m = max(1, self.observable_units)
        return min_draws_for_mean_error(math.sqrt(p / (1 - p)), 1.0, false_fail_rate=self.alpha,
                                        false_pass_rate=self.beta, n_tests=m, null_sd_known=True)

    def evidence(self, p):
        if p not in self._evidence:
            k = self.keep_probs.index(p)
            seed_k = int(np.random.SeedSequence(self.seed, spawn_key=(k,)).generate_state(1)[0])
            collector = Collector(self.impl.bound_train(p), self.x, p, self.contract, self.impl.reseed,
                                  compute_dtype=self.impl.compute_dtype, unit_exponent=self.unit_exponent)
            self._evidence[p] = collector.collect(self.draws_for(p), seed_k)
        return self._evidence[p]




# --- entry points -------------------------------------------------------------------------
def _run_check(spec, run, p):
    try:
        return spec(run, p)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — SystemExit from user code included: a failed check, never an exit
        return failed(spec.name, p, f"the check raised {type(exc).__name__}: {exc}; if it came from the "
                                    "implementation this is its failure, otherwise please report it to stats_dropout.")


def _battery_iv(false_fail_rate, false_pass_rate, seed):
    return (probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), seed_iv(seed))


def _guard_for(timeout):
    """The time limit of a battery's calls: its own ``timeout``, else the enclosing
    :func:`~stats_dropout._internal.timeouts.time_limit` block's (shared), else none (direct calls)."""
    return CallGuard(timeout) if timeout is not None else current_guard()


_RUNS = collections.OrderedDict()  # (id(impl), seed, rates, timeout) -> (impl, BatteryRun); the last 8


def _run_for(impl, seed, false_fail_rate, false_pass_rate, timeout=None):
    """The shared run of one implementation object, so its checks reuse one evidence pass.

    Keyed by the object's identity, not by equality: two Implementations that differ only in
    ``example_input`` compare equal (arrays take no part in equality) but need their own runs.
    The cached entry holds the object, so its id cannot be reused while cached. With a
    ``timeout`` the run's implementation calls through one guard, so a hang in one check makes
    the run's other checks fail at once.
    """
    key = (id(impl), seed, false_fail_rate, false_pass_rate, timeout)
    cached = _RUNS.get(key)
    if cached is None or cached[0] is not impl:
        cached = (impl, BatteryRun(impl.guarded(_guard_for(timeout)), seed=seed, false_fail_rate=false_fail_rate,
                                   false_pass_rate=false_pass_rate))
        _RUNS[key] = cached
        while len(_RUNS) > 8:
            _RUNS.popitem(last=False)
    _RUNS.move_to_end(key)
    return cached[1]


def iter_checks(implementation, *, seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3, timeout=None):
    """The checks that apply to ``implementation``: a list of ``(check_id, check)``.

    ``check(implementation) -> CheckResult``; ids look like ``"check_keep_rate[keep_prob=0.8]"``.
    Checks of one implementation share their Monte-Carlo evidence (collected on first use).
    ``timeout`` is as in :func:`verify_dropout` (one guard for the implementation's checks).
    """
    impl = implementation_iv(implementation)
    false_fail_rate, false_pass_rate, seed = _battery_iv(false_fail_rate, false_pass_rate, seed)
    timeout = timeout_iv(timeout)
    out = []
    for p, spec in _run_for(impl, seed, false_fail_rate, false_pass_rate, timeout).checks:

        def check(im, _spec=spec, _p=p):
            run = _run_for(implementation_iv(im), seed, false_fail_rate, false_pass_rate, timeout)
            with seeded_global_rngs(seed, run.impl.reseed):
                return _run_check(_spec, run, _p)

        check.__name__ = spec.name
        out.append((check_id(spec.name, p), check))
    return out


def _verify_dropout_iv(train, eval, keep_prob, contract, shared_axes, example_input, backward,
                       false_fail_rate, false_pass_rate, seed, validates_keep_prob):
    function_iv(train, "train", optional=False)
    if keep_prob is None:
        raise TypeError("`keep_prob` is required: the keep probability the implementation uses "
                        "(or values to test when it takes keep_prob)")
    values = keep_probs_iv(keep_prob, "keep_prob", distinct=True)
    rates = _battery_iv(false_fail_rate, false_pass_rate, seed)
    impl = Implementation(train, eval, keep_prob=tuple(values) if len(values) > 1 else values[0],
                          contract=contract, shared_axes=tuple(shared_axes) if isinstance(shared_axes, list)
                          else shared_axes, backward=backward, example_input=example_input,
                          validates_keep_prob=bool(validates_keep_prob))
    return implementation_iv(impl), rates


def verify_dropout(train, eval=None, *, keep_prob=None, contract="inverted", shared_axes=(), example_input=None,
                   false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, backward=None,
                   validates_keep_prob=True, timeout=None):
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
    timeout : float, optional
        Seconds each call to ``train``, ``eval`` or ``backward`` may take. A call that does not
        return in time fails its check with a message naming the call (``"train(x, 0.8) did not
        return within 60 s"``); the hung call cannot be stopped and keeps running in a daemon
        thread, so the implementation is not called again: every later check fails at once
        (:mod:`stats_dropout._internal.timeouts`). Calls then run in one worker thread; results
        are identical to a run without a limit. Default None: no limit (calls run directly in
        the caller's thread), unless inside a ``time_limit`` block (the command line's
        ``--timeout``), whose limit applies.

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
    timeout = timeout_iv(timeout)
    if is_layer(train):  # a framework layer: everything is read from the object
        train = adapters_implementation(train, keep_prob=keep_prob, example_input=example_input)
    if isinstance(train, Implementation):
        impl = implementation_iv(train)
        alpha, beta, seed = _battery_iv(false_fail_rate, false_pass_rate, seed)
    else:
        impl, (alpha, beta, seed) = _verify_dropout_iv(train, eval, keep_prob, contract, shared_axes,
                                                       example_input, backward, false_fail_rate,
                                                       false_pass_rate, seed, validates_keep_prob)
    started = time.perf_counter()
    ledger = CallLedger()
    run = BatteryRun(impl.guarded(_guard_for(timeout)).counted(ledger), seed=seed, false_fail_rate=alpha,
                     false_pass_rate=beta)
    results = []
    # Checks outside the evidence pass (eval, keep_prob = 1, backward) call user code too:
    # seed the global RNGs for them as well, and give the caller's RNG state back afterwards.
    with seeded_global_rngs(seed, impl.reseed):
        results = [_run_check(spec, run, p) for p, spec in run.checks]
        diagnosis = []
        failed_at = {r.keep_prob for r in results if r.status == "failed"}
        if failed_at:
            for p in (q for q in run.keep_probs if q in failed_at):  # diagnose only where a check failed
                try:
                    found = diagnosis_of(run, p)
                except KeyboardInterrupt:
                    raise
                except BaseException:  # noqa: BLE001 — a diagnosis is a bonus; the failures stand
                    found = ()
                for item in found:
                    line = f"at keep_prob={p:g}: {item}"
                    if line not in diagnosis:
                        diagnosis.append(line)
    warn = list(run.warnings)
    if all(p == 0.5 for p in run.keep_probs):
        warn.append("only keep_prob = 0.5 was tested: there a keep/drop swap (rand > keep_prob) is identical "
                    "in law to correct code; test an asymmetric keep_prob such as 0.8 as well.")
    return VerificationResult(tuple(results), impl.contract, seed, alpha, beta, tuple(warn), tuple(diagnosis),
                              convention=impl.convention.description, not_applicable=_not_applicable(run),
                              per_check_false_fail_rate=run.alpha,
                              cost=BatteryCost(calls=dict(ledger.calls), call_seconds=ledger.total_seconds,
                                               seconds=time.perf_counter() - started))


def _not_applicable(run):
    """One line per check that does not apply, with the need it lacks (once per check name)."""
    ran = {spec.name for _, spec in run.checks}
    lines = []
    for spec in REGISTRY:
        if spec.name in ran:
            continue
        missing = missing_needs(spec, run.impl, run.contract, run.x.ndim, run.keep_probs[0])
        lines.append(f"{spec.name}: needs {', '.join(NEED_WORDS[n] for n in missing)}")
    return tuple(lines)

