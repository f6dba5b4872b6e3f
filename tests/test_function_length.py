"""Every function of the library and the Beam jobs reads in one screen: at most 60 lines."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("recsys_ssl", "pipelines")
MAX_LINES = 60


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` of every function or method longer than ``max_lines``
    (from its ``def`` line, decorators excluded, to its last line, docstring included)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > max_lines:
                        found.append(f"{relative}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_60_lines():
    assert long_functions() == [], "split these functions (at most 60 lines each)"


def test_the_check_sees_functions_and_methods():
    assert long_functions(max_lines=5), "the walk found no function at all"
