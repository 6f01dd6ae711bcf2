"""One RNG policy: seeds derive from ``numpy.random.SeedSequence``; global RNGs are restored.

User code often draws from numpy's global RNG (``np.random.rand``) or torch's. Measuring it
reproducibly means seeding those; doing so politely means putting their state back afterwards.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np


def block_rng(seed, index):
    """Generator for block ``index`` of a run seeded by ``seed``.

    ``SeedSequence(seed, spawn_key=(index,))`` is the ``index``-th child that
    ``SeedSequence(seed).spawn`` would give, built in O(1) for any index, so a block's random
    stream does not depend on how blocks are scheduled across workers.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


@contextlib.contextmanager
def seeded_global_rngs(seed, reseed=None):
    """Seed numpy's legacy global RNG (and torch's, if imported) with ``seed``; restore on exit.

    ``reseed(seed)``, if given, seeds an implementation's own randomness as well (a JAX key, a
    keras seed generator, a TF stateless seed: see ``Implementation.reseed``); it is called after
    the global RNGs are seeded, inside the block.
    """
    np_state = np.random.get_state()
    torch = sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch is not None else None
    np.random.seed(seed % 2**32)
    if torch is not None:
        torch.manual_seed(seed % 2**64)  # torch takes seeds below 2**64 only
    try:
        if reseed is not None:
            reseed(seed)
        yield
    finally:
        np.random.set_state(np_state)
        if torch is not None:
            torch.random.set_rng_state(torch_state)
