"""The checks of the battery, declared once, with what each needs to apply.

Every check is a function ``check(run, keep_prob) -> CheckResult`` in
:mod:`stats_dropout.verification.checks`; its name is its function's name, written nowhere else.
:data:`REGISTRY` says, per check, whether it makes a statistical decision and what it needs:

``masks``        a Bernoulli-type contract (every output a kept or a dropped value);
``eval``         an eval path;
``keep_prob_arg`` ``train`` takes keep_prob (``f(x, keep_prob)``);
``validates``    the implementation promises to reject keep_prob outside (0, 1];
``backward``     a backward function;
``drop``         keep_prob < 1 (something is dropped);
``channels``     a probe of ≥ 3 dimensions (channels as well as positions);
``unshared``     no shared axes (every unit has its own mask entry);
``shared``       shared axes declared;
``gaussian``     the ``gaussian`` contract;
``moments``      the ``moments`` contract (alpha dropout).

:func:`applicable_checks` is the one generator of the checks that apply to an implementation
and contract; the battery splits its false-fail budget over the statistical checks it yields,
not over every check that exists (a skipped check would otherwise dilute the budget).

References
----------
.. [1] scikit-learn, ``sklearn/utils/estimator_checks.py``: checks as plain functions and a
   generator of the checks that apply to an estimator.
"""

from __future__ import annotations

import dataclasses

from stats_dropout.verification.checks import exact, groups, statistical

__all__ = ["CheckSpec", "REGISTRY", "NEEDS", "NEED_WORDS", "applicable_checks", "missing_needs"]

NEEDS = ("masks", "eval", "keep_prob_arg", "validates", "backward", "drop", "channels", "unshared", "shared",
         "gaussian", "moments")
#: What each need means, in the words a result prints ("check_x: needs an eval path").
NEED_WORDS = {
    "masks": "a keep/drop mask (a Bernoulli or alpha contract)",
    "eval": "an eval path (eval=...)",
    "keep_prob_arg": "train to take keep_prob",
    "validates": "validates_keep_prob=True",
    "backward": "a backward function (backward=...)",
    "drop": "keep_prob < 1",
    "channels": "a probe of 3 or more dimensions",
    "unshared": "no shared axes",
    "shared": "shared_axes",
    "gaussian": "the 'gaussian' contract",
    "moments": "the 'moments' contract",
}


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    """One check: its function, what it needs, whether it decides statistically.

    Attributes
    ----------
    function : callable
        ``function(run, keep_prob) -> CheckResult``.
    needs : frozenset of str
        Members of :data:`NEEDS`.
    statistical : bool
        True if the check spends part of the battery's false-fail budget.
    once : bool
        True if the check does not depend on the tested keep_prob (run at the first only).
    """

    function: object
    needs: frozenset = frozenset()
    statistical: bool = False
    once: bool = False

    @property
    def name(self):
        return self.function.__name__

    def __call__(self, run, keep_prob):
        return self.function(run, keep_prob)


def _check(function, *needs, statistical=False, once=False):
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"{function.__name__} needs unknown {sorted(unknown)}; known: {NEEDS}")
    return CheckSpec(function, frozenset(needs), statistical, once)


#: Every check, in the order the battery runs and reports them.
REGISTRY = (
    _check(exact.check_output_shape_dtype),
    _check(exact.check_finite_output),
    _check(exact.check_input_unchanged),
    _check(exact.check_eval_deterministic, "eval"),
    _check(exact.check_eval_contract, "eval"),
    _check(exact.check_kept_scale, "masks"),
    _check(exact.check_sharing_pattern, "masks", "shared"),
    _check(exact.check_keep_prob_one, "keep_prob_arg", once=True),
    _check(exact.check_invalid_keep_prob, "keep_prob_arg", "validates", once=True),
    _check(exact.check_backward_mask, "backward", "masks"),
    _check(statistical.check_keep_rate, "masks", statistical=True),
    _check(groups.check_keep_rate_per_position, "masks", statistical=True),
    _check(groups.check_keep_rate_per_channel, "masks", "channels", statistical=True),
    _check(statistical.check_keep_rate_vs_input, "masks", "unshared", "drop", statistical=True),
    _check(statistical.check_mean, statistical=True),
    _check(groups.check_mean_per_unit, "drop", statistical=True),
    _check(statistical.check_variance, "drop", statistical=True),
    _check(statistical.check_row_dispersion, "masks", "drop", statistical=True),
    _check(statistical.check_independence_units, "masks", "drop", statistical=True),
    _check(statistical.check_independence_rows, "masks", "drop", statistical=True),
    _check(statistical.check_independence_calls, "masks", "drop", statistical=True),
    _check(statistical.check_noise_distribution, "gaussian", "drop", statistical=True),
    _check(statistical.check_output_moments, "moments", statistical=True),
)


def _has(impl, contract, ndim, keep_prob):
    """The needs an implementation under a contract meets at ``keep_prob``."""
    have = {
        "masks": contract.has_masks,
        "eval": impl.eval is not None,
        "keep_prob_arg": impl.convention.takes_keep_prob,
        "validates": bool(impl.validates_keep_prob),
        "backward": impl.backward is not None,
        "drop": keep_prob < 1,
        "channels": ndim >= 3,
        "unshared": not contract.shared_axes,
        "shared": bool(contract.shared_axes),
        "gaussian": contract.noise == "gaussian",
        "moments": contract.name == "moments",
    }
    return {need for need, ok in have.items() if ok}


def missing_needs(spec, impl, contract, ndim, keep_prob):
    """The needs of ``spec`` that are not met, in :data:`NEEDS` order (empty: it applies)."""
    have = _has(impl, contract, ndim, keep_prob)
    return tuple(n for n in NEEDS if n in spec.needs and n not in have)


def applicable_checks(impl, contract, ndim, keep_probs):
    """Yield ``(keep_prob, CheckSpec)`` for every check that applies, in :data:`REGISTRY` order.

    Parameters
    ----------
    impl : Implementation
    contract : ContractModel
    ndim : int
        Dimensions of the probe.
    keep_probs : sequence of float
        The keep probabilities tested, in order; ``once`` checks run at the first.
    """
    for k, p in enumerate(keep_probs):
        for spec in REGISTRY:
            if spec.once and k > 0:
                continue
            if not missing_needs(spec, impl, contract, ndim, p):
                yield p, spec
