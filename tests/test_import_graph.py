"""The import graph of funnel/: data flows one way (corpus → encoders → indexes; query → search →
indexes), so no module imports one above its layer, and no modules import each other in a circle.
Every import counts, the lazy ones inside functions too (they still tie the modules together)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "funnel"

LAYERS: dict[str, int] = {
    # what every layer may use
    "errors": 0,
    "checksums": 0,
    "vectors": 0,
    "formatting": 0,
    "readers": 0,
    "agreement": 0,
    "corpus": 1,
    "spans": 2,
    "models": 2,
    "encoders": 2,
    "layers": 2,
    "indexes": 3,
    "search": 4,
    "tuning": 5,
    "evaluation": 5,
    "training": 5,
    "retriever": 6,
    "backends": 7,
    "integrations": 7,
    "remote": 7,
    "serve": 8,
    "cli": 9,
    "__main__": 9,
    "": 10,  # funnel/__init__.py: the public face imports from everything below it
}


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("funnel", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "funnel":
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                # `from funnel.x import y` names the submodule y when there is one, else x itself.
                found |= submodules if submodules else {node.module}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "funnel"}
        edges[name] = {target for target in found if target in modules and target != name}
    return edges


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in LAYERS, f"{module} belongs to no layer: add its package to LAYERS"
    return LAYERS[top]


def test_no_module_imports_a_higher_layer():
    edges = imports(module_names())
    upward = sorted(f"{a} → {b}" for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "imports against the flow:\n" + "\n".join(upward)


def test_indexes_never_name_the_search_plan():
    edges = imports(module_names())
    assert not [(a, b) for a, targets in edges.items() for b in targets if a.startswith("funnel.indexes") and b.startswith("funnel.search")]


def test_no_import_circle():
    edges = imports(module_names())
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(edges):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " → ".join(circle)
