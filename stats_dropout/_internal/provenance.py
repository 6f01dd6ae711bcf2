"""What code produced a result: the package version and a hash of its own source files.

Caches of computed cells are keyed by this fingerprint, so a cached cell is reused only by the
same code; after an upgrade or an edit, cells are recomputed instead of silently reused.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib

__all__ = ["source_fingerprint"]

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def source_fingerprint():
    """``"<version>+<sha256 of every .py and .c file of the package, first 16 hex digits>"``."""
    from importlib import metadata

    try:
        version = metadata.version("stats-dropout")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        version = "unknown"
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*")):
        if path.suffix in (".py", ".c") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(_PACKAGE).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{version}+{digest.hexdigest()[:16]}"
