"""One entry point for framework objects: :func:`implementation` turns a layer into an Implementation.

:func:`stats_dropout.verify_dropout` calls :func:`is_layer` on what it was given and, for a
framework layer, :func:`implementation`; plain callables need no adapter.
"""

from __future__ import annotations

import sys

__all__ = ["implementation", "is_layer"]


def is_layer(obj):
    """True for a framework layer object this module adapts (a torch ``nn.Module``, ...)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def implementation(obj, **overrides):
    """The :class:`~stats_dropout.Implementation` of a framework layer ``obj``.

    ``overrides`` are Implementation fields that replace what is read from the object
    (``keep_prob``, ``contract``, ``name``, ...).
    """
    import dataclasses

    from stats_dropout.verification.adapters.ready import torch_implementation

    if not is_layer(obj):
        raise TypeError(f"`obj` must be a framework dropout layer (torch nn.Module); got {obj!r}")
    impl = torch_implementation(obj)
    return dataclasses.replace(impl, **{k: v for k, v in overrides.items() if v is not None})
