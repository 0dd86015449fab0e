"""`dynaflip launch <graph>`: bring up a ROS 2 node graph without the `ros2` CLI.

Starts the same executables with the same params file as `launch/<graph>.launch.py`
(`ros/bringup.py`), streams their logs with `[process]` prefixes, waits for the episode
manager, prints its summary (success rate, per-stage latency p50/p95) and tears the graph down
(SIGINT, then SIGTERM / SIGKILL). Exit code: the episode manager's (0 = run completed), 1 when a
node died, 2 on bad arguments or missing models.
Only argparse is imported at module level (`dynaflip --help` must not load ROS).
"""
from __future__ import annotations

import argparse

GRAPHS = ("pick_into_sink",)

EPILOG = """examples:
  dynaflip launch pick_into_sink --sim --episodes 20
  dynaflip launch pick_into_sink --sim --episodes 5 --seed 100 --encoder-backend onnxruntime
  dynaflip launch pick_into_sink --sim --encoder-dir outputs/encoder_onnx --policy-dir outputs/policy
  dynaflip launch pick_into_sink --sim --params-file my_params.yaml --results outputs/run.json
  dynaflip launch pick_into_sink --real --robot-ip 192.168.1.102 --ur-type cb3
  dynaflip launch pick_into_sink --real --robot-ip 192.168.1.102 --ur-type e-series \
      --camera-serial 012345678901 --gripper none --params-file my_cell.yaml
--real uses config/real_cell.yaml unless --params-file is given; the hardware options override it
(launch/real_cell.launch.py takes the same arguments: ros/launch_args.py maps both).

On a full ROS 2 install the same graph is:
  ros2 launch dynaflip_ros pick_into_sink.launch.py use_sim:=true episodes:=20
"""


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
    p.add_argument("--robot-ip", default="", help="--real: UR controller address (default: params file)")
    p.add_argument("--ur-type", default="", choices=["", "cb3", "e-series"],
                   help="--real: controller generation, sets the 125 / 500 Hz servo rate (default: params file)")
    p.add_argument("--camera-serial", default="", help="--real: RealSense serial (default: params file / the only one)")
    p.add_argument("--gripper", default="", choices=["", "robotiq_urcap", "none"],
                   help="--real: gripper backend (default: params file)")
    p.add_argument("--episodes", type=int, help="episodes to run (default: params file, 20)")
    p.add_argument("--seed", type=int, help="seed of episode 0; episode i uses seed + i")
    p.add_argument("--object", dest="object_name", help='target object, e.g. "red cube" (default: from the seed)')
    p.add_argument("--episode-timeout-s", type=float, help="wall-clock limit per episode")
    p.add_argument("--startup-timeout-s", type=float, help="how long the episode manager waits for the graph")
    p.add_argument("--params-file", help="ROS 2 params file (default: config/<graph>.yaml of the package)")
    p.add_argument("--encoder-dir", help="encoder artifact dir (default: params file, models/encoder)")
    p.add_argument("--encoder-backend", choices=("auto", "onnxruntime", "tensorrt", "torch"),
                   help="encoder inference backend (default: params file, auto)")
    p.add_argument("--policy-dir", help="policy checkpoint dir (default: params file, models/policy)")
    p.add_argument("--results", help="results JSON path (default: outputs/ros_eval/<graph>_<UTC time>.json)")
    p.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID of the graph (default: the environment's)")
    p.add_argument("--timeout-s", type=float, help="wall-clock limit of the whole run (exit code 124)")
    p.set_defaults(func=run)


def build_overrides(args: argparse.Namespace, results_path: str, params_doc: dict | None = None) -> dict[str, dict]:
    """Per-node parameter overrides from the command line ({node_name: {param: value}}).
    --real: the hardware options over `params_doc` (`ros.launch_args.real_cell_overrides`,
    which validates them; LaunchArgumentError)."""
    enc: dict = {}
    if args.encoder_dir:
        enc["model_dir"] = args.encoder_dir
    if args.encoder_backend:
        enc["backend"] = args.encoder_backend
    pol = {"model_dir": args.policy_dir} if args.policy_dir else {}
    em: dict = {"results_path": results_path}
    for key in ("episodes", "seed", "object_name", "episode_timeout_s", "startup_timeout_s"):
        value = getattr(args, key)
        if value is not None:
            em[key] = value
    out = {"encoder": enc, "policy": pol}
    if args.use_sim:
        out["episode_manager"] = em
    else:
        from dynaflip_ros.ros.launch_args import real_cell_overrides

        out.update(real_cell_overrides(params_doc or {}, robot_ip=args.robot_ip, ur_type=args.ur_type,
                                       gripper=args.gripper, camera_serial=args.camera_serial))
    return {k: v for k, v in out.items() if v}


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys
    from pathlib import Path

    import yaml

    from dynaflip_ros import resources
    from dynaflip_ros.ros import bringup
    from dynaflip_ros.ros.results import default_results_path, format_summary

    from dynaflip_ros.ros import graph

    description = {g.name: g for g in graph.GRAPHS}[args.graph]
    try:
        params = (resources.resolve_path(args.params_file) if args.params_file
                  else resources.params_file(description.default_params[graph.mode(args.use_sim)]))
    except FileNotFoundError as e:
        print(f"dynaflip launch: {e}", file=sys.stderr)
        return 2
    sections = yaml.safe_load(params.read_text()) or {}
    # Fail before starting anything when a model is missing (clear message, no 2-minute wait).
    for node, flag, value in (("encoder", "--encoder-dir", args.encoder_dir), ("policy", "--policy-dir", args.policy_dir)):
        model_dir = value or sections.get(node, {}).get("ros__parameters", {}).get("model_dir", f"models/{node}")
        try:
            resources.resolve_path(model_dir)
        except FileNotFoundError as e:
            print(f"dynaflip launch: {node} model not found: {e}\n  produce it (see README) or pass {flag}",
                  file=sys.stderr)
            return 2
    results_path = Path(args.results or default_results_path()).resolve()
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(args.domain_id)
    specs = [bringup.ProcessSpec.of(n) for n in description.processes(graph.mode(args.use_sim))]
    from dynaflip_ros.ros.launch_args import LaunchArgumentError, write_overrides_file

    try:
        node_overrides = build_overrides(args, str(results_path), sections)
    except LaunchArgumentError as e:
        print(f"dynaflip launch: {e}", file=sys.stderr)
        return 2
    overrides = write_overrides_file(node_overrides)  # a fresh temporary file; deleted below
    print(f"dynaflip launch {args.graph} ({'sim' if args.use_sim else 'real'}): "
          f"{[s.executable for s in specs]} with {params}", flush=True)
    try:
        result = bringup.run_graph(specs, [params, overrides], main=description.main[graph.mode(args.use_sim)],
                                   env=env, timeout_s=args.timeout_s)
    finally:
        overrides.unlink(missing_ok=True)
    if result.failed:
        print(f"dynaflip launch: process {result.failed!r} failed; exit codes {result.exit_codes}", file=sys.stderr)
        return result.exit_code or 1
    if args.use_sim and result.exit_code == 0:
        if not results_path.is_file():
            print(f"dynaflip launch: the episode manager wrote no results at {results_path}", file=sys.stderr)
            return 1
        print("\n" + format_summary(json.loads(results_path.read_text())), flush=True)
    return result.exit_code
