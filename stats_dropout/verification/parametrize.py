"""``parametrize_with_checks``: the battery as pytest test cases.

One test case per (implementation, check), with ids like
``inverted-check_keep_rate[keep_prob=0.8]`` so that ``pytest -k check_keep_rate`` selects a
check. pytest is imported inside the functions only: stats_dropout does not depend on it.

The seed of the checks is the pytest session's (``--stats-dropout-seed``). The plugin
(:mod:`stats_dropout.plugin`) pushes it in with :func:`session_seed` around every test that carries
the ``stats_dropout`` marker; the library never imports the plugin. The seed is read when a check
*runs*, not when the test module is imported: parametrization happens at import time, before the
command line is known to the module. Outside pytest the seed is :data:`DEFAULT_SEED`.
"""

from __future__ import annotations

import contextlib

from stats_dropout._internal.validation import seed_iv

__all__ = ["parametrize_with_checks", "session_seed", "current_seed", "DEFAULT_SEED"]

#: Seed of the checks when no pytest session has pushed one.
DEFAULT_SEED = 0

# Seeds pushed by running tests, innermost last: pytester runs a session inside a session, and
# the checks of the inner one must see the inner seed.
_SEEDS: list[int] = []


@contextlib.contextmanager
def session_seed(seed):
    """Run the checks called inside the ``with`` block with ``seed`` (the plugin's entry point)."""
    _SEEDS.append(seed_iv(seed))
    try:
        yield
    finally:
        _SEEDS.pop()


def current_seed():
    """The innermost pushed seed, or :data:`DEFAULT_SEED`."""
    return _SEEDS[-1] if _SEEDS else DEFAULT_SEED


def _base_name(check_id):
    """``"check_keep_rate[keep_prob=0.8]"`` -> ``"check_keep_rate"``."""
    return check_id.split("[", 1)[0]


def _as_implementation(obj, index):
    from stats_dropout.verification.implementation import Implementation

    if isinstance(obj, Implementation):
        return obj
    if callable(obj):
        return Implementation(train=obj)
    raise TypeError(
        f"`implementations[{index}]` must be a stats_dropout.Implementation or a callable "
        f"f(x) / f(x, keep_prob); got {obj!r}")


def _label(impl):
    label = getattr(impl, "label", None)
    if label:
        return str(label)
    return impl.name or getattr(impl.train, "__name__", type(impl.train).__name__)


class _BatteryCheck:
    """One check of the battery as a pytest parameter: ``check(implementation)``.

    Calling it runs the check with the session's seed and turns its
    :class:`~stats_dropout.inference.verdicts.CheckResult` into pytest's language: ``AssertionError``
    with the check's message for "failed", ``pytest.skip`` with the reason for "skipped"; a
    passed check returns its result.
    """

    def __init__(self, check_id, index):
        self.check_id = check_id
        self._index = index  # position in iter_checks' list, which does not depend on the seed
        self.__name__ = _base_name(check_id)

    def __repr__(self):
        return self.check_id

    def result(self, implementation, *, seed=None):
        """Run the check and return its :class:`~stats_dropout.inference.verdicts.CheckResult`."""
        from stats_dropout.verification.battery import iter_checks

        seed = current_seed() if seed is None else seed
        checks = iter_checks(implementation, seed=seed)
        check_id, check = checks[self._index]
        if check_id != self.check_id:  # the implementation changed between collection and run
            matching = [c for i, c in checks if i == self.check_id]
            if not matching:
                raise LookupError(f"{self.check_id} does not apply to {implementation!r}")
            check = matching[0]
        return check(implementation)

    def __call__(self, implementation):
        import pytest

        res = self.result(implementation)
        if res.status == "failed":
            raise AssertionError(f"{res.check}: {res.message}")
        if res.status == "skipped":
            pytest.skip(res.message or f"{res.check} does not apply")
        return res


def _expected_for(expected_failed_checks, impl):
    if expected_failed_checks is None:
        return {}
    table = expected_failed_checks(impl) if callable(expected_failed_checks) else expected_failed_checks
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise TypeError(
            "`expected_failed_checks` must be a dict {check name: reason} or a callable returning "
            f"one; got {table!r}")
    return table


def parametrize_with_checks(implementations, *, expected_failed_checks=None):
    """A ``pytest.mark.parametrize`` over ``("implementation", "check")``.

    Parameters
    ----------
    implementations : sequence of Implementation or callable
        What to test. A bare callable ``f`` means ``Implementation(train=f)``.
    expected_failed_checks : dict or callable, optional
        ``{check name: reason}``, or a callable ``implementation -> dict``. A name is either a
        bare check name (``"check_invalid_keep_prob"``, every keep probability) or a full id
        (``"check_keep_rate[keep_prob=0.8]"``). Those cases get
        ``pytest.mark.xfail(strict=True, reason=reason)``: they must fail, so a fixed bug is
        noticed. A name that matches no check of the implementation raises ``ValueError``.

    Returns
    -------
    pytest.MarkDecorator
        Apply it to ``def test_dropout(implementation, check): check(implementation)``.
        Every case carries the ``stats_dropout`` marker; ids are
        ``"<implementation name>-<check id>"``.

    Notes
    -----
    ``check(implementation)`` raises ``AssertionError`` with the check's message (evidence
    and a hint) when it fails and calls ``pytest.skip`` when the check does not apply. Checks of
    one implementation share their Monte-Carlo evidence, collected by the first check that
    runs. The seed is ``--stats-dropout-seed`` (default 0), printed in pytest's header.

    Examples
    --------
    >>> import numpy as np
    >>> import stats_dropout as sd
    >>> def dropout(x, keep_prob):
    ...     return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob
    >>> @sd.parametrize_with_checks(  # doctest: +SKIP
    ...     [sd.Implementation(dropout, keep_prob=0.8, name="mine")],
    ...     expected_failed_checks={"check_invalid_keep_prob": "keep_prob is not validated"})
    ... def test_dropout(implementation, check):
    ...     check(implementation)
    """
    import pytest

    from stats_dropout.verification.battery import iter_checks

    if isinstance(implementations, (str, bytes)) or not hasattr(implementations, "__iter__"):
        implementations = [implementations]
    impls = [_as_implementation(obj, i) for i, obj in enumerate(implementations)]
    if not impls:
        raise ValueError("`implementations` must hold at least one implementation; got an empty sequence")
    if expected_failed_checks is not None and not (callable(expected_failed_checks)
                                                   or isinstance(expected_failed_checks, dict)):
        raise TypeError(
            "`expected_failed_checks` must be a dict {check name: reason} or a callable returning "
            f"one; got {expected_failed_checks!r}")

    params = []
    for impl in impls:
        label = _label(impl)
        expected = _expected_for(expected_failed_checks, impl)
        checks = iter_checks(impl)
        ids = [check_id for check_id, _ in checks]
        known = set(ids) | {_base_name(i) for i in ids}
        unknown = sorted(set(expected) - known)
        if unknown:
            raise ValueError(
                f"`expected_failed_checks` names {', '.join(map(repr, unknown))}, which match no check of "
                f"{label!r}; its checks are {', '.join(sorted({_base_name(i) for i in ids}))}")
        for index, check_id in enumerate(ids):
            reason = expected.get(check_id, expected.get(_base_name(check_id)))
            marks = [pytest.mark.stats_dropout]
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=str(reason)))
            params.append(pytest.param(impl, _BatteryCheck(check_id, index), marks=marks,
                                       id=f"{label}-{check_id}"))
    return pytest.mark.parametrize(("implementation", "check"), params)
