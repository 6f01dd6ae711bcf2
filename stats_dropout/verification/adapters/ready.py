"""Convention detection and ready-made Implementations for iter_checks / parametrize_with_checks."""

from __future__ import annotations

import functools
import inspect

import numpy as np

from stats_dropout.verification.adapters.common import COURSE_PROBE_SHAPE, name_of
from stats_dropout.verification.adapters.course import course_backward, from_course
from stats_dropout.verification.adapters.cs231n import cs231n_backward, from_cs231n
from stats_dropout.verification.adapters.pytorch import (
    from_torch,
    import_torch,
    keep_prob_agrees,
    keep_prob_from_rate,
    torch_kind,
    torch_ranks,
    torch_spec,
)

#: Default probe of an unbatched channel input: one mask per row (the channel), 2^18 elements.
UNBATCHED_PROBES = {2: (65536, 4), 3: (65536, 2, 2), 4: (32768, 2, 2, 2)}


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
    return Implementation(train, evaluate, **torch_spec(module), name=name or train.__name__[:-len(".train")],
                          inplace=_inplace(module), rng_source="torch")


def _inplace(module):
    flag = getattr(module, "inplace", False)
    return flag if isinstance(flag, bool) else False


def _custom_keep_prob(module, keep_prob):
    """keep_prob of a module torch does not define: the user's, or an attribute."""
    if keep_prob is not None:
        return keep_prob
    if isinstance(getattr(module, "keep_prob", None), (int, float)) and not isinstance(module.keep_prob, bool):
        return module.keep_prob
    for attr in ("p", "rate"):  # torch's and keras' names for the drop rate
        if isinstance(getattr(module, attr, None), (int, float)):
            return keep_prob_from_rate(getattr(module, attr), f"module.{attr}")
    raise TypeError(f"`keep_prob` is required for {type(module).__name__}: it has no attribute keep_prob, p "
                    "(drop rate) or rate (drop rate) to read it from; pass keep_prob=...")


def torch_layer_implementation(module, *, ndim=None, keep_prob=None, name=None):
    """:class:`~stats_dropout.Implementation` of a torch module fed its input as it is.

    Parameters
    ----------
    module : torch.nn.Module
        A torch dropout module (:func:`torch_spec`), or any module whose ``forward`` is dropout
        in ``train()`` mode and the identity in ``eval()`` mode; its keep_prob is then
        ``keep_prob``, else its attribute ``keep_prob``, else ``1 − p`` or ``1 − rate``.
    ndim : int, optional
        Input rank for channel modules (``Dropout1d/2d/3d``, ``FeatureAlphaDropout``): the
        batched rank (default) or the unbatched one (:func:`torch_ranks`). The probe has this
        rank and torch applies its own rank rules to it (``layout="native"`` of
        :func:`from_torch`), so a module that misreads a rank fails the sharing checks.
    keep_prob : float, optional
        For a torch dropout module it must agree with ``1 − module.p``.
    name : str, optional

    Returns
    -------
    Implementation
        ``inplace`` from the module's ``inplace`` attribute, ``rng_source="torch"``, probe dtype
        the dtype of the module's first parameter or torch's default dtype (float32).
    """
    from stats_dropout.reference.probes import scheme_probe
    from stats_dropout.verification.implementation import Implementation

    torch = import_torch()
    kind = torch_kind(module)
    train, evaluate = from_torch(module, layout="native")
    params = list(module.parameters())
    dtype = np.dtype(str(params[0].dtype if params else torch.get_default_dtype()).replace("torch.", ""))
    fields = dict(inplace=_inplace(module), rng_source="torch", dtype=dtype,
                  name=name or train.__name__[:-len(".train")])
    if kind is None:
        if ndim is not None:
            raise TypeError(f"`ndim` applies to torch's channel dropout modules only; got ndim={ndim!r} "
                            f"for {type(module).__name__}")
        return Implementation(train, evaluate, keep_prob=_custom_keep_prob(module, keep_prob), **fields)
    spec = torch_spec(module)
    keep_prob_agrees(keep_prob, spec["keep_prob"], f"{type(module).__name__}(p={module.p})")
    ranks = torch_ranks(module)
    if ranks[0][0] is None:
        if ndim is not None:
            raise TypeError(f"`ndim` applies to torch's channel dropout modules only; got ndim={ndim!r}")
        return Implementation(train, evaluate, keep_prob=spec["keep_prob"], contract=spec["contract"], **fields)
    by_ndim = {r[0]: r for r in ranks}
    ndim = ranks[0][0] if ndim is None else ndim
    if ndim not in by_ndim:
        raise ValueError(f"`ndim` must be one of {sorted(by_ndim)} for {type(module).__name__}; got {ndim!r}")
    _, axes, batched = by_ndim[ndim]
    probe = None if batched else scheme_probe(UNBATCHED_PROBES[ndim], seed=0).astype(dtype)
    if not batched:
        fields["name"] += f"[unbatched {ndim}-D]"
    return Implementation(train, evaluate, keep_prob=spec["keep_prob"], contract=spec["contract"],
                          shared_axes=axes, channel_axis=1 if batched else 0, example_input=probe, **fields)


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
