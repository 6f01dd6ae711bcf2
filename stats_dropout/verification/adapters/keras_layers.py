"""Keras 3 dropout layers -> Implementations, on any keras backend (jax, torch, tensorflow).

Keras' conventions and what they become here:

``rate``
    The drop probability: ``keep_prob = 1 − rate`` (:func:`~.pytorch.keep_prob_from_rate`).
``noise_shape``
    The mask's shape, 1 where one mask entry is broadcast: ``shared_axes`` are the axes whose
    entry is 1; entries that are neither None nor 1 fix the probe's length on that axis.
``SpatialDropout1D/2D/3D`` and ``data_format``
    One mask per (sample, channel), shared over the spatial axes. ``"channels_last"``
    (keras' default, and always for SpatialDropout1D): input (N, ..., C), ``shared_axes`` the
    axes 1 .. ndim − 2, ``channel_axis=-1``. ``"channels_first"``: input (N, C, ...),
    ``shared_axes`` 2 .. ndim − 1, ``channel_axis=1``.
``GaussianDropout``
    Multiplicative N(1, rate / (1 − rate)) noise: contract ``"gaussian"`` with
    ``keep_prob = 1 − rate`` (variance (1 − p) / p).
``AlphaDropout``
    Contract ``"moments"``.
``training=``
    ``layer(x, training=True)`` is train, ``layer(x, training=False)`` is eval.
``seed`` / ``SeedGenerator``
    The adapter runs a *clone* of the layer (``from_config(get_config())``), so the user's layer
    and its seed generator are never touched; ``reseed(seed)`` sets the clone's
    ``seed_generator.state`` to ``[seed, 0]`` and every train call advances it, as keras does
    (``rng_source="keras-seed"``). Exception: on the torch backend an unseeded ``Dropout``
    without ``noise_shape`` calls ``torch.nn.functional.dropout`` and so draws from torch's
    global RNG, which the battery seeds itself (``rng_source="torch"``).
``dtype`` policy
    The probe has the layer's compute dtype (float32 by default). bfloat16 is not a probe dtype
    of the battery: the probe is float32 holding bfloat16-representable values, and the
    bfloat16 output is widened back to float32 (exact), with ``compute_dtype="bfloat16"``.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from stats_dropout.verification.adapters.common import add_note, named
from stats_dropout.verification.adapters.pytorch import keep_prob_agrees, keep_prob_from_rate

#: keras class name -> (contract, kind); most specific first (isinstance on the user's classes).
KERAS_CLASSES = (
    ("SpatialDropout1D", "inverted", "spatial"),
    ("SpatialDropout2D", "inverted", "spatial"),
    ("SpatialDropout3D", "inverted", "spatial"),
    ("GaussianDropout", "gaussian", "noise"),
    ("AlphaDropout", "moments", "noise_shape"),
    ("Dropout", "inverted", "noise_shape"),
)
SPATIAL_NDIM = {"SpatialDropout1D": 3, "SpatialDropout2D": 4, "SpatialDropout3D": 5}
PROBE_EXPONENT = 18  # the battery's default probe has 2^18 elements


def is_keras_layer(obj):
    """True for a ``keras.layers.Layer`` (keras imported by the user)."""
    keras = sys.modules.get("keras")
    layers = getattr(keras, "layers", None) if keras is not None else None
    return layers is not None and isinstance(obj, getattr(layers, "Layer", ()))


def _keras_class(layer):
    keras = sys.modules["keras"]
    for name, contract, kind in KERAS_CLASSES:
        cls = getattr(keras.layers, name, None)
        if cls is not None and isinstance(layer, cls):
            return name, contract, kind
    raise TypeError(f"`layer` must be a keras Dropout, SpatialDropout1D/2D/3D, GaussianDropout or AlphaDropout "
                    f"layer; got {type(layer).__name__}")


def noise_shape_layout(noise_shape):
    """``(shared_axes, probe_shape)`` for a keras ``noise_shape`` such as ``(None, 1, 8)``.

    Shared axes (entry 1) get length 2, fixed entries their length, and the ``None`` axes share
    the rest of 2^18 elements evenly.
    """
    entries = tuple(noise_shape)
    if not entries:
        raise ValueError(f"`noise_shape` must have at least one entry; got {noise_shape!r}")
    shared = tuple(i for i, e in enumerate(entries) if e == 1)
    fixed = [e for e in entries if e is not None and e != 1]
    free = [i for i, e in enumerate(entries) if e is None]
    budget = PROBE_EXPONENT - len(shared) - sum(math.log2(e) for e in fixed)
    shape = [2 if e == 1 else e for e in entries]
    for j, i in enumerate(free):
        share = int(budget) // len(free) + (j < int(budget) % len(free))
        shape[i] = 2 ** max(share, 1)
    return shared, tuple(int(s) for s in shape)


def _spatial_layout(name, layer):
    ndim = SPATIAL_NDIM[name]
    data_format = getattr(layer, "data_format", None) or "channels_last"
    if data_format == "channels_first":
        return tuple(range(2, ndim)), 1, data_format
    return tuple(range(1, ndim - 1)), -1, data_format


def _bfloat16():
    """numpy's bfloat16 dtype (ml_dtypes, which keras needs anyway), else the name."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - keras depends on ml_dtypes
        return "bfloat16"
    return np.dtype(ml_dtypes.bfloat16)


def _clone(layer):
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as exc:
        raise add_note(exc, f"stats_dropout.adapters could not clone {type(layer).__name__} with "
                            "from_config(get_config()); the adapter runs a clone so that your layer's seed "
                            "generator is never touched") from None


def keras_implementation(layer, *, keep_prob=None, name=None):
    """:class:`~stats_dropout.Implementation` of a keras 3 dropout layer (see the module notes).

    Parameters
    ----------
    layer : keras.layers.Layer
        ``Dropout`` (± ``noise_shape``), ``SpatialDropout1D/2D/3D`` (either ``data_format``),
        ``GaussianDropout`` or ``AlphaDropout`` (or a subclass that ``from_config`` rebuilds).
    keep_prob : float, optional
        Must agree with ``1 − layer.rate`` if given.
    name : str, optional

    Returns
    -------
    Implementation
        ``rng_source="keras-seed"``; probe dtype the layer's compute dtype.

    Raises
    ------
    TypeError
        If ``layer`` is not one of the classes above.
    ValueError
        If ``keep_prob`` disagrees with the layer's rate, or the rate is outside [0, 1).
    """
    from stats_dropout.reference.probes import probe_shape, scheme_probe
    from stats_dropout.verification.implementation import Implementation

    keras = sys.modules.get("keras")
    if keras is None or not is_keras_layer(layer):
        raise TypeError(f"`layer` must be a keras.layers.Layer; got {type(layer).__name__}")
    cls, contract, kind = _keras_class(layer)
    own = keep_prob_agrees(keep_prob, keep_prob_from_rate(layer.rate, "layer.rate"),
                           f"{cls}(rate={layer.rate})")
    shared_axes, channel_axis, shape, extra = (), None, None, ""
    if kind == "spatial":
        shared_axes, channel_axis, data_format = _spatial_layout(cls, layer)
        extra = f", {data_format}" if cls != "SpatialDropout1D" else ""
    elif kind == "noise_shape" and getattr(layer, "noise_shape", None) is not None:
        shared_axes, shape = noise_shape_layout(layer.noise_shape)
        extra = f", noise_shape={tuple(layer.noise_shape)}"
    compute = np.dtype(str(layer.compute_dtype)) if str(layer.compute_dtype) != "bfloat16" else None
    low = compute is None  # bfloat16: float32 probe holding bf16 values, output widened back
    probe_dtype = np.dtype(np.float32) if low else compute
    if low or compute != np.float32:
        extra += f", {layer.compute_dtype}"
    label = name or f"keras.{cls}(rate={layer.rate}{extra})"
    example = None
    if shape is not None or low:
        x = scheme_probe(shape or probe_shape(shared_axes), seed=0)
        if low:
            x = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x.astype(np.float32), "bfloat16")))
        example = x.astype(probe_dtype)
    clone = _clone(layer)
    # keras' torch backend runs an unseeded Dropout without noise_shape through
    # torch.nn.functional.dropout, i.e. torch's global RNG (which the battery seeds), not the
    # layer's SeedGenerator.
    global_torch = (keras.backend.backend() == "torch" and cls == "Dropout" and getattr(layer, "seed", 0) is None
                    and getattr(layer, "noise_shape", None) is None)

    def reseed(seed):
        gen = getattr(clone, "seed_generator", None)
        if gen is not None:
            gen.state.assign(np.array([int(seed) % 2**32, 0], dtype=np.uint32))

    def run(x, training):
        try:
            y = clone(x, training=training)
        except Exception as exc:
            raise add_note(exc, f"raised by {label} called with training={training}") from None
        out = np.asarray(keras.ops.convert_to_numpy(y))
        if low and out.dtype != np.float32 and isinstance(x, np.ndarray) and x.dtype == np.float32:
            out = out.astype(np.float32)  # bfloat16 -> float32 is exact
        return out

    train = named(lambda x: run(x, True), f"{label}.train", "layer(x, training=True).")
    evaluate = named(lambda x: run(x, False), f"{label}.eval", "layer(x, training=False).")
    return Implementation(train, evaluate, keep_prob=own, contract=contract, shared_axes=shared_axes,
                          channel_axis=channel_axis, example_input=example, name=label,
                          dtype=probe_dtype if example is None else None,
                          compute_dtype=_bfloat16() if low else None, reseed=reseed,
                          rng_source="torch" if global_torch else "keras-seed",
                          validates_keep_prob=False)
