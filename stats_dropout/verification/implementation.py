"""The implementation under test: callables and what they claim (contract, keep_prob, sharing)."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import numpy as np

from stats_dropout._internal.validation import callable_iv, choice_iv, float_array_iv, keep_probs_iv
from stats_dropout.reference.contracts import CONTRACTS
from stats_dropout.reference.probes import probe_shape

__all__ = ["Implementation", "Convention", "keep_prob_convention", "takes_keep_prob", "ASYMMETRIC_KEEP_PROBS",
           "implementation_iv", "function_iv"]

#: Keep probabilities added for implementations that take keep_prob: asymmetric, so a keep/drop
#: swap (identical in law at 0.5) is visible.
ASYMMETRIC_KEEP_PROBS = (0.8, 0.3)

#: Second-parameter names read as the keep probability, and as the drop rate (converted).
KEEP_PROB_NAMES = ("keep_prob", "keep", "keep_probability", "keep_rate", "prob_keep", "p_keep", "p")
RATE_NAMES = ("rate", "drop_prob", "drop_rate", "dropout", "dropout_rate", "dropout_prob", "p_drop", "drop_p")
#: Second-parameter names of a train/eval switch, never a keep probability.
FLAG_NAMES = ("training", "train", "is_training", "deterministic", "mode", "inference", "eval", "is_train")


@dataclasses.dataclass(frozen=True)
class Convention:
    """How the battery calls ``train``: with keep_prob or not, as a keep probability or a rate."""

    takes_keep_prob: bool
    means: str = "keep"       # "keep": f(x, keep_prob); "drop": f(x, rate) with rate = 1 − keep_prob
    description: str = "f(x)"


def keep_prob_convention(fn, takes_keep_prob=None, keep_prob_means=None):
    """Read from ``fn``'s signature whether and how it takes keep_prob.

    The second positional parameter counts as keep_prob only if it has no default, or if its
    name says so: :data:`KEEP_PROB_NAMES` (a keep probability) or :data:`RATE_NAMES` (a drop rate,
    converted as ``rate = 1 − keep_prob``). ``p`` with a default is the closure idiom
    ``lambda x, p=p: ...`` and is read as bound. A parameter with a default and any other name
    (``training=True``, ``train=True``) is a switch, not keep_prob. A parameter without a default
    named like a switch (:data:`FLAG_NAMES`) is ambiguous: ``TypeError`` naming ``takes_keep_prob=``.

    Parameters
    ----------
    fn : callable
    takes_keep_prob : bool, optional
        Overrides the signature.
    keep_prob_means : {"keep", "drop"}, optional
        Overrides the name.

    Returns
    -------
    Convention
    """
    if keep_prob_means is not None and keep_prob_means not in ("keep", "drop"):
        raise ValueError(f"`keep_prob_means` must be 'keep' or 'drop'; got {keep_prob_means!r}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = None
    second = None
    if params is not None:
        positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
        second = positional[1] if len(positional) >= 2 else None
        varargs = any(q.kind == q.VAR_POSITIONAL for q in params)
    if takes_keep_prob is None:
        if second is None:
            takes_keep_prob = params is not None and varargs
        else:
            name = second.name.lower()
            has_default = second.default is not inspect.Parameter.empty
            if name in FLAG_NAMES and not has_default:
                raise TypeError(
                    f"cannot tell whether the second parameter {second.name!r} of {fn!r} is keep_prob or a "
                    "train/eval switch; pass takes_keep_prob=True (it is keep_prob) or takes_keep_prob=False "
                    "(call it as f(x))")
            takes_keep_prob = not has_default or (name in KEEP_PROB_NAMES + RATE_NAMES and name != "p")
    if not takes_keep_prob:
        return Convention(False, "keep", "f(x)")
    pname = second.name if second is not None else "keep_prob"
    if keep_prob_means is None:
        keep_prob_means = "drop" if pname.lower() in RATE_NAMES else "keep"
    if keep_prob_means == "drop":
        return Convention(True, "drop", f"f(x, {pname}) with {pname} the drop rate (= 1 − keep_prob)")
    return Convention(True, "keep", f"f(x, {pname}) with {pname} the keep probability")


def takes_keep_prob(fn):
    """True if the battery calls ``fn`` as ``fn(x, keep_prob)`` (see :func:`keep_prob_convention`)."""
    return keep_prob_convention(fn).takes_keep_prob


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
        shared axes) in ``dtype``.
    name : str, optional
    takes_keep_prob : bool, optional
        Whether ``train`` takes keep_prob as its second argument; default: read from the signature
        (:func:`keep_prob_convention`).
    keep_prob_means : {"keep", "drop"}, optional
        What the second argument is: the keep probability or the drop rate (converted here:
        ``rate = 1 − keep_prob``); default: read from its name.
    inplace : bool
        ``train`` writes its output into its input (torch ``inplace=True``): the battery hands each
        call a fresh copy and checks that the output aliases it.
    channel_axis : int, optional
        Axis of the channels under channel dropout (``1`` channels-first, ``-1`` channels-last);
        default 1 when ``shared_axes == "spatial"``.
    dtype : dtype, optional
        Dtype of the default probe (framework layers: their compute dtype); default float64.
    compute_dtype : dtype, optional
        Dtype the implementation computes its noise and scale in, when lower than the output's
        (float32 noise on float64 input, a bfloat16 scale): kept values may carry ``1/keep_prob``
        rounded to it, and the bias this causes is measured and reported.
    reseed : callable, optional
        ``reseed(seed)`` seeds the implementation's own randomness (a JAX key, a keras
        ``SeedGenerator``, a TF stateless seed); the battery calls it with its seed so that two runs
        with one seed are identical and different seeds differ. numpy's and torch's global RNGs are
        seeded by the battery itself.
    rng_source : str, optional
        Where the randomness comes from (``"numpy"``, ``"torch"``, ``"jax-key"``, ``"keras-seed"``,
        ``"tf-stateless"``, ...), so that a diagnosis can name the mechanism of identical masks.
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
    takes_keep_prob: bool | None = None
    keep_prob_means: str | None = None
    inplace: bool = False
    channel_axis: int | None = None
    dtype: object = None
    compute_dtype: object = None
    reseed: object = dataclasses.field(default=None, compare=False)
    rng_source: str | None = None

    def __post_init__(self):
        if isinstance(self.shared_axes, list):  # keep the dataclass hashable
            object.__setattr__(self, "shared_axes", tuple(self.shared_axes))

    @functools.cached_property
    def convention(self):
        """:class:`Convention` of ``train`` (signature, or the ``takes_keep_prob`` override)."""
        return keep_prob_convention(self.train, self.takes_keep_prob, self.keep_prob_means)

    @property
    def label(self):
        return self.name or getattr(self.train, "__name__", type(self.train).__name__)

    def keep_probs(self):
        """The keep probabilities the battery tests, in order."""
        values = list(keep_probs_iv(self.keep_prob, "keep_prob", distinct=True))
        if self.convention.takes_keep_prob:
            # At least two values, at least one asymmetric (≠ 0.5), so a keep/drop swap shows.
            for extra in ASYMMETRIC_KEEP_PROBS:
                if len(values) >= 2 and any(v != 0.5 for v in values):
                    break
                if extra not in values:
                    values.append(extra)
        return tuple(values)

    def bound_train(self, keep_prob):
        """``x -> y`` at ``keep_prob`` (a rate where the convention says so: converted here only)."""
        conv = self.convention
        if not conv.takes_keep_prob:
            return self.train
        arg = 1.0 - keep_prob if conv.means == "drop" else keep_prob
        return lambda x: self.train(x, arg)

    def guarded(self, guard):
        """A copy whose ``train``, ``eval`` and ``backward`` run through ``guard``, or ``self``.

        ``guard`` is a :class:`~stats_dropout._internal.timeouts.CallGuard` (each call within a
        time limit, in its worker thread) or None. The wrappers keep each callable's name and
        signature, and the copy keeps the label and the keep_prob convention, so the battery
        reads the implementation exactly as without a guard.
        """
        if guard is None:
            return self
        return dataclasses.replace(
            self, train=guard.wrap(self.train, "train"), eval=guard.wrap(self.eval, "eval"),
            backward=guard.wrap(self.backward, "backward"), name=self.label,
            takes_keep_prob=self.convention.takes_keep_prob)

    def counted(self, ledger):
        """A copy whose ``train``, ``eval`` and ``backward`` are counted and timed by ``ledger``
        (a :class:`~stats_dropout.verification.accounting.CallLedger`), read exactly as ``self``."""
        return dataclasses.replace(
            self, train=ledger.wrap(self.train, "train"), eval=ledger.wrap(self.eval, "eval"),
            backward=ledger.wrap(self.backward, "backward"), name=self.label,
            takes_keep_prob=self.convention.takes_keep_prob)

    def bound_eval(self, keep_prob):
        if self.eval is None:
            return None
        conv = keep_prob_convention(self.eval, keep_prob_means=self.keep_prob_means)
        if not conv.takes_keep_prob:
            return self.eval
        arg = 1.0 - keep_prob if conv.means == "drop" else keep_prob
        return lambda x: self.eval(x, arg)


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
    for flag in ("inplace", "validates_keep_prob"):
        if not isinstance(getattr(impl, flag), (bool, np.bool_)):
            raise TypeError(f"`{flag}` must be True or False; got {getattr(impl, flag)!r}")
    if impl.takes_keep_prob is not None and not isinstance(impl.takes_keep_prob, (bool, np.bool_)):
        raise TypeError(f"`takes_keep_prob` must be True, False or None; got {impl.takes_keep_prob!r}")
    if impl.channel_axis is not None and (isinstance(impl.channel_axis, bool)
                                          or not isinstance(impl.channel_axis, (int, np.integer))):
        raise TypeError(f"`channel_axis` must be an int or None; got {impl.channel_axis!r}")
    callable_iv(impl.reseed, "reseed", optional=True, what="callable reseed(seed)")
    _ = impl.convention  # an ambiguous signature is a usage error, raised here with its remedy
    impl.keep_probs()
    return impl


