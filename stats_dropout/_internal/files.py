"""Files: CSV with a fixed float format and atomic writes (temporary file, then ``os.replace``)."""

from __future__ import annotations

import os
import tempfile

#: Fixed float format of every CSV: ten significant digits are more than any Monte-Carlo
#: figure here supports, and cut the last-bit noise that would break byte identity.
CSV_FLOAT_FORMAT = "%.10g"


# --- files ---------------------------------------------------------------------------------
def _default_mode():
    """Permissions of a newly created file under the current umask (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``,
    so a reader (or an interrupted run) never sees a half-written file."""
    atomic_write_bytes(path, text.encode("utf-8"))  # newline="" semantics: no translation


def atomic_write_bytes(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csv(frame, path):
    """Write ``frame`` to ``path`` atomically with :data:`CSV_FLOAT_FORMAT` and ``\\n`` endings.

    Booleans are written as ``True``/``False`` and missing values as an empty field, so the
    bytes depend on the values only.
    """
    text = frame.to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")
    atomic_write_text(path, text)
