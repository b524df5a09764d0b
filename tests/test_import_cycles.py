"""No import cycles among the project's modules, found by reading their import statements.

Every `import` and `from ... import` counts, including the ones inside functions (a lazy
import still ties two modules together); only `if TYPE_CHECKING:` blocks are left out,
because they never run. A cycle that has to stay for a while is allowed below by its one
edge, with the reason, and the allowance fails once the edge is gone so it cannot outlive it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "tmac_core", "tests")

# importer -> imported: why the edge may close a cycle for now
ALLOWED_EDGES: dict[tuple[str, str], str] = {}


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the project's packages, and for the
    Cython modules (.pyx: leaves here, their cimports are C-level)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted([*(REPO_ROOT / package).rglob("*.py"), *(REPO_ROOT / package).rglob("*.pyx")]):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking_block(child))


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """`name` itself if it is a project module, else its nearest project package (a.b.c -> a.b)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports (itself excluded)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    if path.suffix == ".pyx":
        return found
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            # `from a import b` imports a.b when that is a module, else a name from a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            owner = _owning_module(target, modules)
            if owner is not None and owner != module:
                found.add(owner)
    return found


@functools.cache
def _parsed_graph() -> dict[str, frozenset[str]]:
    modules = project_modules()
    return {name: frozenset(imports_of(name, path, modules)) for name, path in modules.items()}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a fresh copy: callers may edit it)."""
    return {name: set(imported) for name, imported in _parsed_graph().items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(root: str) -> None:
        # iterative depth-first search: (node, iterator over its successors)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles():
    graph = import_graph()
    for importer, imported in ALLOWED_EDGES:
        graph.get(importer, set()).discard(imported)
    assert cycles(graph) == []


def test_every_allowed_edge_still_exists():
    graph = import_graph()
    stale = [edge for edge in ALLOWED_EDGES if edge[1] not in graph.get(edge[0], set())]
    assert stale == [], f"remove these allowances from ALLOWED_EDGES, their imports are gone: {stale}"


def test_the_cycle_finder_sees_lazy_imports():
    # Guards the tests above: a finder that missed function-level or relative imports would pass
    # for nothing. The old main <-> self_test cycle was a lazy import on one side.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = project_modules()
    assert "app.main" in imports_of("app.__main__", modules["app.__main__"], modules)  # inside main()
    graph = import_graph()
    assert "tmac_core.tokenizer.base" in graph["tmac_core.tokenizer.bpe"]
    assert "tmac_core.tokenizer.load" in graph["tmac_core.tokenizer"]
    assert "tmac_core.models._llama" in graph["tmac_core.models.loader"]  # a Cython module


def test_relative_imports_resolve(tmp_path):
    # The project uses absolute imports only; this keeps a relative one from slipping past.
    probe = tmp_path / "probe.py"
    probe.write_text("from . import store\nfrom .records import Message\nfrom ..catalog import download\n")
    modules = project_modules()
    assert imports_of("app.chat.probe", probe, modules) == {
        "app.chat.store",
        "app.chat.records",
        "app.catalog.download",
    }
