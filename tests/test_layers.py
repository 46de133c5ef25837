"""The core's layers (docs/architecture.md): each module imports only modules of its own layer or
of layers below it, counting every import statement — top-level, inside functions and under
``TYPE_CHECKING`` — and no modules import each other in a circle. The facade
(``cil_core/__init__.py``) re-exports the library and is left out of the circle check; the
application layer (``cil_core/app``) sits above it and nothing below imports it.

The import graph is read from the source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cil_core"

#: bottom to top; a module belongs to the first layer with a prefix that matches it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors/options", ("cil_core.errors", "cil_core.options")),
    ("network vocabulary", ("cil_core.network.layers", "cil_core.network.neuron", "cil_core.network.spec",
                            "cil_core.network.observation", "cil_core.network.description",
                            "cil_core.network.finite")),
    ("kernels", ("cil_core.kernels",)),
    ("network runtime", ("cil_core.network",)),
    ("data", ("cil_core.data",)),
    ("hardware", ("cil_core.hardware",)),
    ("training", ("cil_core.training",)),
    ("plugin machinery", ("cil_core.plugin",)),
    ("trainer, fidelity, testing", ("cil_core.trainer", "cil_core.fidelity", "cil_core.testing")),
    ("facade", ("cil_core",)),
    ("application", ("cil_core.app",)),
]
FACADE = "cil_core"
ROOT_MODULES_ALLOWED = 4  # besides __init__, errors and options


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported cil_core module, line)}; ``from pkg import name`` counts as an import
    of the submodule ``pkg.name`` where there is one, else of ``pkg``."""
    edges: dict[str, set[tuple[str, int]]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
            for t in targets:
                if t.split(".")[0] != FACADE:
                    continue
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != mod:
                    edges[mod].add((t, node.lineno))
    return edges


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best < 0:
        raise AssertionError(f"module {module} belongs to no layer: add it to LAYERS in tests/test_layers.py")
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


MODULES = _modules()
EDGES = _imports(MODULES)


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for mod, targets in EDGES.items():
        for target, line in sorted(targets):
            if layer_of(target) > layer_of(mod):
                upward.append(f"{mod} (layer '{LAYERS[layer_of(mod)][0]}') line {line} imports {target} "
                              f"(layer '{LAYERS[layer_of(target)][0]}')")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circle_in_the_core():
    graph = {m: {t for t, _ in ts if t != FACADE} for m, ts in EDGES.items() if m != FACADE}
    assert _cycles(graph) == []


def test_the_library_never_imports_the_application():
    app = [f"{m} imports {t}" for m, ts in EDGES.items() for t, _ in ts
           if t.startswith("cil_core.app") and not m.startswith("cil_core.app")]
    assert app == []


def test_the_package_root_holds_few_modules():
    root = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "errors", "options"))
    assert len(root) <= ROOT_MODULES_ALLOWED, root


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert _cycles(graph) == expected


def test_the_import_reader_counts_function_level_and_type_only_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "cil_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..high import X\n")
    (pkg / "high.py").write_text("def f():\n    from .sub import low\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    mods = _modules()
    edges = _imports(mods)
    assert {t for t, _ in edges["cil_core.sub.low"]} == {"cil_core.high"}
    assert {t for t, _ in edges["cil_core.high"]} == {"cil_core.sub.low"}
