"""The package's import graph is layered and acyclic (docs/architecture.md, "Layout").

Read from the source (ast), so lazy imports inside functions and `if TYPE_CHECKING:` imports
count too: a cycle through either is still a cycle for a reader. Command-line adapters
(`cli.py` / `*_cli.py` modules and the top-level `dynaflip_ros/cli.py`) may import any layer.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dynaflip_ros"

# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_compat": set(),
    "configs": set(),
    "resources": set(),
    "episodes": set(),
    "task": set(),
    "robot": {"configs", "episodes"},
    "cameras": {"configs", "resources"},
    "data": {"configs", "task", "_compat"},
    "sim": {"configs", "robot", "cameras", "data", "task", "resources"},
    "encoder": {"configs", "data", "_compat"},
    "export": {"configs", "encoder", "data", "_compat"},
    "inference": {"configs", "encoder", "export", "_compat"},
    "policies": {"configs", "robot", "data", "encoder", "inference", "_compat"},  # robot: UR3 kinematics (tcp_frame)
    "calibration": {"configs", "robot", "cameras", "sim", "resources"},
    "teleop": {"configs", "robot", "cameras", "sim", "data", "task", "resources", "episodes"},
    "eval": {"configs", "robot", "cameras", "sim", "data", "encoder", "export", "inference", "policies",
             "episodes", "task", "resources", "_compat"},
    # the MetaWorld benchmark: its own simulator, our encoder / policy loaders and the eval record helpers
    "metaworld": {"configs", "sim", "data", "encoder", "inference", "policies", "episodes", "eval", "_compat"},
}
UNIVERSAL = {"errors"}  # the UserError base and exit codes: importable from every layer
CORE = set(ALLOWED)  # every package except ros/ (the ROS adapters may import anything)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (module level, functions, TYPE_CHECKING)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dynaflip_ros"):
            out.add(node.module)
            for alias in node.names:  # `from dynaflip_ros.sim import camera` imports a module
                out.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dynaflip_ros"))
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        graph[mod] = {m for m in _imports(path) if m in files and m != mod}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_cli(module: str) -> bool:
    """Command-line adapters: dynaflip_ros/cli.py and modules named cli.py / *_cli.py."""
    last = module.rsplit(".", 1)[-1]
    return last == "cli" or last.endswith("_cli")


def test_every_package_is_in_a_layer():
    packages = {_package(m) for m in _graph()} - {"", "cli", "ros"}
    assert packages <= CORE, f"packages without a layer: {sorted(packages - CORE)}; add them to ALLOWED"


def test_packages_import_only_lower_layers():
    bad = []
    for mod, deps in _graph().items():
        pkg = _package(mod)
        if pkg not in ALLOWED or _is_cli(mod):
            continue
        for dep in sorted(deps):
            dep_pkg = _package(dep)
            if dep_pkg != pkg and dep_pkg not in ALLOWED[pkg] | UNIVERSAL and dep_pkg != "":
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_core_module_imports_ros():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() if _package(m) in CORE and not _is_cli(m)
           for d in deps if _package(d) == "ros"]
    assert not bad, bad


def test_no_import_cycles():
    graph = _graph()
    # ignore package __init__ modules' re-exports of their own submodules (not a reader's cycle)
    edges = {m: {d for d in deps if not (m.startswith(d + ".") or d.startswith(m + "."))} for m, deps in graph.items()}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("limit", [600])
def test_no_module_over_the_size_limit(limit):
    big = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > limit}
    assert not big, f"files over {limit} lines (one concept per file): {big}"


def test_nodes_are_thin_adapters():
    """ROS node classes stay small: parameters, publishers / subscribers, calls into the core."""
    big = {}
    for path in (PACKAGE / "ros" / "nodes").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == "Node"
                                                      for b in node.bases):
                n = node.end_lineno - node.lineno + 1
                if n > 200:
                    big[f"{path.name}:{node.name}"] = n
    assert not big, f"node classes over 200 lines (move the logic into the core): {big}"
