"""The package's shape: its modules import downward only (no cycle, counting the imports inside
functions too), and no module or function is long without saying why."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gankit"
MODULE_LINES, FUNCTION_LINES = 400, 60
LONG_MODULE = "Longer than 400 lines because"  # the module docstring gives the reason
LONG_FUNCTION = "# long:"  # a comment in the function's first lines gives the reason


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph() -> dict[str, set[str]]:
    """module -> the gankit modules it imports anywhere in its body (functions included; `if
    TYPE_CHECKING:` blocks excluded: they never run). `from gankit.x import y` counts gankit.x.y
    when that is a module, else gankit.x."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]

        def visit(node: ast.AST, name: str = name, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                targets = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join(parts + ([child.module] if child.module else []))
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                               for a in child.names]  # fmt: skip
                for t in targets:
                    while t and t not in mods and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t in mods and t != name:
                        graph[name].add(t)
                visit(child)

        visit(ast.parse(path.read_text()))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := dfs(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := dfs(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "gankit.trainer" in graph["gankit"]  # gankit/__init__.py imports it inside __getattr__
    assert "gankit.pair" in graph["gankit.trainer"]


def test_the_package_imports_downward_only():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_long_modules_and_functions_say_why():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        if len(text.splitlines()) > MODULE_LINES and LONG_MODULE not in (
            ast.get_docstring(tree) or ""
        ):
            long_modules.append(f"{name} ({len(text.splitlines())} lines)")
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                head = "\n".join(lines[node.lineno - 1 : node.lineno + 12])
                if n > FUNCTION_LINES and LONG_FUNCTION not in head:
                    long_functions.append(f"{name}.{node.name} ({n} lines)")
    assert not long_modules, (
        f"modules over {MODULE_LINES} lines without '{LONG_MODULE}': {long_modules}"
    )
    assert not long_functions, (
        f"functions over {FUNCTION_LINES} lines without a '{LONG_FUNCTION}' comment: {long_functions}"
    )
