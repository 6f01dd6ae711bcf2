"""JAX functions that take a PRNG key -> numpy callables whose keys the battery's seed drives.

JAX has no global RNG: randomness is an explicit key. The adapter keeps one key *state*,
reset from the battery's seed by ``reseed(seed)``, and splits a fresh key from it on every
train call, so two batteries with one seed see the same keys and different seeds differ.
jax is imported only when an adapter is built.
"""

from __future__ import annotations

import inspect

import numpy as np

from stats_dropout._internal.validation import callable_iv
from stats_dropout.verification.adapters.common import add_note, named

RATE_WORDS = ("rate", "drop_prob", "drop_rate", "dropout", "dropout_rate", "dropout_prob", "p_drop", "drop_p")


def import_jax():
    """jax, or an ImportError saying how to install it."""
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised only without jax installed
        raise ImportError("stats_dropout's JAX adapters need jax; install it with "
                          "`pip install stats-dropout[jax]`") from exc
    return jax


class KeyState:
    """A JAX key that ``reseed(seed)`` resets and :meth:`next` splits a fresh subkey from.

    Parameters
    ----------
    seed : int
        Initial seed (the battery reseeds it with its own).
    """

    def __init__(self, seed=0):
        self.jax = import_jax()
        self.reseed(seed)

    def reseed(self, seed):
        # Keys take 64-bit seeds at most (uint32 without x64); fold larger ones in.
        self.key = self.jax.random.key(int(seed) % 2**32)
        self.calls = 0

    def next(self):
        self.key, sub = self.jax.random.split(self.key)
        self.calls += 1
        return sub


def to_numpy(y):
    """A JAX (or numpy) array -> numpy; an odd return value goes to the battery as it is."""
    if hasattr(y, "__array__") and hasattr(y, "shape") and hasattr(y, "dtype"):
        return np.asarray(y)
    return y


def _positional(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]


def key_convention(fn, takes_keep_prob=None):
    """``(takes_keep_prob, means)`` of ``fn(key, x)`` / ``fn(key, x, keep_prob)``.

    A third positional parameter without a default is keep_prob, or the drop rate if its name
    says so (``rate``, ``dropout_rate``, ...: converted by the Implementation as 1 − keep_prob).
    """
    params = _positional(fn)
    third = params[2] if params is not None and len(params) >= 3 else None
    if takes_keep_prob is None:
        takes_keep_prob = third is not None and third.default is inspect.Parameter.empty
    means = "drop" if takes_keep_prob and third is not None and third.name.lower() in RATE_WORDS else "keep"
    return bool(takes_keep_prob), means


def from_jax(fn, eval=None, *, keep_prob, contract="inverted", shared_axes=(), example_input=None,
             takes_keep_prob=None, seed=0, name=None, dtype=np.float32, validates_keep_prob=False):
    """:class:`~stats_dropout.Implementation` of a JAX dropout function ``fn(key, x[, keep_prob])``.

    Parameters
    ----------
    fn : callable
        ``fn(key, x)`` (keep_prob bound inside) or ``fn(key, x, keep_prob)``, where ``key`` is a
        ``jax.random.key``. A third parameter named ``rate`` (or ``dropout_rate``, ...) is read
        as the drop rate, ``rate = 1 − keep_prob``. ``jax.jit``-ed functions are fine.
    eval : callable, optional
        ``eval(x)`` or ``eval(x, keep_prob)``: the inference path (JAX functions rarely have one;
        without it the eval checks are skipped).
    keep_prob : float or sequence of float
        Keep probability ``fn`` implements (``fn(key, x)``), or values to test.
    contract, shared_axes, example_input
        As in :func:`~stats_dropout.verify_dropout`.
    takes_keep_prob : bool, optional
        Overrides the signature.
    seed : int
        Initial key seed (the battery replaces it with its own through ``reseed``).
    name : str, optional
    dtype : dtype, default float32
        Probe dtype: JAX computes in float32 unless ``jax_enable_x64`` is set.
    validates_keep_prob : bool, default False
        Whether ``fn`` rejects keep_prob outside (0, 1] (``jax.random.bernoulli`` does not).

    Returns
    -------
    Implementation
        ``train(x[, keep_prob])`` calls ``fn(next_key, jnp.asarray(x)[, keep_prob])`` with a
        fresh key split from the key state; ``reseed(seed)`` resets that state to
        ``jax.random.key(seed)``; ``rng_source="jax-key"``.
    """
    from stats_dropout.verification.implementation import Implementation

    callable_iv(fn, "fn")
    callable_iv(eval, "eval", optional=True)
    jax = import_jax()
    keys = KeyState(seed)
    takes, means = key_convention(fn, takes_keep_prob)
    label = name or getattr(fn, "__name__", type(fn).__name__)

    def call(x, *arg):
        try:
            y = fn(keys.next(), jax.numpy.asarray(x), *arg)
        except Exception as exc:
            raise add_note(exc, f"raised by {label}(key, x{', keep_prob' if arg else ''}) called by "
                                "stats_dropout.adapters.from_jax") from None
        return to_numpy(y)

    if takes:
        train = named(lambda x, keep_prob: call(x, keep_prob), f"{label}.train")
    else:
        train = named(lambda x: call(x), f"{label}.train")
    evaluate = None
    if eval is not None:
        positional = _positional(eval)
        if positional is not None and len(positional) < 2:
            evaluate = named(lambda x: to_numpy(eval(jax.numpy.asarray(x))), f"{label}.eval")
        else:
            evaluate = named(lambda x, keep_prob: to_numpy(eval(jax.numpy.asarray(x), keep_prob)), f"{label}.eval")
    return Implementation(train, evaluate, keep_prob=keep_prob, contract=contract, shared_axes=shared_axes,
                          example_input=example_input, name=label, takes_keep_prob=takes,
                          keep_prob_means=means, dtype=None if example_input is not None else np.dtype(dtype),
                          reseed=keys.reseed, rng_source="jax-key", validates_keep_prob=validates_keep_prob)
