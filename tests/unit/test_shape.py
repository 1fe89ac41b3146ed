"""The shape of the product code: no module too long to read, no import circle.

A newcomer finds each concern in one module of a readable size (docs/design.md,
"Architecture"), and can read the modules from the bottom up: no module depends, however
indirectly, on one that depends on it. Imports inside functions count too: deferring an
import hides a circle from Python, not from the reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "deployments", "flows", "regjobs", "tasks")
#: Generated or foreign code: Alembic's migrations and the stand-in of the outside systems.
EXCLUDED = (ROOT / "regjobs" / "migrations", ROOT / "standin")
MAX_LINES = 600


def _product_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if not any(path.is_relative_to(excluded) for excluded in EXCLUDED):
                yield path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The product modules `path` imports (anywhere in it, functions included)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name`
            # the module alone.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import a.b.c` needs a.b.c; a name of it that is no module: the nearest one.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in _product_files()}
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its path, first module repeated at the end), or None: a depth-first
    walk that keeps the path it is on."""
    done: set[str] = set()
    for start in sorted(graph):
        path = [start]
        pending = [iter(sorted(graph[start] - done))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                done.add(path.pop())
                pending.pop()
            elif target in path:
                return [*path[path.index(target) :], target]
            elif target not in done:
                path.append(target)
                pending.append(iter(sorted(graph[target] - done)))
    return None


def test_no_product_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _product_files()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_no_import_circle_among_product_modules() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle_and_its_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions_and_submodules() -> None:
    graph = _graph()
    # `regjobs db upgrade` imports the commands inside its function only.
    assert "regjobs.commands" in graph["regjobs.cli"]
    # `from regjobs.ledger import rows, view`: the rooms, not the package.
    assert {"regjobs.ledger.rows", "regjobs.ledger.view"} <= graph["regjobs.commands"]
    assert all(targets <= set(graph) for targets in graph.values())
