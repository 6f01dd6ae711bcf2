"""Internal services every layer may use: argument validation, RNG streams, atomic files, executors.

Nothing here imports from any other part of the package.
"""
