"""Build hook for the optional C kernel; all metadata lives in pyproject.toml.

``stats_dropout.reference._fastmask`` fuses the compare-rescale pass of unshared Bernoulli dropout. It is
optional: if it cannot be compiled, installation continues and the numpy path (bit-identical
results) is used.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("stats_dropout.reference._fastmask", ["stats_dropout/reference/_fastmask.c"], optional=True,
                             extra_compile_args=["-O3"])])
