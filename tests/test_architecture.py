"""The package layers, read from the code's own imports (``ast``, nothing is imported).

Bottom to top (docs/DESIGN.md, "Packages and layers"):

1. ``runtime`` bottom: errors, contract (and contract_check, its schema), datafile,
   snapshot, events, atomic, affine, records (and ratelimit, rate-limited log lines): the
   standard library, numpy and each other only.
2. ``firmware_bridge`` wire formats (text, cobs): the runtime bottom only.
3. ``firmware_bridge`` link and tools: the wire formats and the runtime bottom; the rest
   of ``runtime`` (engine, store, daemon, ...) beside it, never importing it.
4. ``pipeline`` (build host): runtime and firmware_bridge.
5. ``stepwise_cli`` (commands; the only home of click), ``bench`` (benchmarks).

Every import counts, also those inside functions: a cycle hidden in a function is
still a cycle. Runs in both environments (it reads files only).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "firmware_bridge", "pipeline", "stepwise_cli", "bench")
CORE_BOTTOM = ("errors", "contract", "datafile", "snapshot", "events", "atomic", "affine", "records")
RUNTIME_BOTTOM = {f"runtime.{m}" for m in (*CORE_BOTTOM, "ratelimit", "contract_check", "datacsv")}
WIRE_FORMATS = {"firmware_bridge.text", "firmware_bridge.cobs"}
BOTTOM_THIRD_PARTY = {"numpy"}
BUILD_ONLY_THIRD_PARTY = {"tensorflow", "keras", "matplotlib", "ai_edge_litert", "tflite_micro"}
# package -> the packages it may import (the layers below it)
BELOW = {
    "runtime": set(),
    "firmware_bridge": {"runtime"},
    "pipeline": {"runtime", "firmware_bridge"},
    "stepwise_cli": {"runtime", "firmware_bridge", "pipeline"},
    "bench": {"runtime", "firmware_bridge", "pipeline"},
}
# (importer package, packages it must never import)
FORBIDDEN = {
    "runtime": {"firmware_bridge", "pipeline", "stepwise_cli", "bench", *BUILD_ONLY_THIRD_PARTY, "click", "serial"},
    "firmware_bridge": {"pipeline", "stepwise_cli", "bench", *BUILD_ONLY_THIRD_PARTY, "click"},
    "pipeline": {"stepwise_cli", "bench", "click"},
    "stepwise_cli": {"bench"},
    "bench": {"click"},
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Every module of the project's packages: dotted name -> file."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name an ``import`` or ``from ... import`` of ``path`` names, anywhere
    in the file (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> project modules it imports, module -> outside top-level names it imports)."""
    edges: dict[str, set[str]] = {}
    outside: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name], outside[name] = set(), set()
        for imported in imported_names(path, name):
            top = imported.split(".")[0]
            if top in {m.split(".")[0] for m in modules}:
                target = imported
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
            elif top and top not in sys.stdlib_module_names:
                outside[name].add(top)
    return edges, outside


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, targets in edges.items():
        pa = a.split(".")[0]
        out.setdefault(pa, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != pa)
    return out


def violations(edges: dict[str, set[str]], outside: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layer rule, as ``importer -> imported: rule``."""
    found = []
    for a in sorted(edges):
        package = a.split(".")[0]
        for b in sorted(edges[a]) + sorted(outside[a]):
            top = b.split(".")[0]
            if top in FORBIDDEN.get(package, ()):
                found.append(f"{a} -> {b}: {package} never imports {top}")
            if top == "click" and package != "stepwise_cli":
                found.append(f"{a} -> click: only stepwise_cli imports click")
            if a in RUNTIME_BOTTOM and b not in RUNTIME_BOTTOM and top not in BOTTOM_THIRD_PARTY:
                found.append(f"{a} -> {b}: the runtime bottom imports only itself and numpy")
            if a in WIRE_FORMATS and top in PACKAGES and b not in RUNTIME_BOTTOM | WIRE_FORMATS:
                found.append(f"{a} -> {b}: wire formats import only the runtime bottom")
            if package == "firmware_bridge" and top == "runtime" and b not in RUNTIME_BOTTOM:
                found.append(f"{a} -> {b}: firmware_bridge imports only the runtime bottom")
    return found


@pytest.fixture(scope="module")
def project():
    modules = project_modules()
    assert {m.split(".")[0] for m in modules} == set(PACKAGES)
    return graph(modules)


def test_no_cycle_between_modules(project):
    edges, _ = project
    assert cycles(edges) == []


def test_no_cycle_between_packages(project):
    edges, _ = project
    assert cycles(package_edges(edges)) == []


def test_every_import_keeps_to_the_layers(project):
    assert violations(*project) == []


def test_the_bottom_and_the_wire_formats_exist(project):
    edges, _ = project
    assert {f"runtime.{m}" for m in CORE_BOTTOM} | WIRE_FORMATS <= set(edges)


def test_the_package_arrows_point_down(project):
    edges, _ = project
    arrows = package_edges(edges)
    assert {p: arrows[p] - BELOW[p] for p in arrows} == {p: set() for p in arrows}
    assert arrows["stepwise_cli"] == BELOW["stepwise_cli"]  # the commands reach every layer


# -- the checker itself finds what it is for ---------------------------------------
def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_modules(root, sorted({rel.split("/")[0] for rel in files}))


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    modules = _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/engine.py": "import numpy\nfrom runtime import store\n",
        "runtime/store.py": "def f():\n    from runtime.engine import Engine\n",
        "runtime/errors.py": "from . import contract\n",
        "runtime/contract.py": "",
    })
    edges, outside = graph(modules)
    assert edges["runtime.errors"] == {"runtime", "runtime.contract"}
    assert outside["runtime.engine"] == {"numpy"}
    assert cycles(edges) == [["runtime.engine", "runtime.store"]]


def test_checker_finds_layer_violations(tmp_path):
    modules = _write(tmp_path, {
        "runtime/__init__.py": "",
        "runtime/daemon.py": "from firmware_bridge.link import Link\n",
        "runtime/errors.py": "import json\nimport serial\n",
        "firmware_bridge/__init__.py": "",
        "firmware_bridge/link.py": "import click\nfrom runtime.engine import Engine\n",
        "runtime/engine.py": "def f():\n    import tensorflow\n",
    })
    edges, outside = graph(modules)
    found = violations(edges, outside)
    assert found == [
        "firmware_bridge.link -> runtime.engine: firmware_bridge imports only the runtime bottom",
        "firmware_bridge.link -> click: firmware_bridge never imports click",
        "firmware_bridge.link -> click: only stepwise_cli imports click",
        "runtime.daemon -> firmware_bridge.link: runtime never imports firmware_bridge",
        "runtime.engine -> tensorflow: runtime never imports tensorflow",
        "runtime.errors -> serial: runtime never imports serial",
        "runtime.errors -> serial: the runtime bottom imports only itself and numpy",
    ]
    assert cycles(package_edges(edges)) == [["firmware_bridge", "runtime"]]
