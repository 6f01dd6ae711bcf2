"""A Jupyter notebook as a verification target: ``stats-dropout verify homework.ipynb:f``.

:func:`load_notebook` reads the notebook with nbformat and runs only what defines things: from
each code cell, the top-level ``import`` / ``from`` statements (and ``try`` blocks of nothing
else), ``def`` and ``class`` statements, and assignments of literal constants (``KEEP_PROB =
0.86``), picked out of the cell's syntax tree with :mod:`ast`. Training loops, data loading,
plots, downloads, ``!shell`` and ``%magic`` lines never run. Each cell's source is registered
with :mod:`linecache`, so tracebacks and ``inspect.getsource`` name the cell and line
(:func:`notebook_place`).

An import that fails (a course helper module missing next to the notebook) is a warning on
stderr, not an error: the function under test may not need it, and if it does its failure names
the missing name.
"""

from __future__ import annotations

import ast
import itertools
import linecache
import os
import re
import sys
import types

from stats_dropout.cli.errors import UsageError

__all__ = ["load_notebook", "definitions", "notebook_place"]

_counter = itertools.count()

#: Pseudo file name of a notebook cell, for linecache and tracebacks.
_CELL_FILE = "<notebook {name} cell {cell}>"
_CELL_RE = re.compile(r"^<notebook (?P<name>.+) cell (?P<cell>\d+)>$")


def _is_literal(node):
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _is_name_target(target):
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts)


def _keeps(node):
    """Whether a top-level statement only defines something."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Assign):
        return all(_is_name_target(t) for t in node.targets) and _is_literal(node.value)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.value is not None and _is_literal(node.value)
    if isinstance(node, ast.Try):  # try: import x / except ImportError: x = None
        body = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        return all(isinstance(s, ast.Pass) or _keeps(s) for s in body)
    return False


def _clean(source):
    """The cell's source with IPython-only lines blanked (line numbers kept); None for a %%cell magic."""
    lines = source.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("%%"):
        return None
    return "\n".join("" if ln.lstrip().startswith(("!", "%")) else ln for ln in lines) + "\n"


def definitions(cells):
    """``[(cell number, kept statements, source)]`` of code cells, numbered from 1 over all cells.

    Parameters
    ----------
    cells : iterable of (cell_type, source)

    Returns
    -------
    list of (int, list of ast.stmt, str) and a list of warnings (cells that do not parse).
    """
    out, warnings = [], []
    for number, (kind, source) in enumerate(cells, start=1):
        if kind != "code":
            continue
        cleaned = _clean(source)
        if cleaned is None:
            continue
        try:
            tree = ast.parse(cleaned)
        except SyntaxError as exc:
            warnings.append(f"cell {number} does not parse as Python (line {exc.lineno}: {exc.msg}); skipped")
            continue
        kept = [node for node in tree.body if _keeps(node)]
        if kept:
            out.append((number, kept, cleaned))
    return out, warnings


def notebook_place(path, line):
    """``"(cell 4, line 2 of homework.ipynb)"`` for a notebook cell's pseudo file, else None."""
    m = _CELL_RE.match(path or "")
    return f"(cell {m.group('cell')}, line {line} of {m.group('name')})" if m else None


def _read(path):
    try:
        import nbformat
    except ImportError:
        raise UsageError("reading a notebook needs nbformat: pip install nbformat "
                         "(or export the notebook as a .py file)") from None
    if not os.path.isfile(path):
        raise UsageError(f"file not found: {path!r}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 — any unreadable notebook is the user's to fix
        raise UsageError(f"reading notebook {path!r} failed: {type(exc).__name__}: {exc}") from None
    return [(cell.get("cell_type"), cell.get("source", "")) for cell in nb.cells]


def _statement(node, lines):
    text = " ".join(lines[node.lineno - 1].split()) if node.lineno <= len(lines) else type(node).__name__
    return text if len(text) <= 60 else text[:59] + "…"


def load_notebook(path, stderr=None):
    """Run a notebook's imports and definitions in a fresh module; return the module.

    The notebook's folder is put on ``sys.path`` first (the course's helper modules sit next
    to it); :func:`stats_dropout.cli.verify.run` restores ``sys.path`` afterwards.
    """
    stderr = sys.stderr if stderr is None else stderr
    cells = _read(path)
    kept, warnings = definitions(cells)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    base = os.path.basename(path)
    name = f"_stats_dropout_notebook_{next(_counter)}_" + re.sub(r"\W", "_", os.path.splitext(base)[0])
    module = types.ModuleType(name)
    module.__file__ = os.path.abspath(path)
    sys.modules[name] = module
    for number, nodes, source in kept:
        filename = _CELL_FILE.format(name=base, cell=number)
        lines = source.splitlines(keepends=True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        for node in nodes:
            code = compile(ast.Module(body=[node], type_ignores=[]), filename, "exec")
            try:
                exec(code, module.__dict__)  # noqa: S102 — the learner's own definitions, on purpose
            except Exception as exc:  # noqa: BLE001 — reported, and the rest still runs
                warnings.append(f"cell {number}: `{_statement(node, lines)}` failed "
                                f"({type(exc).__name__}: {exc}); continuing without it")
    for w in warnings:
        print(f"stats-dropout: warning: {base}: {w}", file=stderr)
    return module
