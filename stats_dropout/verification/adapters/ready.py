"""Convention detection and ready-made Implementations for iter_checks / parametrize_with_checks."""

from __future__ import annotations

import functools
import inspect

from stats_dropout.verification.adapters.common import COURSE_PROBE_SHAPE, name_of
from stats_dropout.verification.adapters.course import course_backward, from_course
from stats_dropout.verification.adapters.cs231n import cs231n_backward, from_cs231n
from stats_dropout.verification.adapters.pytorch import from_torch, torch_spec


def _positional_names(func):
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]


def detect_convention(func):
    """Guess which calling convention ``func`` follows.

    Returns
    -------
    {"course", "cs231n", "plain"}
        ``"course"`` for ``forward_propagation_with_dropout(X, parameters, keep_prob)`` (by
        name, or a second parameter called ``parameters``); ``"cs231n"`` for
        ``dropout_forward(x, dropout_param)`` (by name, or a parameter called
        ``dropout_param``); ``"plain"`` otherwise (``f(x)`` or ``f(x, keep_prob)``).
    """
    target = func.func if isinstance(func, functools.partial) else func
    name = getattr(target, "__name__", "")
    names = _positional_names(func) or []
    if name == "forward_propagation_with_dropout" or (len(names) >= 2 and names[1] == "parameters"):
        return "course"
    if name == "dropout_forward" or "dropout_param" in names:
        return "cs231n"
    return "plain"


def course_probe(seed=0):
    """The battery's standardised N(0, 1) probe in :data:`COURSE_PROBE_SHAPE`."""
    from stats_dropout.reference.probes import scheme_probe

    return scheme_probe(COURSE_PROBE_SHAPE, seed=seed)


def torch_implementation(module, *, name=None):
    """:class:`~stats_dropout.Implementation` of a torch dropout module (see :func:`torch_spec`)."""
    from stats_dropout.verification.implementation import Implementation

    train, evaluate = from_torch(module)
    return Implementation(train, evaluate, **torch_spec(module), name=name or train.__name__[:-len(".train")])


def course_implementation(forward, backward=None, *, layer=1, keep_prob=0.8, name=None):
    """:class:`~stats_dropout.Implementation` of one layer of a course-style network.

    ``validates_keep_prob`` is False (the course's functions do not check their keep_prob) and
    the probe is :func:`course_probe`, which keeps the network's matrix products cheap.
    ``backward``, if given, is ``backward_propagation_with_dropout`` (:func:`course_backward`).
    """
    from stats_dropout.verification.implementation import Implementation

    train = from_course(forward, layer=layer)
    grad = course_backward(forward, backward, layer=layer) if backward is not None else None
    return Implementation(train, None, keep_prob=keep_prob, backward=grad, validates_keep_prob=False,
                          example_input=course_probe(), name=name or train.__name__)


def cs231n_implementation(forward, backward=None, *, p_means="keep", keep_prob=0.8, name=None):
    """:class:`~stats_dropout.Implementation` of a CS231n-style ``dropout_forward`` (and backward).

    ``validates_keep_prob`` is False: the assignment's layer does not check ``p``.
    """
    from stats_dropout.verification.implementation import Implementation

    train, evaluate = from_cs231n(forward, p_means=p_means)
    grad = cs231n_backward(forward, backward, p_means=p_means) if backward is not None else None
    return Implementation(train, evaluate, keep_prob=keep_prob, backward=grad, validates_keep_prob=False,
                          name=name or name_of(forward, "dropout_forward"))
