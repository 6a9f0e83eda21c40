"""
No import circles inside the package.

Every module under ``statemachine_orch/`` is parsed with :mod:`ast` (nothing is
imported) and the imports between the package's own modules become a graph:

* the *runtime* graph counts imports at module level and inside functions and
  classes, and skips ``if TYPE_CHECKING:`` blocks;
* the *typing* graph counts the ``if TYPE_CHECKING:`` imports too: a module that
  names another only in annotations still depends on it, and a circle there is
  a circle in the design that type checkers (and readers) have to untangle.

Both must be free of cycles; a failure names one cycle, edge by edge, with the
line of each import.

An import inside a function is counted like any other: moving an import into a
function hides a circle from Python's import machinery, not from this test.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

PACKAGE = "statemachine_orch"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

Graph = dict[str, dict[str, int]]
"""Module -> imported module -> line of the first such import."""

ALLOWED_IN_TYPING_GRAPH: frozenset[str] = frozenset()
"""Modules whose cycles the typing graph does not report yet (none since the engine split, issue 9)."""


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, *, typing_too: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under *node*, at any depth (functions and classes included)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test) and not typing_too:
            for stmt in child.orelse:
                yield from _walk_stmt(stmt, typing_too=typing_too)
        else:
            yield from _walk(child, typing_too=typing_too)


def _walk_stmt(stmt: ast.stmt, *, typing_too: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        yield stmt
    else:
        yield from _walk(stmt, typing_too=typing_too)


def _imported(module: str, is_package: bool, stmt: ast.Import | ast.ImportFrom, known: Iterable[str]) -> Iterator[str]:
    """The package modules that *stmt*, written in *module*, imports."""
    modules = set(known)
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.name in modules:
                yield alias.name
        return
    if stmt.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (stmt.level - 1)]
        source = ".".join([*base, stmt.module] if stmt.module else base)
    else:
        source = stmt.module or ""
    for alias in stmt.names:
        # ``from pkg import submodule`` imports the submodule; ``from mod import name`` the module.
        submodule = f"{source}.{alias.name}"
        if submodule in modules:
            yield submodule
        elif source in modules:
            yield source


def import_graph(*, typing_too: bool) -> Graph:
    """The imports between the package's modules (``typing_too``: ``if TYPE_CHECKING:`` ones included)."""
    files = module_files()
    graph: Graph = {name: {} for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for stmt in _walk(tree, typing_too=typing_too):
            for target in _imported(name, path.name == "__init__.py", stmt, files):
                if target != name:
                    graph[name].setdefault(target, stmt.lineno)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of *graph* as ``[a, b, ..., a]``, or ``None`` when it has none."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        # Iterative depth-first search; `path` is the current chain from `start`.
        path: list[str] = [start]
        on_path = {start}
        todo: list[Iterator[str]] = [iter(sorted(graph[start]))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


def strongly_connected(graph: Graph) -> list[set[str]]:
    """The groups of two or more modules that all reach each other (Tarjan), each holding a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: set[str] = set()
            while not group or node not in group:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per group of modules that import each other, round and round."""
    cycles: list[list[str]] = []
    for group in strongly_connected(graph):
        cycle = find_cycle({m: {t: line for t, line in graph[m].items() if t in group} for m in group})
        assert cycle is not None
        cycles.append(cycle)
    return cycles


def describe(cycle: list[str], graph: Graph) -> str:
    """The cycle, one import per line: ``a -> b (a.py line 12)``."""
    lines = [f"import cycle: {' -> '.join(cycle)}"]
    for source, target in itertools.pairwise(cycle):
        lines.append(f"  {source} imports {target} (line {graph[source][target]})")
    return "\n".join(lines)


def without(graph: Graph, modules: Iterable[str]) -> Graph:
    """*graph* without *modules* and the edges into them."""
    dropped = set(modules)
    return {
        m: {t: line for t, line in edges.items() if t not in dropped} for m, edges in graph.items() if m not in dropped
    }


def test_the_graph_sees_the_package() -> None:
    graph = import_graph(typing_too=False)
    assert {PACKAGE, f"{PACKAGE}._spec", f"{PACKAGE}.testing._engine"} <= graph.keys()
    assert f"{PACKAGE}._errors" in graph[f"{PACKAGE}._checks"]
    assert f"{PACKAGE}._engine" in graph[f"{PACKAGE}.testing._engine"]


def test_find_cycle_finds_one() -> None:
    graph: Graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None


def test_find_cycles_finds_each_circle() -> None:
    graph: Graph = {"a": {"b": 1}, "b": {"a": 2, "c": 3}, "c": {"d": 4}, "d": {"c": 5}, "e": {"a": 6}}
    cycles = find_cycles(graph)
    assert sorted(sorted(set(c)) for c in cycles) == [["a", "b"], ["c", "d"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_type_checking_imports_count_only_in_the_typing_graph() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\nelse:\n    from . import c\n"
    tree = ast.parse(source)
    runtime = [s.lineno for s in _walk(tree, typing_too=False)]
    typing_ = [s.lineno for s in _walk(tree, typing_too=True)]
    assert runtime == [1, 5]
    assert typing_ == [1, 3, 5]


def test_imports_inside_functions_count() -> None:
    tree = ast.parse("def f():\n    from ._x import y\n")
    assert [s.lineno for s in _walk(tree, typing_too=False)] == [2]


def test_no_runtime_import_cycles() -> None:
    graph = import_graph(typing_too=False)
    report = "\n".join(describe(cycle, graph) for cycle in find_cycles(graph))
    if report:
        print(report)
        pytest.fail(report)


def test_no_import_cycles_counting_type_checking_imports() -> None:
    graph = without(import_graph(typing_too=True), ALLOWED_IN_TYPING_GRAPH)
    report = "\n".join(describe(cycle, graph) for cycle in find_cycles(graph))
    if report:
        print(report)
        pytest.fail(report)
