"""The ROS 2 node graphs of the package, described once (ROS-free: dataclasses only).

One entry per launch_ros `Node(...)` = one OS process. Three consumers read this description:

  launch/*.launch.py   the ROS 2 Jazzy launch files; they stay literal launch_ros code (readable
                       by anyone who knows launch_ros), and tests/test_ros_launch_graph.py reads
                       them by AST (tests/launch_static.py) and requires them to declare exactly
                       what is described here: package, executable, node name, launch file,
                       condition (sim / real branch), remappings, parameter sources, on_exit;
  ros/bringup.py       `dynaflip launch`: the rclpy-only bring-up for machines without
                       `ros2 launch` builds its process list from `PICK_INTO_SINK`;
  tests                node names = params-file sections (config/pick_into_sink.yaml,
                       config/real_cell.yaml).

Graph `pick_into_sink` (launch/pick_into_sink.launch.py, `use_sim` true|false):

  sim  (pick_into_sink.launch.py, IfCondition(use_sim)):
       sim_cell_node        hosts sim_cell + camera + ur3_driver (one MuJoCo world; no name=,
                            a __node remap would rename all three)
       episode_manager_node (episode_manager)   its exit ends the launch / the bring-up
  real (real_cell.launch.py, included UnlessCondition(use_sim)):
       camera_node (camera), ur3_driver_node (ur3_driver)   each exit ends the launch
  both (encoder_policy.launch.py): encoder_node (encoder), policy_node (policy); with the
       launch argument combined_inference:=true (`dynaflip launch --combined-inference`) no
       encoder_node: the policy node runs the encoder in its own process (CPU-frugal layout,
       `PolicyNodeConfig.encoder_in_process`), so encoder_node carries
       UnlessCondition(combined_inference)

Graph `record_teleop` (launch/record_teleop.launch.py): teleop_recorder_node (teleop_recorder);
`use_sim` there is a node parameter, not a branch.

Graph `ood_session` (launch/ood_session.launch.py): ood_session_node (ood_session), the operator
side of a real-cell OOD session; it runs beside real_cell.launch.py (the cell's graph), not in it.

Parameters: every node reads the graph's params file (`params_file` launch argument; default
config/<default params>.yaml of the package share) with one section per hosted node; some
parameters are overridden from launch arguments (`LaunchParameter`) or by a per-launch overrides
params file written by ros/launch_args.py (`overrides_file`). No topic is remapped: topic names
are fixed in ros/qos.py.
Sources: launch_ros `Node` (package, executable, name, parameters, remappings, on_exit),
https://github.com/ros2/launch_ros/blob/jazzy/launch_ros/launch_ros/actions/node.py ; launch
`IfCondition` / `UnlessCondition`, https://github.com/ros2/launch/tree/jazzy/launch/launch/conditions
"""
from __future__ import annotations

from dataclasses import dataclass

PACKAGE = "dynaflip_ros"
SIM = "sim"
REAL = "real"
MODES: tuple[str, ...] = (SIM, REAL)


@dataclass(frozen=True)
class LaunchParameter:
    """A node parameter set from a launch argument in the Node's parameters dict.

    value_type: "int" / "float" / "str" for `ParameterValue(LaunchConfiguration(argument),
    value_type=...)`; None for a bare `LaunchConfiguration(argument)` (launch_ros types the
    string as YAML)."""

    parameter: str
    argument: str
    value_type: str | None = None


@dataclass(frozen=True)
class GraphNode:
    """One node process of a graph (one launch_ros Node).

    executable: setup.py console script (`ros2 run dynaflip_ros <executable>`); module: the
    `python -m` module the console script points at (`<module>:main`); name: Node(name=...)
    (None: not renamed, the process hosts several nodes); hosts: the ROS node names the process
    creates = its params-file sections; launch_file: the file under launch/ that declares it;
    modes: the `use_sim` branches it runs in (SIM, REAL); launch_parameters: parameters set from
    launch arguments; overrides_file: the launch passes a per-launch overrides params file after
    params_file (ros/launch_args.py); remappings: (from, to) topic remappings; ends_launch:
    on_exit=Shutdown (its exit stops the whole launch); combined_inference: the values of the
    `combined_inference` launch argument it runs under ((False,): only with a separate encoder
    process).
    """

    executable: str
    module: str
    name: str | None
    hosts: tuple[str, ...]
    launch_file: str
    modes: tuple[str, ...] = MODES
    launch_parameters: tuple[LaunchParameter, ...] = ()
    overrides_file: bool = False
    remappings: tuple[tuple[str, str], ...] = ()
    ends_launch: bool = False
    package: str = PACKAGE
    combined_inference: tuple[bool, ...] = (False, True)

    @property
    def process_name(self) -> str:
        """Log prefix of the process (`dynaflip launch`): its first hosted node."""
        return self.hosts[0]


@dataclass(frozen=True)
class Graph:
    """A node graph started by one top-level launch file.

    default_params: mode -> config/<stem>.yaml stem of the default params file; main: mode ->
    process whose exit ends `dynaflip launch` (None: run until interrupted or a process dies).
    """

    name: str
    launch_file: str
    nodes: tuple[GraphNode, ...]
    default_params: dict[str, str]
    main: dict[str, str | None]

    def processes(self, mode: str, combined_inference: bool = False) -> list[GraphNode]:
        """The nodes that run in `mode` (SIM / REAL) and inference layout, in start order.
        Raises ValueError on an unknown mode."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return [n for n in self.nodes if mode in n.modes and bool(combined_inference) in n.combined_inference]

    def node(self, executable: str) -> GraphNode:
        """The node with that executable. Raises KeyError."""
        for n in self.nodes:
            if n.executable == executable:
                return n
        raise KeyError(f"{executable!r} is not a node of graph {self.name!r}")


_NODES = "dynaflip_ros.ros.nodes."

SIM_CELL = GraphNode("sim_cell_node", _NODES + "sim_cell", None, ("sim_cell", "camera", "ur3_driver"),
                     "pick_into_sink.launch.py", modes=(SIM,))
CAMERA = GraphNode("camera_node", _NODES + "camera", "camera", ("camera",), "real_cell.launch.py",
                   modes=(REAL,), overrides_file=True, ends_launch=True)
UR3_DRIVER = GraphNode("ur3_driver_node", _NODES + "ur3_driver", "ur3_driver", ("ur3_driver",),
                       "real_cell.launch.py", modes=(REAL,), overrides_file=True, ends_launch=True)
ENCODER = GraphNode("encoder_node", _NODES + "encoder", "encoder", ("encoder",), "encoder_policy.launch.py",
                    launch_parameters=(LaunchParameter("model_dir", "encoder_model_dir"),
                                       LaunchParameter("backend", "encoder_backend")),
                    combined_inference=(False,))
POLICY = GraphNode("policy_node", _NODES + "policy", "policy", ("policy",), "encoder_policy.launch.py",
                   launch_parameters=(LaunchParameter("model_dir", "policy_model_dir"),
                                      LaunchParameter("instruction", "instruction", "str"),
                                      LaunchParameter("encoder_in_process", "combined_inference", "bool"),
                                      LaunchParameter("encoder.model_dir", "encoder_model_dir"),
                                      LaunchParameter("encoder.backend", "encoder_backend")))
EPISODE_MANAGER = GraphNode("episode_manager_node", _NODES + "episode_manager", "episode_manager",
                            ("episode_manager",), "pick_into_sink.launch.py", modes=(SIM,),
                            launch_parameters=(LaunchParameter("episodes", "episodes", "int"),
                                               LaunchParameter("seed", "seed", "int"),
                                               LaunchParameter("episode_timeout_s", "episode_timeout_s", "float")),
                            ends_launch=True)
OOD_SESSION = GraphNode("ood_session_node", _NODES + "ood_session", "ood_session", ("ood_session",),
                        "ood_session.launch.py", overrides_file=True, ends_launch=True)
TELEOP_RECORDER = GraphNode("teleop_recorder_node", _NODES + "teleop_recorder", "teleop_recorder",
                            ("teleop_recorder",), "record_teleop.launch.py", overrides_file=True, ends_launch=True)

PICK_INTO_SINK = Graph(
    name="pick_into_sink",
    launch_file="pick_into_sink.launch.py",
    nodes=(SIM_CELL, CAMERA, UR3_DRIVER, ENCODER, POLICY, EPISODE_MANAGER),
    default_params={SIM: "pick_into_sink", REAL: "real_cell"},
    main={SIM: "episode_manager", REAL: None},
)
RECORD_TELEOP = Graph(
    name="record_teleop",
    launch_file="record_teleop.launch.py",
    nodes=(TELEOP_RECORDER,),
    default_params={SIM: "real_cell", REAL: "real_cell"},
    main={SIM: "teleop_recorder", REAL: "teleop_recorder"},
)
OOD_SESSION_GRAPH = Graph(
    name="ood_session",
    launch_file="ood_session.launch.py",
    nodes=(OOD_SESSION,),
    default_params={SIM: "real_cell", REAL: "real_cell"},
    main={SIM: "ood_session", REAL: "ood_session"},
)
GRAPHS: tuple[Graph, ...] = (PICK_INTO_SINK, RECORD_TELEOP, OOD_SESSION_GRAPH)


def mode(use_sim: bool) -> str:
    """`use_sim` launch argument / `--sim` flag -> SIM or REAL."""
    return SIM if use_sim else REAL


__all__ = [
    "CAMERA",
    "ENCODER",
    "EPISODE_MANAGER",
    "GRAPHS",
    "MODES",
    "OOD_SESSION",
    "OOD_SESSION_GRAPH",
    "PACKAGE",
    "PICK_INTO_SINK",
    "POLICY",
    "REAL",
    "RECORD_TELEOP",
    "SIM",
    "SIM_CELL",
    "TELEOP_RECORDER",
    "UR3_DRIVER",
    "Graph",
    "GraphNode",
    "LaunchParameter",
    "mode",
]
