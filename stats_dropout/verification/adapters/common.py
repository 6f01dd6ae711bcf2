"""Helpers shared by the adapters: naming, exception notes, course constants."""

from __future__ import annotations

import numpy as np  # noqa: F401

#: Field order of the course's ``cache`` tuple.
COURSE_CACHE_FIELDS = ("Z1", "D1", "A1", "W1", "b1", "Z2", "D2", "A2", "W2", "b2", "Z3", "A3", "W3", "b3")

#: Probe shape for the course network: two features, many examples. Its matrix products cost
#: O(features² × examples) per call, so the battery's default (256, 1024) probe spends ~0.2 s
#: a call in BLAS instead of in the dropout; and thin products with a few more features cross
#: OpenBLAS's threading threshold, which on a busy 2-core machine made each call 5x slower
#: (measured per battery: (32768, 2) 3 s, (16384, 4) 21 s).
COURSE_PROBE_SHAPE = (32768, 2)
CACHE_INDEX = {name: i for i, name in enumerate(COURSE_CACHE_FIELDS)}


def add_note(exc, note):
    """Attach ``note`` to ``exc`` (PEP 678) without changing its type or message."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def name_of(func, default="function"):
    return getattr(func, "__name__", default)


def kind_of(obj):
    """``"tuple of length 3"``-style description of an unexpected return value."""
    length = f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""
    return type(obj).__name__ + length


def named(func, name, doc=None):
    """Give an adapter closure a readable name: it shows up in pytest ids and messages."""
    func.__name__ = name
    func.__qualname__ = name
    if doc:
        func.__doc__ = doc
    return func
