"""The package's import graph: no cycle between the subpackages of textgen_jax (models, data,
objectives, finetune, training, ...), counting imports inside functions too, so that a cycle
cannot hide behind a deferred import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "textgen_jax"


def _unit(module: str) -> str:
    """'textgen_jax.finetune.tokens' -> 'finetune'; a top-level module ('textgen_jax.cli')
    is its own unit; the package root is 'textgen_jax'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imported(tree: ast.AST) -> set[str]:
    """The textgen_jax modules a module's source imports, at any depth (functions included)."""
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names
                           if alias.name.split(".")[0] == "textgen_jax")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.split(".")[0] == "textgen_jax"):
            # `from textgen_jax import data` imports the subpackage, not a name of the root.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            modules.update([name for name in names if _is_module(name)] or [node.module])
    return modules


def package_graph() -> dict[str, set[str]]:
    """unit -> the other units its modules import."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        unit = _unit(module)
        targets = {_unit(name) for name in _imported(ast.parse(path.read_text()))}
        graph.setdefault(unit, set()).update(targets - {unit})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of `graph` as [a, b, ..., a], or [] when it is acyclic (depth-first search)."""
    state: dict[str, str] = {}  # 'open' while on the search path, 'done' after
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                return path[path.index(successor):] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_graph_reads_the_imports_of_a_module():
    graph = package_graph()
    # finetune builds on objectives (the Objective interface), never the reverse.
    assert "objectives" in graph["finetune"]
    assert "finetune" not in graph["objectives"]


def test_no_import_cycle_between_subpackages():
    cycle = find_cycle(package_graph())
    assert not cycle, f"import cycle between subpackages of textgen_jax: {' -> '.join(cycle)}"
