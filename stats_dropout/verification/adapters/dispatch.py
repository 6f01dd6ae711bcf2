"""One entry point for framework objects: :func:`implementation` turns a layer into an Implementation.

:func:`stats_dropout.verify_dropout` calls :func:`is_layer` on what it was given and, for a
framework layer, :func:`implementation`; plain callables need no adapter. Recognising a layer
never imports a framework: only frameworks the user has imported (``sys.modules``) are asked.

- keras 3 layer: :func:`.keras_layers.keras_implementation` (``rng_source="keras-seed"``)
- flax ``nnx.Dropout`` / ``linen.Dropout``: :func:`.flax_layers.flax_implementation` (``"flax-rngs"``)
- torch ``nn.Module``: :func:`.ready.torch_layer_implementation` (``"torch"``)

Keras comes first: on the torch backend a keras layer is a torch module too.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

__all__ = ["implementation", "is_layer", "framework_of"]


def framework_of(obj):
    """``"keras"``, ``"flax"``, ``"torch"`` or None, asking only frameworks already imported."""
    from stats_dropout.verification.adapters.flax_layers import is_flax_layer
    from stats_dropout.verification.adapters.keras_layers import is_keras_layer

    if is_keras_layer(obj):
        return "keras"
    if is_flax_layer(obj):
        return "flax"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    return None


def is_layer(obj):
    """True for a framework layer object this module adapts (torch ``nn.Module``, keras layer, flax)."""
    return framework_of(obj) is not None


def implementation(obj, *, ndim=None, **overrides):
    """The :class:`~stats_dropout.Implementation` of a framework layer ``obj``.

    Parameters
    ----------
    obj : torch.nn.Module, keras.layers.Layer, flax.nnx.Dropout or flax.linen.Dropout
        Its keep_prob (``1 − rate``), contract, shared axes, channel axis, probe dtype, in-place
        flag and RNG are read from it (see each adapter).
    ndim : int, optional
        torch channel modules only: the input rank to test (batched by default, or the unbatched
        rank: :func:`~.pytorch.torch_ranks`); default the rank of ``example_input`` if given.
    **overrides
        Implementation fields that replace what is read (``example_input``, ``contract``,
        ``name``, ...); None values are ignored. ``keep_prob`` must agree with the layer's rate
        (a torch module of a custom class takes it from here, or from an attribute
        ``keep_prob``, ``p`` or ``rate``).

    Raises
    ------
    TypeError
        If ``obj`` is not a framework layer, or an override is not an Implementation field.
    """
    framework = framework_of(obj)
    if framework is None:
        raise TypeError("`obj` must be a framework dropout layer (torch nn.Module, keras layer, flax nnx.Dropout "
                        f"or linen.Dropout, from a framework you have imported); got {obj!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(_implementation_class())}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown Implementation field(s) in overrides: {unknown}; known: {sorted(fields)}")
    keep_prob = overrides.pop("keep_prob", None)
    name = overrides.get("name")
    if ndim is not None and framework != "torch":
        raise TypeError(f"`ndim` applies to torch channel dropout modules only; got ndim={ndim!r} for a "
                        f"{framework} layer")
    if framework == "keras":
        from stats_dropout.verification.adapters.keras_layers import keras_implementation

        impl = keras_implementation(obj, keep_prob=keep_prob, name=name)
    elif framework == "flax":
        from stats_dropout.verification.adapters.flax_layers import flax_implementation

        impl = flax_implementation(obj, keep_prob=keep_prob, name=name)
    else:
        from stats_dropout.verification.adapters.pytorch import torch_ranks
        from stats_dropout.verification.adapters.ready import torch_layer_implementation

        ranks = [r[0] for r in torch_ranks(obj) if r[0] is not None]
        if ndim is None and ranks and overrides.get("example_input") is not None:
            given = np.ndim(overrides["example_input"])
            if given not in ranks:
                raise ValueError(f"`example_input` has {given} dimensions; {type(obj).__name__} documents "
                                 f"{' or '.join(map(str, ranks))}-D input")
            ndim = given  # the user's probe picks the batched or the unbatched reading
        impl = torch_layer_implementation(obj, ndim=ndim, keep_prob=keep_prob, name=name)
    if "example_input" in overrides and "dtype" not in overrides:
        overrides["dtype"] = None  # the user's probe decides its own dtype
    return dataclasses.replace(impl, **overrides)


def _implementation_class():
    from stats_dropout.verification.implementation import Implementation

    return Implementation
