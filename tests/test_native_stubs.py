"""The type stubs of the Cython modules (.pyi) describe the compiled modules as built.

mypy reads only the stubs, so a stub that drifts from its .pyx would make the type check
pass on calls that fail at run time. Checked here against the built extensions: the same
public names, and the same parameters (name, order, which have defaults) for every
function and method whose signature the extension exposes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STUBBED = ["tmac_core.kernels._kernels", "tmac_core.models._llama", "tmac_core.loading._fastquant"]


def _stub(module_name: str) -> ast.Module:
    path = REPO_ROOT / (module_name.replace(".", "/") + ".pyi")
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def _public(names: Iterable[str]) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def _defined_in(module: ModuleType) -> set[str]:
    """The module's public names, less what it imported (modules, other modules' classes)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
    }


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) for each parameter, in order."""
    positional = fn.args.posonlyargs + fn.args.args
    first_default = len(positional) - len(fn.args.defaults)
    params = [(a.arg, i >= first_default) for i, a in enumerate(positional)]
    params += [(a.arg, d is not None) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults)]
    return params


def _runtime_params(fn: object) -> list[tuple[str, bool]] | None:
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None  # slot wrappers (__init__ of a cdef class) expose none
    return [(p.name, p.default is not inspect.Parameter.empty) for p in signature.parameters.values()]


@pytest.mark.parametrize("module_name", STUBBED)
def test_stub_names_match_the_extension(module_name):
    module = importlib.import_module(module_name)
    stub = _names(_stub(module_name).body)
    assert _public(stub) == _defined_in(module)
    for name, node in stub.items():
        if isinstance(node, ast.ClassDef):
            members = _names(node.body)
            assert _public(members) == _public(dir(getattr(module, name))), name


@pytest.mark.parametrize("module_name", STUBBED)
def test_stub_signatures_match_the_extension(module_name):
    module = importlib.import_module(module_name)
    checked = 0
    for name, node in _names(_stub(module_name).body).items():
        pairs = []
        if isinstance(node, ast.FunctionDef):
            pairs.append((name, node, getattr(module, name)))
        elif isinstance(node, ast.ClassDef):
            cls = getattr(module, name)
            for member, member_node in _names(node.body).items():
                is_property = isinstance(member_node, ast.FunctionDef) and any(
                    isinstance(d, ast.Name) and d.id == "property" for d in member_node.decorator_list
                )
                if isinstance(member_node, ast.FunctionDef) and not is_property:
                    pairs.append((f"{name}.{member}", member_node, getattr(cls, member)))
        for label, stub_fn, runtime_fn in pairs:
            if stub_fn.name.startswith("__"):
                continue  # __init__ of a cdef class: the extension exposes (*args, **kwargs)
            runtime = _runtime_params(runtime_fn)
            if runtime is not None:
                assert _stub_params(stub_fn) == runtime, label
                checked += 1
    assert checked >= 2  # the check ran on real signatures, not on none
