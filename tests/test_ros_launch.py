"""Static checks of launch/pick_into_sink.launch.py and config/pick_into_sink.yaml.

`launch` / `launch_ros` are not installable here (ENVIRONMENT.md), so the launch file is compiled
and inspected by AST: every executable it names must be a setup.py console script pointing at an
importable `main`, its processes must match `ros/bringup.py` (what `dynaflip launch` starts), and
the params file must have exactly one section per node name, each loadable into that node's
config dataclass through real rclpy parameters.
"""
import ast
import importlib
from pathlib import Path

import pytest
import yaml

from dynaflip_ros.ros import bringup

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "pick_into_sink.launch.py"
PARAMS = ROOT / "config" / "pick_into_sink.yaml"


def console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py's entry_points (AST, setup.py is not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    entries = ast.literal_eval(v)
                    return {e.split("=")[0].strip(): e.split("=")[1].strip() for e in entries}
    raise AssertionError("setup.py has no console_scripts")


def launch_nodes() -> list[dict]:
    """Every `Node(...)` call in the launch file: executable, name, condition kind, parameters source."""
    tree = ast.parse(LAUNCH.read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}

    def value(node):
        return constants.get(node.id) if isinstance(node, ast.Name) else ast.literal_eval(node)

    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Node":
            kw = {k.arg: k.value for k in call.keywords}
            cond = kw.get("condition")
            nodes.append({
                "package": value(kw["package"]) if "package" in kw else None,
                "executable": ast.literal_eval(kw["executable"]),
                "name": ast.literal_eval(kw["name"]) if "name" in kw else None,
                "condition": cond.func.id if isinstance(cond, ast.Call) else None,
                "params": ast.unparse(kw["parameters"]) if "parameters" in kw else "",
            })
    return nodes


def test_launch_file_compiles_and_defines_generate_launch_description():
    src = LAUNCH.read_text()
    compile(src, str(LAUNCH), "exec")
    tree = ast.parse(src)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "DeclareLaunchArgument", "IfCondition", "UnlessCondition", "Node"} <= imported
    declared = {ast.literal_eval(c.args[0]) for c in ast.walk(tree)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert {"use_sim", "episodes", "params_file", "encoder_model_dir", "policy_model_dir"} <= declared
    used = {ast.literal_eval(c.args[0]) for c in ast.walk(tree)
            if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "LaunchConfiguration"}
    assert used <= declared, f"LaunchConfiguration of undeclared arguments {used - declared}"


def test_launch_executables_exist_as_console_scripts():
    scripts = console_scripts()
    nodes = launch_nodes()
    assert nodes
    for n in nodes:
        assert n["package"] == "dynaflip_ros"
        assert n["executable"] in scripts, f"{n['executable']} is not a console script of setup.py"
        module, func = scripts[n["executable"]].split(":")
        assert callable(getattr(importlib.import_module(module), func)), scripts[n["executable"]]
        assert "params_file" in n["params"], f"{n['executable']} does not get the params file"


def test_launch_matches_bringup_processes():
    scripts = console_scripts()
    nodes = launch_nodes()
    sim = {n["executable"] for n in nodes if n["condition"] in ("IfCondition", None)}
    real = {n["executable"] for n in nodes if n["condition"] in ("UnlessCondition", None)}
    assert sim == {s.executable for s in bringup.pick_into_sink_processes(use_sim=True)}
    assert real == {s.executable for s in bringup.pick_into_sink_processes(use_sim=False)}
    for spec in bringup.ALL_PROCESSES:  # bringup runs `python -m module` = the console script's module
        assert scripts[spec.executable].split(":")[0] == spec.module
    # a multi-node process must not be renamed (a __node remap would rename every node in it)
    for n in nodes:
        spec = next(s for s in bringup.ALL_PROCESSES if s.executable == n["executable"])
        if len(spec.node_names) > 1:
            assert n["name"] is None
        else:
            assert n["name"] == spec.node_names[0]


def test_params_file_sections_match_node_names():
    doc = yaml.safe_load(PARAMS.read_text())
    node_names = {name for s in bringup.ALL_PROCESSES for name in s.node_names}
    assert set(doc) == node_names
    for name, section in doc.items():
        assert set(section) == {"ros__parameters"}, name


def test_params_file_loads_into_every_node_config():
    """Each section, read by rcl's own YAML parser as parameters of a node of that name, builds
    the node's config dataclass (strict: an unknown or malformed parameter fails)."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    from dynaflip_ros.configs import ros as rc
    from dynaflip_ros.ros.params import load_node_config, node_kwargs

    classes = {"sim_cell": rc.SimCellNodeConfig, "camera": rc.CameraNodeConfig, "ur3_driver": rc.Ur3DriverNodeConfig,
               "encoder": rc.EncoderNodeConfig, "policy": rc.PolicyNodeConfig,
               "episode_manager": rc.EpisodeManagerNodeConfig}
    doc = yaml.safe_load(PARAMS.read_text())
    ctx = rclpy.Context()
    rclpy.init(args=["x", "--ros-args", "--params-file", str(PARAMS)], context=ctx)
    try:
        for name, cls in classes.items():
            node = Node(name, context=ctx, **node_kwargs())
            try:
                cfg = load_node_config(node, cls)
            finally:
                node.destroy_node()
            assert isinstance(cfg, cls)
            if name == "ur3_driver":
                assert cfg.safety.joint_limits_rad[2] == pytest.approx((-3.141592653589793, 3.141592653589793))
            if name == "sim_cell":
                assert cfg.sim.image_hw == tuple(doc["sim_cell"]["ros__parameters"]["sim"]["image_hw"])
            if name == "episode_manager":
                assert cfg.episodes == doc["episode_manager"]["ros__parameters"]["episodes"]
    finally:
        rclpy.shutdown(context=ctx)
