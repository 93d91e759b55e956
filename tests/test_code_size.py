"""The size rule: no module in planner/, workers/ or plugins/ over 600 lines, no function over 120 lines.

Read from the source with ``ast`` (nothing of the project is imported). Migrations are generated, so
they are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("planner", "workers", "plugins")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


def _modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.relative_to(ROOT).parts
    )


def _functions(tree: ast.AST):
    """Every function and method, nested ones included, with its qualified name."""

    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_the_packages_are_found():
    names = {path.relative_to(ROOT).as_posix() for path in _modules()}
    assert {"planner/models.py", "workers/tasks.py", "plugins/base.py"} <= names
    assert not any("/migrations/" in name for name in names)


def test_no_module_is_over_600_lines():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}: {lines} lines"
        for path in _modules()
        if (lines := _line_count(path)) > MAX_MODULE_LINES
    ]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_120_lines():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, node in _functions(tree):
            # From the `def` line (decorators not counted) to the last line of the body.
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                offenders.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {name}: {lines} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_the_function_walk_sees_methods_and_nested_functions():
    tree = ast.parse(
        "class A:\n    def m(self):\n        def inner():\n            pass\n\nasync def f():\n    pass\n"
    )
    assert [name for name, _node in _functions(tree)] == ["A.m", "A.m.inner", "f"]
