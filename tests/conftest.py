"""Shared test configuration: pytester drives the pytest plugin's tests (tests/unit/test_plugin.py).

Keras 3 picks its backend when first imported, and its default (TensorFlow) is not installed
here: every test that imports keras gets the jax backend unless the environment says otherwise
(a child process tests the torch backend explicitly).

Thread pools: torch and BLAS run on one thread in the test run (as tests/unit/test_linear.py and
test_mc_dropout.py already did for their modules), unless the environment says otherwise. The
tests' tensors are tiny: threads only add synchronisation, and on a busy 2-core machine a lot of it
(a DropBlock battery took 0.6 s on one torch thread against 19 s on two while the other core was
busy). No test depends on the number of threads: masks come from seeded RNGs, and every
comparison is between runs of the same process. ``OMP_NUM_THREADS`` is read by torch when it is
first imported (the package imports no framework, so that is after this file) and by BLAS in child
interpreters; numpy's BLAS is already loaded here, so it is limited through threadpoolctl if that is
installed (it is optional, as in stats_dropout._internal.threads).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional: without it BLAS keeps its default threads
    pass
else:
    if os.environ["OMP_NUM_THREADS"] == "1":
        _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")  # for the whole session

pytest_plugins = ["pytester"]
