"""``MODULE:CALLABLE`` and ``path/to/file.py:CALLABLE`` targets: found, imported, named in errors.

A learner's file is imported from its own folder (so its ``import reg_utils`` finds its
neighbours); a notebook target is handed to :mod:`stats_dropout.cli.notebook`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import os
import sys

from stats_dropout.cli.errors import UsageError

__all__ = ["load_target", "restored_sys_path", "split_target", "is_path", "import_file", "import_module_named"]

_file_counter = itertools.count()


def split_target(target, option):
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(
            f"`{option}` must look like MODULE:CALLABLE or path/to/file.py:CALLABLE; got {target!r}")
    return module_part, attr


def is_path(module_part):
    return module_part.endswith((".py", ".ipynb")) or os.sep in module_part or "/" in module_part


def import_file(path):
    if not os.path.isfile(path):
        raise UsageError(f"file not found: {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    # A learner's file imports its neighbours (helper modules next to the notebook): make
    # them importable for the duration of the run.
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = f"_stats_dropout_target_{next(_file_counter)}_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 — any failure to import is the user's to fix
        sys.modules.pop(name, None)
        raise UsageError(f"importing {path!r} failed: {type(exc).__name__}: {exc}") from None
    return module


def import_module_named(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {name!r} (is it on PYTHONPATH, or did you mean a file path?)") from None
        raise UsageError(f"importing {name!r} failed: ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def load_target(target, option="target"):
    """Import ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``; return ``(module, callable)``.

    Raises
    ------
    UsageError
        Malformed target, missing module or file, an import that raises, a missing attribute
        (the message lists the module's callables) or an attribute that is not callable.
    """
    module_part, attr = split_target(target, option)
    if module_part.endswith(".ipynb"):
        from stats_dropout.cli.notebook import load_notebook

        module = load_notebook(module_part)
    else:
        module = import_file(module_part) if is_path(module_part) else import_module_named(module_part)
    where = module_part
    if not hasattr(module, attr):
        available = sorted(k for k, v in vars(module).items()
                           if callable(v) and not k.startswith("_") and not inspect.isclass(v)
                           and not inspect.ismodule(v))
        hint = f"; its functions: {', '.join(available)}" if available else ""
        raise UsageError(f"{where!r} has no attribute {attr!r}{hint}")
    func = getattr(module, attr)
    if not callable(func):
        raise UsageError(f"{where}:{attr} is not callable; got {type(func).__name__}")
    return module, func


@contextlib.contextmanager
def restored_sys_path():
    """Put ``sys.path`` back afterwards: a file target adds its directory for its own imports."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved
