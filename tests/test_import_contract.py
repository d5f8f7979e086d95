"""The package's import contract, checked on the source (every import, inside functions too).

- ``cycleqd.models`` never imports ``cycleqd.tasks`` (the engine serves tasks, it does not
  know them), and ``cycleqd.tasks`` never imports ``cycleqd.search`` (tasks score whatever model
  an engine holds; the search is one of their users);
- no module reaches itself through its imports: an import inside a function hides a circle from
  Python at import time, not from the reader who must understand both modules at once.

Why a test and not a linter: it needs nothing installed, and it runs in ``make test`` and
``make lint`` alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cycleqd

PACKAGE = Path(cycleqd.__file__).resolve().parent
FORBIDDEN = [("cycleqd.models", "cycleqd.tasks"), ("cycleqd.tasks", "cycleqd.search")]


def _module_name(path: Path) -> str:
    parts = ["cycleqd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each cycleqd module to the cycleqd modules it imports anywhere in its source."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    root = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*root, base] if base else root)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph()) == []


def test_layers_point_one_way() -> None:
    graph = import_graph()
    broken = [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        for low, high in FORBIDDEN
        if (module == low or module.startswith(low + "."))
        and (target == high or target.startswith(high + "."))
    ]
    assert broken == []


def test_the_checker_finds_a_circle() -> None:
    # the checker itself: a two-module circle and a three-module one are found, a chain is not
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]
