"""The import graph of the repository's packages, read with ``ast`` (module-level and lazy,
function-level imports alike): no cycle anywhere; each package imports only the layers below it
(the function's package never reaches the local tools); inside the function's package, each
module imports only the modules below it; the simulator needs only the standard library."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cancel_handler", "dli_simulator", "devstack", "bench")

# Which packages each package may import (besides third-party ones). dli_simulator stands
# alone; devstack runs the simulator and, for the demo without gcloud, the handler in-process.
MAY_IMPORT = {
    "cancel_handler": {"cancel_handler"},
    "dli_simulator": {"dli_simulator"},
    "devstack": {"devstack", "cancel_handler", "dli_simulator"},
    "bench": {"bench", "devstack", "cancel_handler", "dli_simulator"},
}
# The `dli-cancel` console script's `simulator` and `demo` commands start the local tools; the
# function never imports cli (tests/deploy/test_deploy.py follows main.py's imports).
CLI = "cancel_handler.cli"
CLI_MAY_ALSO_IMPORT = {"dli_simulator", "devstack"}

# The function's own modules, top to bottom (ARCHITECTURE: data flows one way); a module
# imports only from lower layers or from its own subpackage. A new module needs a layer here.
FUNCTION_LAYERS: list[set[str]] = [
    {"cli"},
    {"entry"},
    {"handler"},
    {"runtime"},
    {"plan"},
    {"outcomes"},
    {"events"},
    {"envelopes", "boot", "push_auth", "approval_page"},
    {"results", "dli", "errors"},
    {"config"},
    {"approvals"},
    {"limits"},
    {"logs", "jsonbody"},
]
RANK = {name: len(FUNCTION_LAYERS) - i for i, names in enumerate(FUNCTION_LAYERS) for name in names}

Graph = Mapping[str, set[str]]


def module_files() -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_names(module: str, source: str, is_package: bool) -> set[tuple[str, str]]:
    """Every import statement anywhere in ``source``, as ``(name, fallback)``: ``from m import
    x`` gives ``("m.x", "m")`` (``x`` may be a submodule or a name in ``m``), ``import m``
    gives ``("m", "m")``; relative imports are resolved."""
    names: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update((alias.name, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            names.update((f"{base}.{alias.name}", base) for alias in node.names)
    return names


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{name}" if name else package


def import_graph() -> dict[str, set[str]]:
    """Module -> the repository modules it imports."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        names = imported_names(module, path.read_text("utf-8"), path.name == "__init__.py")
        targets = {name if name in files else fallback for name, fallback in names}
        graph[module] = {target for target in targets if target in files} - {module}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    found = []
    for component in _components(graph):
        if len(component) > 1:
            found.append(_cycle_in(graph, component))
    return found


def _components(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            result.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph.get(node, ()) & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    raise AssertionError(f"no cycle in the component {sorted(component)}")


def _top(name: str) -> str:
    return name.split(".")[0]


def _lines(found: Iterable[str]) -> str:
    return "\n".join(sorted(found))


# -- the repository ------------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    graph = import_graph()

    assert {_top(m) for m in graph} == set(PACKAGES)
    assert not cycles(graph), "import cycles:\n" + _lines(" -> ".join(c) for c in cycles(graph))


def test_each_package_imports_only_the_layers_below_it() -> None:
    wrong = set()
    for module, path in module_files().items():
        allowed = MAY_IMPORT[_top(module)] | (CLI_MAY_ALSO_IMPORT if module == CLI else set())
        names = imported_names(module, path.read_text("utf-8"), path.name == "__init__.py")
        wrong |= {
            f"{module} imports {fallback}"
            for _, fallback in names
            if _top(fallback) in PACKAGES and _top(fallback) not in allowed
        }

    assert not wrong, _lines(wrong)


def _component(module: str) -> str:
    """``cancel_handler.dli.client`` -> ``dli``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _function_graph() -> dict[str, set[str]]:
    return {
        module: {t for t in targets if _top(t) == "cancel_handler"}
        for module, targets in import_graph().items()
        if _top(module) == "cancel_handler"
    }


def test_every_module_of_the_function_has_a_layer() -> None:
    unranked = {_component(m) for m in _function_graph()} - set(RANK) - {""}

    assert not unranked, f"give these a layer in FUNCTION_LAYERS: {sorted(unranked)}"


def test_the_functions_modules_import_only_downwards() -> None:
    upward = {
        f"{source} imports {target}"
        for source, targets in _function_graph().items()
        for target in targets
        if _component(source) != _component(target)
        and RANK.get(_component(target), 0) >= RANK.get(_component(source), 0)
    }

    assert not upward, _lines(upward)


def test_the_simulator_imports_only_the_standard_library() -> None:
    outside = set()
    for module, path in module_files().items():
        if _top(module) == "dli_simulator":
            names = imported_names(module, path.read_text("utf-8"), path.name == "__init__.py")
            outside |= {
                f"{module} imports {fallback}"
                for _, fallback in names
                if _top(fallback) not in sys.stdlib_module_names
                and _top(fallback) != "dli_simulator"
            }

    assert not outside, _lines(outside)


# -- the checks themselves -----------------------------------------------------------------------


def test_lazy_and_relative_imports_are_read() -> None:
    source = (
        "import json\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "def later():\n"
        "    from cancel_handler.dli import client\n"
    )

    names = imported_names("pkg.sub.mod", source, is_package=False)

    assert names == {
        ("json", "json"),
        ("pkg.sub.sibling", "pkg.sub"),
        ("pkg.other.thing", "pkg.other"),
        ("cancel_handler.dli.client", "cancel_handler.dli"),
    }


def test_a_cycle_is_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}

    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"x": {"y"}, "y": set()}) == []
