"""Files: CSV with a fixed float format and atomic writes (temporary file, then ``os.replace``)."""

from __future__ import annotations

import os
import tempfile

#: Fixed float format of every CSV: ten significant digits are more than any Monte-Carlo
#: figure here supports, and cut the last-bit noise that would break byte identity.
CSV_FLOAT_FORMAT = "%.10g"


# --- output paths, checked before any computing ------------------------------------------------
def output_dir_iv(path, name="out"):
    """``path`` as a directory that exists (created if needed) and is writable, or ``ValueError``
    naming ``name`` with a one-line reason: a report must fail before its minutes of computing."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{name}` must be a directory; got {path!r}, which is a file")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"`{name}` must be a writable directory; got {path!r} ({exc.strerror or exc})") from None
    return path


def output_file_iv(path, name="csv"):
    """``path`` as a file that can be written, or ``ValueError`` naming ``name`` with a one-line reason.

    A regular file (or a new one) is written by :func:`atomic_write_bytes` through a temporary
    file in its directory: that directory must exist and take a new file, which is tried here
    (permission bits say nothing for root, nor on a read-only or virtual file system such as
    ``/proc``). An existing device or pipe (``/dev/stdout``) is written in place: it must be writable.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"`{name}` must be a file path; got {path!r}, which is a directory")
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"`{name}` is not writable; got {path!r}")
        return path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"`{name}`: directory {directory!r} does not exist; got {path!r}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"`{name}` is not writable; got {path!r}")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"`{name}` must be a writable path: cannot create a file in {directory!r} "
                         f"({exc.strerror or exc}); got {path!r}") from None
    return path


def _is_special(path):
    """An existing path that is neither a regular file nor a directory (a device, a pipe)."""
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


def atomic_write_pickle(path, frame):
    """Pickle a DataFrame to ``path`` via a uniquely named temporary file and ``os.replace``
    (two writers of one cache never share a temporary file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        frame.to_pickle(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """Write ``data`` to ``path`` via a uniquely named temporary file in the same directory and
    ``os.replace``; an existing device or pipe (``/dev/stdout``) is written in place instead
    (replacing it would swap the device node for a regular file)."""
    if _is_special(path):
        with open(path, "wb") as fh:
            fh.write(data)
        return
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
