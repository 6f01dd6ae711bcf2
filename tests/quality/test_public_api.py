"""The package root holds the public API only, and ``__all__`` says exactly what it is.

In Hypothesis's style (its ``tests/cover/test_public_api``-like checks): every name in
``__all__`` exists, is documented, and nothing public is missing from it.
"""

import inspect
import types

import stats_dropout as sd

#: The names users and tests rely on (docs/DESIGN.md, "Public API"): keep them stable.
STABLE = {"verify_dropout", "estimate_train_moments", "estimate_statistic_moments", "SCHEMES", "get_scheme",
          "DropoutScheme", "Implementation", "iter_checks", "parametrize_with_checks", "verify_scheme",
          "CheckResult", "ConfidenceInterval", "Decision", "TrainMoments", "VerificationResult",
          "adapters", "schemes", "stats", "theory"}


def test_all_is_sorted_unique_and_resolves():
    names = sd.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(sd, name) is not None, name


def test_stable_names_are_public():
    assert STABLE <= set(sd.__all__)


def test_every_public_name_is_in_all():
    public = {n for n, v in vars(sd).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - set(sd.__all__) == set()


def test_every_exported_callable_and_class_is_documented():
    for name in sd.__all__:
        obj = getattr(sd, name)
        if inspect.isfunction(obj) or inspect.isclass(obj) or isinstance(obj, types.ModuleType):
            assert (obj.__doc__ or "").strip(), f"stats_dropout.{name} has no docstring"


def test_no_private_module_is_exported():
    for name in sd.__all__:
        obj = getattr(sd, name)
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
        assert not any(part.startswith("_") for part in (module or "").split(".")[1:]), (name, module)
