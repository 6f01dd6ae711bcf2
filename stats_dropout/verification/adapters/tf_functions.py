"""TensorFlow dropout functions -> Implementations whose seeds the battery drives.

Two TF conventions:

``fn(x, seed)`` — a stateless op (``tf.nn.experimental.stateless_dropout(x, rate, seed)`` with
    the rate bound, ``tf.random.stateless_*``): ``seed`` is a shape-[2] int32 pair. The adapter
    keeps a base pair ``[seed, 0]`` set by ``reseed(seed)`` and passes ``[seed, call]`` with a
    call counter, so each train call gets a fresh seed pair; ``rng_source="tf-stateless"``.
``fn(x)`` — a stateful op drawing from TF's global seed (``tf.nn.dropout(x, rate)``) or from
    ``tf.random.get_global_generator()``: ``reseed(seed)`` calls ``tf.random.set_seed(seed)`` and
    resets the global ``tf.random.Generator`` in place (``reset_from_seed``; ``set_seed`` alone does
    not reach it); ``rng_source="tf-global"``. Two kinds of stateful randomness stay beyond
    ``reseed``: a ``tf.random.Generator`` that ``fn`` made itself (reproducible only by its own
    seed), and a stateful op inside a ``tf.function``, whose op seed is fixed when the function is
    traced, so every ``reseed`` replays the stream of the seed in force at the trace. Both are still
    verified soundly (successive calls differ); only replaying a run by seed is lost.

Checked against tensorflow-cpu 2.21 (stateless and stateful ops, eager and ``tf.function``,
float32/float64, ``noise_shape``); tests/unit/test_tensorflow.py runs those where TF is installed.

TensorFlow is imported only when ``as_tensors=True`` (the default) and a function is adapted;
without it a clear ImportError says how to install it. ``as_tensors=False`` passes numpy arrays
and a numpy seed pair instead (a numpy stateless function, or testing without TF).
"""

from __future__ import annotations

import inspect

import numpy as np

from stats_dropout._internal.validation import callable_iv
from stats_dropout.verification.adapters.common import add_note, named


def import_tensorflow():
    """tensorflow, or an ImportError saying how to install it."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError("stats_dropout.adapters.from_tf needs TensorFlow, which is not installed; install it "
                          "with `pip install tensorflow-cpu`, or pass as_tensors=False for a function that takes "
                          "numpy arrays and a numpy seed pair") from exc
    return tf


def takes_seed(fn):
    """True for ``fn(x, seed)`` (two positional parameters), False for ``fn(x)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [q for q in params if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 and positional[1].default is inspect.Parameter.empty


class SeedPairs:
    """Seed pairs ``[base, call]`` for stateless TF ops; ``reseed(seed)`` restarts them."""

    def __init__(self, seed=0):
        self.reseed(seed)

    def reseed(self, seed):
        self.base = int(seed) % 2**31  # TF seeds are int32
        self.calls = 0

    def next(self):
        pair = np.array([self.base, self.calls % 2**31], dtype=np.int32)
        self.calls += 1
        return pair


def from_tf(fn, eval=None, *, keep_prob, contract="inverted", shared_axes=(), example_input=None,
            stateless=None, as_tensors=True, name=None, dtype=np.float32):
    """:class:`~stats_dropout.Implementation` of a TensorFlow dropout function.

    Parameters
    ----------
    fn : callable
        ``fn(x, seed)`` (stateless, ``seed`` a shape-[2] int32 pair) or ``fn(x)`` (stateful),
        with the rate bound inside: ``lambda x, seed: tf.nn.experimental.stateless_dropout(x,
        rate=0.2, seed=seed)`` is ``keep_prob=0.8``.
    eval : callable, optional
        ``eval(x)``: the inference path (TF functions have none: usually ``lambda x: x``).
    keep_prob : float
        The keep probability ``fn`` implements (``1 − rate``).
    contract, shared_axes, example_input
        As in :func:`~stats_dropout.verify_dropout` (TF's ``noise_shape`` with 1 on an axis is
        that axis in ``shared_axes``).
    stateless : bool, optional
        Overrides the signature (two positional parameters: stateless).
    as_tensors : bool, default True
        Convert x to a ``tf.Tensor`` and the output back with ``.numpy()``; False passes numpy.
    name : str, optional
    dtype : dtype, default float32
        Probe dtype (TF's default float type).

    Returns
    -------
    Implementation
        ``reseed`` drives the seed pairs (stateless), or ``tf.random.set_seed`` and the global
        ``tf.random.Generator`` (stateful).

    Raises
    ------
    ImportError
        If ``as_tensors`` is True (or ``fn`` is stateful) and TensorFlow is not installed.
    """
    from stats_dropout.verification.implementation import Implementation

    callable_iv(fn, "fn")
    callable_iv(eval, "eval", optional=True)
    stateless = takes_seed(fn) if stateless is None else bool(stateless)
    tf = import_tensorflow() if as_tensors or not stateless else None
    seeds = SeedPairs()
    label = name or getattr(fn, "__name__", type(fn).__name__)

    def convert_in(x):
        return tf.convert_to_tensor(x) if as_tensors else x

    def convert_out(y):
        return y.numpy() if as_tensors and hasattr(y, "numpy") else y

    def train(x):
        try:
            y = fn(convert_in(x), convert_in(seeds.next())) if stateless else fn(convert_in(x))
        except Exception as exc:
            raise add_note(exc, f"raised by {label} called by stats_dropout.adapters.from_tf") from None
        return convert_out(y)

    def reseed(seed):
        if stateless:
            seeds.reseed(seed)
        else:
            tf.random.set_seed(int(seed) % 2**31)
            tf.random.get_global_generator().reset_from_seed(int(seed) % 2**31)

    evaluate = None if eval is None else named(lambda x: convert_out(eval(convert_in(x))), f"{label}.eval")
    return Implementation(named(train, f"{label}.train"), evaluate, keep_prob=keep_prob, contract=contract,
                          shared_axes=shared_axes, example_input=example_input, name=label,
                          takes_keep_prob=False, dtype=None if example_input is not None else np.dtype(dtype),
                          reseed=reseed, rng_source="tf-stateless" if stateless else "tf-global")
