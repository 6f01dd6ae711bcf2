"""Flax dropout layers (``nnx.Dropout``, ``linen.Dropout``) -> Implementations.

Flax's conventions and what they become here:

``rate``
    The drop probability: ``keep_prob = 1 − rate`` (:func:`~.pytorch.keep_prob_from_rate`).
``broadcast_dims``
    Axes along which one mask is broadcast: ``shared_axes`` as they are.
``deterministic``
    ``deterministic=False`` is train, ``deterministic=True`` is eval; passed at call time, so a
    layer built with either value is run in both modes and left as it was.
``rngs`` / ``rng_collection``
    The key comes from the adapter's :class:`~.jax_functions.KeyState`, reset from the
    battery's seed by ``reseed``: a fresh key per train call (nnx: ``rngs=key`` at call time;
    linen: ``rngs={rng_collection: key}`` in ``apply``). The layer's own ``Rngs`` are not
    touched, so nothing the user passed changes.
"""

from __future__ import annotations

import sys

import numpy as np

from stats_dropout.verification.adapters.common import add_note, named
from stats_dropout.verification.adapters.jax_functions import KeyState, import_jax, to_numpy
from stats_dropout.verification.adapters.pytorch import keep_prob_agrees, keep_prob_from_rate


def _flax_classes():
    """``(nnx.Dropout, linen.Dropout)`` for what the user has imported (None for the rest)."""
    nnx = sys.modules.get("flax.nnx")
    linen = sys.modules.get("flax.linen")
    return getattr(nnx, "Dropout", None), getattr(linen, "Dropout", None)


def is_flax_layer(obj):
    """True for a flax ``nnx.Module`` or ``linen.Module`` (flax imported by the user)."""
    nnx = sys.modules.get("flax.nnx")
    linen = sys.modules.get("flax.linen")
    return ((nnx is not None and isinstance(obj, getattr(nnx, "Module", ()))) or
            (linen is not None and isinstance(obj, getattr(linen, "Module", ()))))


def flax_implementation(layer, *, keep_prob=None, name=None, seed=0):
    """:class:`~stats_dropout.Implementation` of a flax ``nnx.Dropout`` or ``linen.Dropout``.

    Parameters
    ----------
    layer : flax.nnx.Dropout or flax.linen.Dropout
        Its ``rate`` gives keep_prob, its ``broadcast_dims`` the shared axes.
    keep_prob : float, optional
        Must agree with ``1 − layer.rate`` if given.
    name : str, optional
    seed : int
        Initial key seed (the battery reseeds).

    Returns
    -------
    Implementation
        Contract ``"inverted"`` (flax scales kept units by ``1 / keep_prob``), probe float32,
        ``rng_source="flax-rngs"``.

    Raises
    ------
    TypeError
        If ``layer`` is not a flax Dropout layer.
    ValueError
        If ``keep_prob`` disagrees with the layer's rate.
    """
    from stats_dropout.verification.implementation import Implementation

    jax = import_jax()
    nnx_dropout, linen_dropout = _flax_classes()
    if nnx_dropout is not None and isinstance(layer, nnx_dropout):
        style = "nnx"
    elif linen_dropout is not None and isinstance(layer, linen_dropout):
        style = "linen"
    else:
        raise TypeError(f"`layer` must be a flax nnx.Dropout or linen.Dropout; got {type(layer).__name__}")
    own = keep_prob_agrees(keep_prob, keep_prob_from_rate(layer.rate, "layer.rate"),
                           f"{style}.Dropout(rate={layer.rate})")
    keys = KeyState(seed)
    label = name or f"{style}.Dropout(rate={layer.rate})"

    def run(x, training):
        arr = jax.numpy.asarray(x)
        try:
            if style == "nnx":
                y = layer(arr, deterministic=not training, rngs=keys.next() if training else None)
            else:
                rngs = {layer.rng_collection: keys.next()} if training else {}
                y = layer.apply({}, arr, deterministic=not training, rngs=rngs)
        except Exception as exc:
            raise add_note(exc, f"raised by {label} with deterministic={not training}") from None
        return to_numpy(y)

    train = named(lambda x: run(x, True), f"{label}.train", "deterministic=False, a fresh key per call.")
    evaluate = named(lambda x: run(x, False), f"{label}.eval", "deterministic=True.")
    axes = tuple(int(a) for a in (layer.broadcast_dims or ()))
    return Implementation(train, evaluate, keep_prob=own, contract="inverted", shared_axes=axes,
                          name=label, dtype=np.dtype(np.float32), reseed=keys.reseed, rng_source="flax-rngs",
                          validates_keep_prob=False)
