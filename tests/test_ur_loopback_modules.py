"""Module layout of `sim.ur_loopback` (issue 9): no import cycle between its modules (imports
under TYPE_CHECKING and inside functions included), every module under 600 lines, and the
package-level names still exported. Static (AST) checks: no sockets, no processes, no clock.
"""
from __future__ import annotations

import ast
import pathlib

import dynaflip_ros.sim.ur_loopback as pkg

PKG = "dynaflip_ros.sim.ur_loopback"
ROOT = pathlib.Path(pkg.__file__).parent


def _graph() -> dict[str, set[str]]:
    """module stem -> stems of the package's modules it imports (anywhere in the file)."""
    modules = {f.stem for f in ROOT.glob("*.py")}
    graph = {}
    for f in ROOT.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == PKG:
                    deps |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith(PKG + "."):
                    deps.add(node.module[len(PKG) + 1:].split(".")[0])
            elif isinstance(node, ast.Import):
                deps |= {a.name[len(PKG) + 1:].split(".")[0] for a in node.names
                         if a.name.startswith(PKG + ".")}
        graph[f.stem] = deps - {f.stem}
    return graph


def test_no_import_cycle_between_modules():
    graph = _graph()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        for d in sorted(graph.get(m, ())):
            assert d not in path, f"import cycle: {' -> '.join(path + [d])}"
            if d not in done:
                visit(d, path + [d])
        done.add(m)

    for m in sorted(graph):
        visit(m, [m])


def test_dashboard_and_script_do_not_import_the_server_or_process():
    graph = _graph()
    for m in ("core", "dashboard", "script_emulation", "rtde_session", "client", "trace", "config"):
        assert not graph[m] & {"server", "process", "cli"}, (m, graph[m])
    assert "controller" not in graph


def test_modules_under_600_lines():
    for f in ROOT.glob("*.py"):
        assert len(f.read_text().splitlines()) < 600, f.name


def test_package_exports():
    assert pkg.__all__ == ["DEFAULT_Q0_RAD", "DEFAULT_UR_VERSION", "INJECT_KINDS", "LoopbackURController"]
    assert pkg.LoopbackURController.__module__ == PKG + ".process"
    assert pkg.DEFAULT_UR_VERSION == (5, 11, 1, 108318)
    assert len(pkg.DEFAULT_Q0_RAD) == 6
