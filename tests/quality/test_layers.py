"""The package's layers import downwards only: no upward import, no cycle, no borrowed private name.

Every module's imports are read from its syntax tree (function-level imports included, since a
lazy import is still a dependency). The layers, bottom first, are :data:`LAYERS`; a module may
import from its own layer or any layer below it, never above. Within a layer the module graph
must be acyclic. A module never imports another module's ``_private`` name.

This follows Hypothesis's practice of testing the package's own structure (its
``tests/quality`` checks of ``__all__`` and imports): the layering in docs/DESIGN.md is only true
while a test says so.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import stats_dropout

PACKAGE = pathlib.Path(stats_dropout.__file__).parent
NAME = "stats_dropout"

#: Bottom first. The package root (``stats_dropout/__init__.py``, the public API) sits above the
#: library layers and below the entry points.
LAYERS = ("_internal", "reference", "inference", "verification", "studies", "reporting", "", "cli", "plugin")


#: Compiled extension modules (no .py source): each has one consumer, the module named here.
COMPILED = {"_fastmask": "stats_dropout.reference.masks"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([NAME, *parts])


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module):
    """Index in :data:`LAYERS` of a ``stats_dropout...`` module name."""
    parts = module.split(".")[1:]
    head = parts[0] if parts else ""
    if head not in LAYERS:
        raise AssertionError(f"{module} is in no layer: put it in one of the folders {LAYERS}")
    return LAYERS.index(head)


def imports(module, path, known):
    """``(line, target module, imported name or None, source text)`` for every package import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    found.append((node.lineno, alias.name, None, lines[node.lineno - 1].strip()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != NAME:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from package import submodule`
                    found.append((node.lineno, sub, None, lines[node.lineno - 1].strip()))
                else:
                    found.append((node.lineno, target, alias.name, lines[node.lineno - 1].strip()))
    return found


def test_every_module_is_in_a_layer():
    for module in modules():
        layer_of(module)


def test_imports_go_downwards_only():
    known = modules()
    bad = []
    for module, path in known.items():
        for line, target, _, text in imports(module, path, known):
            if layer_of(target) > layer_of(module):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text}  "
                           f"({LAYERS[layer_of(module)] or 'root'} imports from "
                           f"{LAYERS[layer_of(target)] or 'root'}, a layer above it)")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_name():
    known = modules()
    bad = []
    for module, path in known.items():
        for line, target, name, text in imports(module, path, known):
            if COMPILED.get(name) == module:
                continue
            private_submodule = name is None and target.rpartition(".")[2].startswith("_") and (
                target.rpartition(".")[2] not in ("_internal",))
            if target != module and ((name or "").startswith("_") or private_submodule):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text}")
    assert not bad, "imports of another module's private names:\n" + "\n".join(bad)


def find_cycle(graph):
    """One cycle of ``graph`` (module -> {module: (line, text)}) as a list of modules, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph():
    known = modules()
    graph = {}
    for module, path in known.items():
        for line, target, _, text in imports(module, path, known):
            if target != module and target in known:
                graph.setdefault(module, {}).setdefault(target, (path, line, text))
    return graph


def test_no_import_cycles():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = []
        for a, b in zip(cycle, cycle[1:]):
            path, line, text = graph[a][b]
            steps.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text}")
        pytest.fail("import cycle " + " -> ".join(cycle) + ":\n" + "\n".join(steps))


def test_the_checker_catches_a_planted_upward_import_and_cycle(tmp_path, monkeypatch):
    # A copy of two layers with a planted upward import (reference -> verification) and a cycle.
    root = tmp_path / NAME
    (root / "reference").mkdir(parents=True)
    (root / "verification").mkdir()
    for d in (root, root / "reference", root / "verification"):
        (d / "__init__.py").write_text("")
    (root / "reference" / "schemes.py").write_text("from stats_dropout.verification.battery import run\n")
    (root / "verification" / "battery.py").write_text("from stats_dropout.reference import schemes\n"
                                                      "from stats_dropout.reference.schemes import _helper\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", root)
    with pytest.raises(AssertionError, match=r"reference/schemes.py:1: from stats_dropout.verification"):
        test_imports_go_downwards_only()
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
    with pytest.raises(AssertionError,
                       match=r"verification/battery.py:2: from stats_dropout.reference.schemes import _helper"):
        test_no_module_imports_another_modules_private_name()
