"""The structure of bridge/, computed from the source (ast): no import cycle, counting every import
statement wherever it is (module level, inside functions, under TYPE_CHECKING); the layers of
docs/architecture.md, none importing a higher one; no hand-written module over 500 lines.

An edge: `import a.b` and `from a.b import c` go to `a.b` (the module that runs), and `from a.b import c`
also to `a.b.c` when that is a module. A package's `__init__` running before its submodules is Python's
doing, not an import statement: not an edge (a package that re-exports its submodules is not a cycle,
but a submodule that imports its own package by name is).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "bridge"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """The bridge modules `module` imports, by every import statement in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    return {
        module: {name for name in _imported(module, path) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert len(MODULES) > 50
    assert "bridge.app" in graph["bridge.cli"]  # inside a function
    assert "bridge.http.transports.base" in graph["bridge.http.transports.mock"]  # module level
    assert "bridge.chat.convert" in graph["bridge.chat.service"]  # `from bridge.chat import convert`


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_bridge() -> None:
    assert _cycles(_graph()) == []


# The layers of docs/architecture.md, lowest first: a module imports its own layer and those below only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "shared",
        (
            "bridge",
            "bridge.errors",
            "bridge.auth",
            "bridge.redaction",
            "bridge.jsoncodec",
            "bridge.address",
            "bridge.gen",
        ),
    ),
    ("upstream", ("bridge.http", "bridge.upstream")),
    ("rpc", ("bridge.rpc",)),
    (
        "services",
        ("bridge.chat", "bridge.models", "bridge.embeddings", "bridge.jsonproto", "bridge.upstream_call"),
    ),
    (
        "composition",
        (
            "bridge.app",
            "bridge.settings",
            "bridge.cli",
            "bridge.dev",
            "bridge.workers",
            "bridge.eventloop",
            "bridge.logs",
            "bridge.mock_gateway",
            "bridge.upstream_metrics",
        ),
    ),
]


def _layer(module: str) -> int:
    """The rank of `module`'s layer: the longest prefix that names it wins ("bridge" alone is shared)."""
    ranked = [
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or (prefix != "bridge" and module.startswith(prefix + "."))
    ]
    assert ranked, f"{module} is in no layer of LAYERS"
    return max(ranked)[1]


def test_every_module_is_in_a_layer_and_none_imports_a_higher_one() -> None:
    upward = sorted(
        f"{module} ({LAYERS[_layer(module)][0]}) -> {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == []


def test_the_rpc_layer_imports_nothing_of_the_settings_nor_of_the_upstream() -> None:
    graph = _graph()
    rpc = [module for module in graph if module.startswith("bridge.rpc")]
    assert len(rpc) > 8
    for module in rpc:
        assert not {t for t in graph[module] if t.startswith(("bridge.settings", "bridge.http"))}, module


def test_address_parsing_imports_nothing_of_the_bridge() -> None:
    assert _graph()["bridge.address"] == set()


def test_no_hand_written_module_exceeds_500_lines() -> None:
    """One concern per module: a module past 500 lines holds more than one (bridge/gen is generated)."""
    long = {
        module: lines
        for module, path in MODULES.items()
        if not module.startswith("bridge.gen")
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}
