"""The implementation under test: callables and what they claim (contract, keep_prob, sharing)."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from stats_dropout._internal.validation import callable_iv, choice_iv, float_array_iv, keep_prob_iv
from stats_dropout.reference.contracts import CONTRACTS
from stats_dropout.reference.probes import probe_shape

__all__ = ["Implementation", "ASYMMETRIC_KEEP_PROBS", "implementation_iv", "function_iv", "takes_keep_prob"]

#: Keep probabilities added for implementations that take keep_prob: asymmetric, so a keep/drop
#: swap (identical in law at 0.5) is visible.
ASYMMETRIC_KEEP_PROBS = (0.8, 0.3)

def takes_keep_prob(fn):
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

    def __post_init__(self):
        if isinstance(self.shared_axes, list):  # keep the dataclass hashable
            object.__setattr__(self, "shared_axes", tuple(self.shared_axes))

    @property
    def takes_keep_prob(self):
        return takes_keep_prob(self.train)

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
        return (lambda x: self.eval(x, keep_prob)) if takes_keep_prob(self.eval) else self.eval


def function_iv(obj, name, optional=True):
    """A callable (or None); a torch module is pointed to its adapter rather than half-run."""
    if obj is None and optional:
        return
    if type(obj).__module__.startswith("torch.") and hasattr(obj, "forward"):
        raise TypeError(f"`{name}` is a torch module ({type(obj).__name__}); wrap it first: "
                        "train, eval = stats_dropout.adapters.from_torch(module) with "
                        "**stats_dropout.adapters.torch_spec(module), or "
                        "stats_dropout.adapters.torch_implementation(module)")
    callable_iv(obj, name, optional=optional,
                what="callable" if optional else "callable (x -> y or (x, keep_prob) -> y)")


def _shared_axes_iv(shared_axes, example_input):
    """``()``, a tuple of ints, or one of "spatial" / "non_batch"; axes must exist in the probe."""
    if isinstance(shared_axes, str):
        return choice_iv(shared_axes, "shared_axes", ("spatial", "non_batch"))
    if isinstance(shared_axes, (int, np.integer)) or not isinstance(shared_axes, (tuple, list)):
        raise TypeError(f"`shared_axes` must be a tuple of ints or 'spatial' / 'non_batch'; got {shared_axes!r}")
    axes = tuple(shared_axes)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes):
        raise TypeError(f"`shared_axes` must be a tuple of ints or 'spatial' / 'non_batch'; got {shared_axes!r}")
    ndim = np.ndim(example_input) if example_input is not None else len(probe_shape(axes))
    bad = [a for a in axes if not -ndim <= a < ndim]
    if bad:
        raise ValueError(f"`shared_axes` {axes!r} names axes the {ndim}-d probe does not have: {bad}")
    return tuple(int(a) for a in axes)


def implementation_iv(impl):
    if not isinstance(impl, Implementation):
        raise TypeError(f"`implementation` must be a stats_dropout.Implementation; got {impl!r}")
    function_iv(impl.train, "train", optional=False)
    function_iv(impl.eval, "eval")
    function_iv(impl.backward, "backward")
    choice_iv(impl.contract, "contract", CONTRACTS)
    if impl.example_input is not None:
        float_array_iv(impl.example_input, "example_input", allow_empty=False, allow_0d=False)
    _shared_axes_iv(impl.shared_axes, impl.example_input)
    impl.keep_probs()
    return impl


