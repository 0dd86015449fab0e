"""launch/*.launch.py against the one graph description (dynaflip_ros/ros/graph.py).

The launch files stay literal launch_ros code; here they are read by AST (tests/launch_static.py)
and must declare exactly the described nodes: package, executable, node name, declaring file,
sim / real branch (resolved through IfCondition / UnlessCondition and includes), parameter
sources (params_file, the overrides file, launch arguments with their value types), remappings
and on_exit=Shutdown. `dynaflip launch` (ros/bringup.py) builds its processes from the same
description, so what `ros2 launch` and `dynaflip launch` start cannot drift apart.
"""
import launch_static as ls
import pytest
import yaml

from dynaflip_ros.ros import bringup, graph
from dynaflip_ros.ros.launch_cli import GRAPHS as CLI_GRAPHS

ROOT = ls.ROOT
ALL_NODES = [n for g in graph.GRAPHS for n in g.nodes]


def _described(n: graph.GraphNode) -> dict:
    return {"file": n.launch_file, "package": n.package, "executable": n.executable, "name": n.name,
            "parameter_files": ["params_file", "overrides_file"] if n.overrides_file else ["params_file"],
            "launch_parameters": [(p.parameter, p.argument, p.value_type) for p in n.launch_parameters],
            "remappings": [tuple(r) for r in n.remappings], "ends_launch": n.ends_launch}


def _declared(file: str, n: ls.NodeCall) -> dict:
    return {"file": file, "package": n.package, "executable": n.executable, "name": n.name,
            "parameter_files": n.parameter_files, "launch_parameters": n.launch_parameters,
            "remappings": n.remappings, "ends_launch": n.on_exit.startswith("Shutdown(")}


def _key(d: dict) -> str:
    return d["executable"]


@pytest.mark.parametrize("g", graph.GRAPHS, ids=[g.name for g in graph.GRAPHS])
@pytest.mark.parametrize("mode", graph.MODES)
@pytest.mark.parametrize("combined", [False, True], ids=["separate", "combined_inference"])
def test_launch_graph_is_the_description(g, mode, combined):
    launched = [_declared(f, n) for f, n in ls.graph(g.launch_file, use_sim=mode == graph.SIM,
                                                     combined_inference=combined)]
    described = [_described(n) for n in g.processes(mode, combined_inference=combined)]
    assert sorted(launched, key=_key) == sorted(described, key=_key)


def test_every_launch_file_node_is_described_once():
    described = {n.executable: n for n in ALL_NODES}
    assert len(described) == len(ALL_NODES), "an executable described twice"
    declared = {(p.name, n.executable) for p in ls.launch_files() for n in ls.parse(p).nodes}
    assert declared == {(n.launch_file, n.executable) for n in ALL_NODES}


def test_branch_conditions_follow_the_modes():
    """A node declared in a graph's top file runs in one branch only through IfCondition /
    UnlessCondition(use_sim); nodes of included files carry no condition (the include has it)."""
    for g in graph.GRAPHS:
        for f, n in ((f, n) for m in graph.MODES for f, n in ls.graph(g.launch_file, m == graph.SIM)):
            node = g.node(n.executable)
            modes = node.modes
            if node.combined_inference != (False, True):  # the encoder process: only without combined inference
                assert node.combined_inference == (False,) and n.condition == "unless:combined_inference"
            elif f != g.launch_file or set(modes) == set(graph.MODES):
                assert n.condition is None, (f, n.executable, n.condition)
            else:
                assert n.condition == ("if:use_sim" if modes == (graph.SIM,) else "unless:use_sim")


def test_multi_node_processes_are_not_renamed():
    for n in ALL_NODES:
        if len(n.hosts) > 1:
            assert n.name is None, n.executable  # a __node remap would rename every node in it
        else:
            assert n.name == n.hosts[0] == n.process_name


def test_default_params_files_are_the_launch_defaults_and_hold_every_hosted_node():
    for g in graph.GRAPHS:
        for mode in graph.MODES:
            stem = g.default_params[mode]
            # the launch file that declares params_file for this branch (real: the included real_cell)
            files = {f for f, _ in ls.graph(g.launch_file, mode == graph.SIM)} | {g.launch_file}
            defaults = {a.default_share_path for f in files for a in ls.parse(ls.LAUNCH_DIR / f).arguments
                        if a.name == "params_file" and a.default_share_path
                        and ls.condition_holds(a.condition, mode == graph.SIM)}
            assert defaults == {f"config/{stem}.yaml"}, (g.name, mode, defaults)
            sections = set(yaml.safe_load((ROOT / "config" / f"{stem}.yaml").read_text()))
            hosted = {h for n in g.processes(mode) for h in n.hosts}
            assert hosted <= sections, (g.name, mode, hosted - sections)


def test_bringup_processes_come_from_the_description():
    for mode in graph.MODES:
        use_sim = mode == graph.SIM
        assert [(s.name, s.executable, s.module, s.node_names) for s in bringup.pick_into_sink_processes(use_sim)] == [
            (n.process_name, n.executable, n.module, n.hosts) for n in graph.PICK_INTO_SINK.processes(mode)]
        main = bringup.pick_into_sink_main(use_sim)
        assert main is None or main in {s.name for s in bringup.pick_into_sink_processes(use_sim)}
    assert bringup.pick_into_sink_main(True) == "episode_manager" and bringup.pick_into_sink_main(False) is None
    assert set(CLI_GRAPHS) <= {g.name for g in graph.GRAPHS}


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode must be one of"):
        graph.PICK_INTO_SINK.processes("hardware")
    with pytest.raises(KeyError):
        graph.PICK_INTO_SINK.node("nope_node")


def test_description_module_is_ros_free():
    import subprocess
    import sys

    code = ("import sys; import dynaflip_ros.ros.graph; "
            "bad = [m for m in ('rclpy', 'yaml', 'numpy', 'torch', 'launch', 'launch_ros') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
