"""Data flows one way: a module of the function imports only modules below it, and no import
(at module level or deferred inside a function) closes a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cancel_handler"

# Top to bottom; a module imports only from lower layers (or from its own package).
LAYERS: list[set[str]] = [
    {"cli"},
    {"entry"},
    {"handler"},
    {"runtime"},
    {"plan"},
    {"outcomes"},
    {"events"},
    {"envelopes", "boot", "push_auth"},
    {"results", "dli", "errors"},
    {"config"},
    {"logs"},
]
RANK = {name: len(LAYERS) - depth for depth, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def component(module: str) -> str:
    """``cancel_handler.dli.client`` -> ``dli``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_every_module_of_the_function_has_a_layer() -> None:
    unranked = {component(m) for m in modules()} - set(RANK) - {""}
    assert not unranked, f"give these a layer in LAYERS: {sorted(unranked)}"


def test_modules_import_only_downwards() -> None:
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if component(source) != component(target)
        and RANK.get(component(target), 0) >= RANK.get(component(source), 0)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []
