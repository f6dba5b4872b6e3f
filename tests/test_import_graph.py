"""The package's import graph: layered, without cycles (issue 17).

Every ``import`` / ``from ... import`` of ``recsys_ssl`` and ``pipelines`` modules counts, also
the ones inside functions (a lazy import hides a cycle from Python, not from a reader).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("recsys_ssl", "pipelines")
# The drivers above training: they run `train` (experiments, the demo, tuning trials, the CLI).
MAY_IMPORT_TRAIN = {"recsys_ssl.experiment", "recsys_ssl.demo", "recsys_ssl.tune", "recsys_ssl.cli"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}; ``from pkg import mod`` counts as ``pkg.mod``."""
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    modules = {_module_name(p): p for p in paths}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per cycle found by depth-first search (empty: the graph is acyclic)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_only_the_drivers_import_train():
    importers = {m for m, targets in import_graph().items() if "recsys_ssl.train" in targets}
    assert importers <= MAY_IMPORT_TRAIN, f"{sorted(importers - MAY_IMPORT_TRAIN)} import recsys_ssl.train"


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
