"""`dynaflip launch <graph>`: bring up a ROS 2 node graph without the `ros2` CLI.

Starts the same executables with the same params file as `launch/<graph>.launch.py`
(`ros/bringup.py`), streams their logs with `[process]` prefixes, waits for the episode
manager, prints its summary (success rate, per-stage latency p50/p95) and tears the graph down
(SIGINT, then SIGTERM / SIGKILL). Exit code: the episode manager's (0 = run completed), 1 when a
node died, 2 on bad arguments or missing models, 124 when --timeout-s passed.
The flags become per-node parameter overrides in `ros.launch_args.graph_overrides` (ROS-free).
Only argparse is imported at module level (`dynaflip --help` must not load ROS).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

GRAPHS = ("pick_into_sink",)

EPILOG = """examples:
  dynaflip launch pick_into_sink --sim --episodes 20
  dynaflip launch pick_into_sink --sim --episodes 5 --seed 100 --backend onnxruntime
  dynaflip launch pick_into_sink --sim --episodes 20 --combined-inference   # encoder inside the policy process
  dynaflip launch pick_into_sink --sim --encoder outputs/encoder_onnx --policy outputs/policy
  dynaflip launch pick_into_sink --sim --params-file my_params.yaml --out outputs/run.json
  dynaflip launch pick_into_sink --real --robot-ip 192.168.1.102 --ur-type cb3
  dynaflip launch pick_into_sink --real --robot-ip 192.168.1.102 --instruction "put the red cube in the sink"
  dynaflip launch pick_into_sink --sim --episodes 5 --object "blue bar" --instruction "drop the blue bar into the basin"
  dynaflip launch pick_into_sink --real --robot-ip 192.168.1.102 --ur-type e-series \\
      --camera-serial 012345678901 --gripper none --params-file my_cell.yaml
--real uses config/real_cell.yaml unless --params-file is given; the hardware options override it
(launch/real_cell.launch.py takes the same arguments: ros/launch_args.py maps both).
In simulation every episode places 2-4 objects and draws the target and an instruction naming it
by its seed; episodes end as success, wrong_object, timeout or safety_stop, and the summary and
--out record give success_rate, wrong_object_rate, timeout_rate (Wilson 95 % intervals) overall
and per target object. On the real cell the instruction comes from --instruction
(instruction:=) or a message on /dynaflip/instruction at run time.

On a full ROS 2 install the same graph is:
  ros2 launch dynaflip_ros pick_into_sink.launch.py use_sim:=true episodes:=20
""" + exit_codes_epilog("a node died, or the episode manager's run failed",
                        c124="--timeout-s passed (the graph was torn down)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "launch",
        help="bring up the ROS 2 node graph (sim or real cell) and run episodes",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("graph", choices=GRAPHS, help="which graph (launch/<graph>.launch.py)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sim", dest="use_sim", action="store_true", default=True,
                      help="MuJoCo cell in one sim_cell_node process (default)")
    mode.add_argument("--real", dest="use_sim", action="store_false",
                      help="real cell: camera_node + ur3_driver_node (runs until Ctrl-C)")
    p.add_argument("--params-file", help="ROS 2 params file (default: config/<graph>.yaml of the package)")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID of the graph (default: the environment's)")
    p.add_argument("--timeout-s", type=float, help="wall-clock limit of the whole run (exit code 124)")
    models = p.add_argument_group("models")
    models.add_argument("--encoder", help="encoder artifact dir (default: params file, models/encoder)")
    models.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt", "torch"),
                        help="encoder inference backend (default: params file, auto)")
    models.add_argument("--policy", help="policy checkpoint dir (default: params file, models/policy)")
    models.add_argument("--combined-inference", action="store_true",
                        help="CPU-frugal layout: no encoder process, the policy node runs the encoder in its own "
                             "process (launch argument combined_inference:=true)")
    episodes = p.add_argument_group("episodes (--sim)")
    episodes.add_argument("--episodes", type=int, help="episodes to run (default: params file, 20)")
    episodes.add_argument("--seed", type=int, help="seed of episode 0; episode i uses seed + i")
    episodes.add_argument("--object", dest="object_name",
                          help='target object, e.g. "red cube" (default: from the seed)')
    p.add_argument("--instruction", metavar="TEXT",
                   help='the task sentence, e.g. "put the red cube in the sink": on the real cell the policy\'s '
                        "(latched on /dynaflip/instruction); with --sim sent with every reset, with --object "
                        "(default: real cell the params file's; sim drawn by each episode's seed)")
    episodes.add_argument("--episode-timeout-s", type=float, help="wall-clock limit per episode")
    episodes.add_argument("--startup-timeout-s", type=float, help="how long the episode manager waits for the graph")
    robot = p.add_argument_group("robot (--real; default: the params file)")
    robot.add_argument("--robot-ip", default="", help="UR controller address")
    robot.add_argument("--ur-type", default="", choices=["", "cb3", "e-series"],
                       help="controller generation, sets the 125 / 500 Hz servo rate")
    robot.add_argument("--camera-serial", default="", help="RealSense serial (params file, else the only one)")
    robot.add_argument("--gripper", default="", choices=["", "robotiq_urcap", "none"], help="gripper backend")
    output = p.add_argument_group("output")
    output.add_argument("--out", help="the evaluation record (JSON) (default: outputs/eval/ros_<UTC time>.json)")
    p.set_defaults(func=run)


def build_overrides(args: argparse.Namespace, results_path: str, params_doc: dict | None = None) -> dict[str, dict]:
    """Per-node parameter overrides ({node_name: {param: value}}) of the parsed flags: the flags
    passed to `ros.launch_args.graph_overrides` (which validates the --real hardware options
    over `params_doc`; LaunchArgumentError)."""
    from dynaflip_ros.ros.launch_args import graph_overrides

    return graph_overrides(
        params_doc or {}, use_sim=args.use_sim, results_path=results_path, encoder=args.encoder or "",
        backend=args.backend or "", policy=args.policy or "", episodes=args.episodes, seed=args.seed,
        object_name=args.object_name, instruction=args.instruction, episode_timeout_s=args.episode_timeout_s,
        startup_timeout_s=args.startup_timeout_s, robot_ip=args.robot_ip, ur_type=args.ur_type,
        gripper=args.gripper, camera_serial=args.camera_serial, combined_inference=args.combined_inference)


def launch_graph(graph_name: str, use_sim: bool, params, node_overrides: dict[str, dict], *,
                 combined_inference: bool = False, domain_id: int | None = None, timeout_s: float | None = None,
                 out=None):
    """Run the graph `graph_name` (sim or real cell) with the params file `params` and the
    per-node overrides {node: {param: value}} (written to a temporary params file, deleted
    afterwards) until its main process exits; returns `ros.bringup.GraphResult`. With
    `combined_inference` no encoder process is started (the overrides must then set the policy
    node's `encoder_in_process`, `ros.launch_args.graph_overrides`). The children
    get ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless the environment sets one, and
    ROS_DOMAIN_ID=`domain_id` when given; their logs go to `out` (default stdout)."""
    import os

    from dynaflip_ros.ros import bringup, graph
    from dynaflip_ros.ros.launch_args import write_overrides_file

    description = {g.name: g for g in graph.GRAPHS}[graph_name]
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    specs = [bringup.ProcessSpec.of(n) for n in description.processes(graph.mode(use_sim), combined_inference)]
    overrides = write_overrides_file(node_overrides)  # a fresh temporary file; deleted below
    print(f"dynaflip launch {graph_name} ({'sim' if use_sim else 'real'}): "
          f"{[s.executable for s in specs]} with {params}", flush=True, file=out)
    try:
        return bringup.run_graph(specs, [params, overrides], main=description.main[graph.mode(use_sim)],
                                 env=env, timeout_s=timeout_s, out=out)
    finally:
        overrides.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    import yaml

    from dynaflip_ros import resources
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.episodes.record import default_results_path, format_summary

    from dynaflip_ros.ros import graph

    description = {g.name: g for g in graph.GRAPHS}[args.graph]
    # A missing params file: FileNotFoundError, one line from dynaflip_ros.cli.main (exit 2).
    params = (resources.resolve_path(args.params_file) if args.params_file
              else resources.params_file(description.default_params[graph.mode(args.use_sim)]))
    sections = yaml.safe_load(params.read_text()) or {}
    # Fail before starting anything when a model is missing (clear message, no 2-minute wait).
    for node, flag, value in (("encoder", "--encoder", args.encoder), ("policy", "--policy", args.policy)):
        model_dir = value or sections.get(node, {}).get("ros__parameters", {}).get("model_dir", f"models/{node}")
        try:
            resources.resolve_path(model_dir)
        except FileNotFoundError as e:
            raise UserError(f"{node} model not found: {e}; produce it (see README) or pass {flag}") from e
    results_path = Path(args.out or default_results_path("ros")).resolve()
    node_overrides = build_overrides(args, str(results_path), sections)  # LaunchArgumentError: exit 2 (main)
    result = launch_graph(args.graph, args.use_sim, params, node_overrides, combined_inference=args.combined_inference,
                          domain_id=args.domain_id, timeout_s=args.timeout_s)
    if result.failed:
        print(f"dynaflip launch: process {result.failed!r} failed; exit codes {result.exit_codes}", file=sys.stderr)
        return result.exit_code or 1
    if args.use_sim and result.exit_code == 0:
        if not results_path.is_file():
            print(f"dynaflip launch: the episode manager wrote no results at {results_path}", file=sys.stderr)
            return 1
        print("\n" + format_summary(json.loads(results_path.read_text()), results_path), flush=True)
    return result.exit_code
