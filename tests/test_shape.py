"""Checks that keep the code's shape: no module past 600 lines, no function past 100.

A long module is two modules that have not been told apart yet; a long function is several steps
with no names. Both are measured from the source (ast), so the checks need nothing installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "squall"

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100

# Known to be too long: none since the redesign (issue 8) landed. An entry that is no longer too
# long fails the test below, so this list can only shrink. Nothing new may be added here; split
# the module or the function instead.
# Keys: "path/under/src/squall.py" for a module, "path.py:qualified.name" for a function.
KNOWN_OVERSIZE: frozenset[str] = frozenset()


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _key(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _functions(
    node: ast.AST, prefix: str = ""
) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method under node, with its dotted name (Class.method, outer.inner)."""
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((prefix + child.name, child))
            found.extend(_functions(child, f"{prefix}{child.name}."))
        elif isinstance(child, ast.ClassDef):
            found.extend(_functions(child, f"{prefix}{child.name}."))
        else:
            found.extend(_functions(child, prefix))
    return found


def _function_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    # From the def line to the last line of the body; decorators are not counted.
    return (fn.end_lineno or fn.lineno) - fn.lineno + 1


def _oversize() -> dict[str, int]:
    """Every module and function past its limit, with its length in lines."""
    found: dict[str, int] = {}
    for path in _modules():
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found[_key(path)] = lines
        for name, fn in _functions(ast.parse(source, filename=str(path))):
            length = _function_lines(fn)
            if length > MAX_FUNCTION_LINES:
                found[f"{_key(path)}:{name}"] = length
    return found


def test_no_module_or_function_is_too_long_unless_known() -> None:
    new = {name: n for name, n in _oversize().items() if name not in KNOWN_OVERSIZE}
    assert not new, (
        f"past {MAX_MODULE_LINES} lines a module, or {MAX_FUNCTION_LINES} a function "
        f"(split it into named parts): {new}"
    )


def test_known_oversize_entries_are_still_oversize() -> None:
    # A split has landed: take its entry out of KNOWN_OVERSIZE so that it stays short.
    stale = sorted(KNOWN_OVERSIZE - _oversize().keys())
    assert not stale, f"no longer too long, delete from KNOWN_OVERSIZE: {stale}"


def test_the_shape_check_sees_modules_and_nested_functions() -> None:
    # The measure itself: a method and a nested function are found under their dotted names.
    tree = ast.parse(
        "class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n"
        "async def f():\n    pass\n"
    )
    found = {name: _function_lines(fn) for name, fn in _functions(tree)}
    assert found == {"A.m": 4, "A.m.inner": 2, "f": 2}
    assert _key(SRC / "cli" / "run.py") == "cli/run.py"
    assert len(_modules()) > 10
