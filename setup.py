"""Build hook for the optional C kernel; all metadata lives in pyproject.toml.

``stats_dropout.reference._fastmask`` makes the whole train pass of unshared Bernoulli dropout (random
bits, compare, rescale, store) in one pass split over threads (pthreads). It is optional: if it
cannot be compiled, installation continues and the numpy path (bit-identical results) is used.

No ``-march``: the AVX2 loops are compiled per function (target attributes, target_clones) and
chosen at import from the CPU's features, so one build runs on any x86-64.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("stats_dropout.reference._fastmask", ["stats_dropout/reference/_fastmask.c"], optional=True,
                             extra_compile_args=["-O3", "-pthread"], extra_link_args=["-pthread"])])
