"""The package's shape: its import graph has no circles, nothing imports the command line, and the package
docstring names every module (so the map a reader starts from is complete).

These read the source with ``ast`` and import nothing, like ``../shared/tools/import_cycles.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ttt4rec_edu

PACKAGE = Path(ttt4rec_edu.__file__).resolve().parent
_ENTRY_POINTS = {"ttt4rec_edu.__main__", "ttt4rec_edu.cli", "ttt4rec_edu.exercises.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
# the command line: __main__ files and the cli package with its modules (one per command family)
ENTRY_POINTS = _ENTRY_POINTS | {name for name in MODULES if name.startswith("ttt4rec_edu.cli.")}


def _imported_modules(name: str) -> set:
    """The package's modules that ``name`` imports anywhere in its source (module level or inside functions)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:   # `from .data import load_dataset` -> ttt4rec_edu.data
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict:
    # A package's __init__ that re-exports its modules' names is the package's face, not a module with logic of
    # its own: an import of it is an import of the modules it re-exports, so edges *into* an __init__ are skipped
    # (they would make every `from .data import x` inside data/ look like a circle).
    return {name: {t for t in _imported_modules(name) if MODULES[t].name != "__init__.py"} for name in MODULES}


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_library_module_imports_the_command_line():
    offenders = {name: sorted(_imported_modules(name) & ENTRY_POINTS) for name in MODULES
                 if name not in ENTRY_POINTS and _imported_modules(name) & ENTRY_POINTS}
    assert offenders == {}, "the command line imports the library, never the reverse"


def test_main_only_calls_the_command_line():
    tree = ast.parse(MODULES["ttt4rec_edu.__main__"].read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    assert imported == {"cli"}
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


@pytest.mark.parametrize("name", [n for n in MODULES if n != "ttt4rec_edu"
                                  and not n.rpartition(".")[2].startswith("_")])
def test_package_docstring_names_every_module(name):
    assert f"``{name}``" in ttt4rec_edu.__doc__, f"the package docstring of ttt4rec_edu does not name {name}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_docstring(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{MODULES[name].relative_to(PACKAGE.parent)} has no module docstring"


def test_the_package_docstring_lists_modules_downhill():
    """The map reads top-down: a module imports only modules named above it (a package's face excepted)."""
    import re

    order = list(dict.fromkeys(re.findall(r"``(ttt4rec_edu\.[a-z0-9_.]+)``", ttt4rec_edu.__doc__)))
    position = {name: i for i, name in enumerate(order)}
    uphill = [(name, target) for name, targets in _graph().items() for target in sorted(targets)
              if MODULES[name].name != "__init__.py" and name in position and target in position
              and position[target] > position[name]]
    assert uphill == [], "these modules import one listed below them in ttt4rec_edu's docstring"
