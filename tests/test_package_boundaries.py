"""The packages' seams, read from the sources (ast): no import cycle inside
operator/ or worker/, no ``sys.path`` edits there, and nothing imported from the
checkout's tests/, e2e/ or bench/ (the installed packages ship without them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = (ROOT / "operator", ROOT / "worker")
CHECKOUT_ONLY = (ROOT / "tests", ROOT / "e2e", ROOT / "bench")


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the two packages."""
    out = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run (``if TYPE_CHECKING:`` bodies left out)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Dotted names a module imports at run time (module level or in a function);
    ``from pkg import x`` yields ``pkg.x`` and ``pkg`` (x may be a module or a name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            yield origin
            for alias in node.names:
                yield f"{origin}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        graph[name] = {
            target for target in imported_names(name, path) if target in mods and target != name
        }
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

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
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component."""
    return [_a_cycle(graph, comp) for comp in components(graph)]


def _a_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first inside the component: a shortest way back to start
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def test_cycle_finder_finds_and_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_lazy_imports_are_edges(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from .sub.leaf import f\n"
        "if TYPE_CHECKING:\n    from p import typing_only\n"
        "def g():\n    import p.lazy\n"
    )
    got = set(imported_names("p.m", pkg / "m.py"))
    assert {"p.sibling", "p.sub.leaf", "p.lazy"} <= got
    assert not any("typing_only" in n for n in got)


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = [
        f"  {' -> '.join(_a_cycle(graph, comp))}   (all of: {', '.join(sorted(comp))})"
        for comp in components(graph)
    ]
    assert not found, "import cycles in operator/ and worker/:\n" + "\n".join(found)


SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def _sys_path_edits(tree: ast.AST) -> Iterator[int]:
    def is_sys_path(n: ast.AST) -> bool:
        return (
            isinstance(n, ast.Attribute)
            and n.attr == "path"
            and isinstance(n.value, ast.Name)
            and n.value.id == "sys"
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr in SYS_PATH_EDITS and is_sys_path(f.value):
                yield node.lineno
            if f.attr == "addsitedir" and isinstance(f.value, ast.Name) and f.value.id == "site":
                yield node.lineno
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)):
                yield node.lineno


def test_sys_path_edit_finder() -> None:
    code = "import sys, site\nsys.path.insert(0, 'x')\nsys.path += ['y']\nsite.addsitedir('z')\n"
    assert sorted(_sys_path_edits(ast.parse(code))) == [2, 3, 4]
    assert not list(_sys_path_edits(ast.parse("import sys\nenv = ':'.join(sys.path)\n")))


def test_packages_do_not_edit_sys_path() -> None:
    edits = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in modules().values()
        for line in _sys_path_edits(ast.parse(path.read_text()))
    ]
    assert not edits, f"sys.path edited in product code: {edits}"


def checkout_only_names() -> set[str]:
    """Top-level modules and packages of tests/, e2e/ and bench/."""
    names = set()
    for d in CHECKOUT_ONLY:
        for p in d.iterdir():
            if p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))):
                names.add(p.stem if p.suffix == ".py" else p.name)
    return names


@pytest.mark.parametrize("name", ["kube_harness", "fleet", "testkit", "redis_fixtures"])
def test_checkout_only_names_are_known(name: str) -> None:
    assert name in checkout_only_names()


def test_packages_do_not_import_the_checkout() -> None:
    banned = checkout_only_names()
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        targets = set(imported_names(name, path))
        for node in ast.walk(tree):  # importlib.import_module("fleet.demo") and friends
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and getattr(node.func, "attr", getattr(node.func, "id", ""))
                in (
                    "import_module",
                    "__import__",
                )
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets.add(node.args[0].value)
        found += [f"{name} imports {t}" for t in sorted(targets) if t.split(".")[0] in banned]
    assert not found, found


def entry_points() -> set[str]:
    """Console scripts (pyproject) and ``python -m`` mains."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    mains = {name for name in modules() if name.endswith(".__main__")}
    return {target.split(":")[0] for target in scripts.values()} | mains


def test_every_module_serves_the_product() -> None:
    """Reachable from an entry point by imports (or by name, as builtin models are
    loaded); a module that only tests reach is test code and belongs in tests/."""
    mods = modules()
    graph = import_graph()
    for name, path in mods.items():  # "infleet_worker.models.mlp" in a registry
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in mods:
                graph[name].add(str(node.value))
    seen: set[str] = set()
    todo = list(entry_points())
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += graph[name]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run
    assert sorted(set(mods) - seen) == []
