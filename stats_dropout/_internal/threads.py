"""Thread pools of the libraries we call: BLAS limited to one thread where that is faster."""

from __future__ import annotations

import contextlib

__all__ = ["single_threaded_blas"]


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread within the block (threadpoolctl, if installed; else nothing changes).

    Batteries make thousands of small matrix products (the course network, the linear
    contract's null model: 64 eighs of 32 × 32 took 0.1 s on one thread against 2 s on a busy
    2-core machine); threads only add synchronisation to them, and on a loaded machine a lot of it.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
