"""Imports point down: the engine names no plugin package, and no vde module imports itself in a circle.

Read from the source with ``ast`` (every import, module-level or inside a function), so the test needs no
optional dependency and sees lazy imports too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "filters", "captioners", "shards", "stiv", "dashboard")
PLUGINS = tuple(p for p in PACKAGES if p != "engine")
# Cycles known and not yet taken apart. run_stage (engine.stage) opens engine.results' stores lazily, and the
# results need the stage contract; through results -> models -> tiny -> registry -> stage the others join in.
# A new cycle fails the test, and so does taking this one apart until it is removed from here.
KNOWN_CYCLES = [["engine.io", "engine.models", "engine.registry", "engine.results", "engine.stage", "engine.tiny"]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The vde modules ``path`` imports (``from pkg import name`` counts as ``pkg.name`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_engine_imports_no_plugin_package() -> None:
    graph = _graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] == "engine"
                    for t in targets if t.split(".")[0] in PLUGINS)
    assert upward == [], "engine/ must not import the packages that plug into it:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 50 and "captioners.fast_lm" in graph  # the source was found
    # a package's __init__ is imported by its own modules; only cycles through real modules count
    modules = {m: {t for t in ts if not _is_package(t)} for m, ts in graph.items() if not _is_package(m)}
    assert _cycles(modules) == KNOWN_CYCLES


def test_cycle_detection_sees_a_lazy_import_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _is_package(name: str) -> bool:
    return (REPO / name.replace(".", "/") / "__init__.py").is_file()
