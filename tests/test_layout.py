"""The layout keeps its promises: what a package import loads, no import cycles, one class
per name, and lazy exports that resolve."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(60)

PACKAGES = ("broker", "client", "control_sim", "decoders", "bench")
CLIENT_LIBRARY = (
    "client.sync_client",
    "client.async_client",
    "client.session",
    "client.stream",
    "client.worker",
)


def loaded_after(statement: str) -> list[str]:
    """The modules of ours and the heavy libraries a fresh interpreter holds after it runs
    ``statement``."""
    code = (
        f"import sys\n{statement}\nimport json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{(*PACKAGES, 'zmq', 'numpy', 'msgpack', 'stim', 'qiskit', 'scipy')!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_broker_loads_the_wire_layer_and_no_client_library() -> None:
    loaded = loaded_after("from broker import Broker")
    assert "client.wire" in loaded and "broker.broker" in loaded
    ours = [m for m in loaded if m.split(".")[0] in PACKAGES]
    assert all(m == "client" or m.startswith(("client.wire", "broker")) for m in ours), ours
    assert not set(CLIENT_LIBRARY) & set(loaded)


def test_importing_a_package_loads_nothing_until_a_name_is_used() -> None:
    for package in ("broker", "client", "decoders"):
        assert loaded_after(f"import {package}") == [package]
    loaded = loaded_after("from client import Client")
    assert "client.sync_client" in loaded and "client.worker" not in loaded


def test_lazy_exports_all_resolve() -> None:
    for package in ("broker", "client", "client.wire", "decoders"):
        module = importlib.import_module(package)
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
        assert module.__all__ and not missing, (package, missing)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere: at the top, in functions, and under
    ``if TYPE_CHECKING:`` (a cycle that only type checkers see is still a design cycle)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_there_are_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_two_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(name)
    twins = {cls: mods for cls, mods in where.items() if len(mods) > 1}
    assert not twins, twins
