"""Probes: the fixed inputs every Monte-Carlo check is run on.

A probe is a standardised N(0, 1) array (sample mean exactly 0, variance exactly 1), drawn from its
own named RNG stream so that it does not depend on how many draws a run makes.
"""

from __future__ import annotations

from stats_dropout._internal.rng import stream_rng

__all__ = ["PROBE_SHAPE", "DEFAULT_PROBE_SHAPE", "scheme_probe", "probe_shape"]

#: Default probe: (batch, channels or time, features or space) — every scheme applies.
PROBE_SHAPE = (32, 4, 8)



def scheme_probe(shape=PROBE_SHAPE, seed=0):
    """A standardised normal probe: sample mean exactly 0 and variance (ddof 0) exactly 1.

    Standardising makes alpha dropout's distribution-level contract an exact expectation over
    the masks (``E mean(y) = 0``, ``E mean(y²) = 1``; THEORY.md §5) for this fixed input.
    """
    x = stream_rng(seed, "probe").standard_normal(shape)
    return (x - x.mean()) / x.std()


#: Default probe of the battery: 2^18 elements.
DEFAULT_PROBE_SHAPE = (256, 1024)


def probe_shape(shared_axes):
    """Default probe shape: 2^18 elements, shared axes of length 2.

    Keep-rate power depends on the number of *independent* mask entries, so shared axes are
    kept short and the free axes long: (256, 1024) without sharing, (256, 256, 2, 2) for
    channel dropout, (2, 131072) for one mask per batch, (512, 2, 256) for a mask shared over
    time (batch, time, features), (65536, 4) for one mask per sample.
    """
    if shared_axes == "spatial":
        return (256, 256, 2, 2)
    if shared_axes == "non_batch":
        return (65536, 4)
    if not shared_axes:
        return DEFAULT_PROBE_SHAPE
    axes = tuple(shared_axes)
    ndim = max([2] + [a + 1 if a >= 0 else -a for a in axes])
    shared = {a % ndim for a in axes}
    if all(i in shared for i in range(1, ndim)):
        ndim += 1  # keep one free non-batch axis (e.g. features after a shared time axis)
    shared = {a % ndim for a in axes}
    free = [i for i in range(ndim) if i not in shared]
    exponent = 18 - len(shared)  # shared axes have length 2
    shape = [2] * ndim
    for j, i in enumerate(free):  # split 2^exponent evenly over the free axes
        share = exponent // len(free) + (j < exponent % len(free))
        shape[i] = 2 ** max(share, 1)
    return tuple(shape)
