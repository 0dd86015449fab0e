"""`dynaflip record --teleop DEVICE`: the teleop flags of `dynaflip record` and their run.

Command-line adapter (the `dynaflip record` verb lives in `data/cli.py`, which adds these flags
with `add_teleop_arguments` and calls `run_teleop`): flags -> one `teleop.config.TeleopConfig`
(`teleop_config_from_args`) -> `teleop.record.open_session` -> `TeleopSession.run()`. The
library never sees the argparse namespace. Module level imports only argparse (the `dynaflip`
dispatcher imports every verb module to build --help). Runs in the main thread; SIGTERM is
turned into KeyboardInterrupt there so the session's `finally` blocks run.
"""
from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_teleop_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `--teleop` argument groups ("teleoperation", "robot (real cell)", "provenance")
    to `dynaflip record`'s parser. --robot-ip, --episodes, --seed, --out, --image-size,
    --episode-timeout-s, --resume and --repo-id are `dynaflip record`'s own (shared with --sim)."""
    t = parser.add_argument_group("teleoperation (--teleop)")
    t.add_argument("--teleop", default=None, metavar="DEVICE",
                   help="keyboard | gamepad | spacemouse | freedrive | replay:FILE (JSON-lines command file)")
    t.add_argument("--task", default=None, help="instruction stored with each episode (sim default: the scene's)")
    t.add_argument("--realtime", action="store_true", help="replay in real time instead of lock-step (sim)")
    t.add_argument("--command-rate-hz", type=float, default=50.0,
                   help="teleop command rate, a multiple of 10 Hz (default 50); the servo loop runs at 125/500 Hz")
    t.add_argument("--safety-config", default=None, metavar="YAML",
                   help="SafeArm limits (configs.safety.SafetyConfig YAML, e.g. config/safety.yaml); default: built-in")
    t.add_argument("--rosbag", action="store_true", help="also write a raw rosbag2 MCAP log of the session")
    t.add_argument("--rosbag-dir", default=None, help="bag directory (default <out>_rosbag/session_<UTC>)")
    r = parser.add_argument_group("robot (--teleop on the real cell)")
    r.add_argument("--robot-ip", default=None, help="real UR3 controller address (ur_rtde); instead of --sim")
    r.add_argument("--ur-type", choices=("cb3", "e-series"), default=None, help="controller generation (default cb3)")
    r.add_argument("--params-file", default=None,
                   help="real cell ROS 2 params file whose camera.realsense / ur3_driver.ur_rtde sections set the "
                        "camera (exposure, white balance: as deployed) and arm (default config/real_cell.yaml)")
    r.add_argument("--camera", choices=("realsense", "sim"), default=None,
                   help="camera (real cell: realsense, the default; --sim: the sim camera)")
    r.add_argument("--camera-serial", default=None, help="RealSense serial ('' = the only device)")
    m = parser.add_argument_group("provenance (--teleop; episode metadata)")
    m.add_argument("--operator", default=None, help="operator name (episode metadata)")
    m.add_argument("--note", default=None, help="operator note (episode metadata)")
    m.add_argument("--encoder", default=None,
                   help="encoder model dir: --teleop logs its manifest sha256 (provenance); --sim with --policy: "
                        "the learner's encoder for expert-takeover episodes")
    m.add_argument("--policy", default=None,
                   help="policy model dir: --teleop logs its sha256 (provenance); --sim: the learner's policy drives "
                        "each episode until the scripted expert takes over (DAgger-style data, docs/method.md §3)")


def teleop_config_from_args(args: argparse.Namespace):
    """TeleopConfig of `dynaflip record --teleop` flags: the flags given override the defaults
    (`teleop.config.teleop_config`). --rosbag without --rosbag-dir logs to
    `teleop.record.default_bag_dir(out)`; --safety-config loads a SafetyConfig YAML.
    Raises ValueError (ConfigError) on an invalid value."""
    from pathlib import Path

    from dynaflip_ros.teleop.config import teleop_config
    from dynaflip_ros.teleop.record import default_bag_dir

    safety = None
    if args.safety_config:
        from dynaflip_ros.configs.io import ConfigError, load_yaml
        from dynaflip_ros.configs.safety import SafetyConfig

        try:
            safety = load_yaml(SafetyConfig, args.safety_config)
        except (ConfigError, OSError) as e:
            raise ValueError(f"--safety-config: {e}") from e
    out = Path(args.out)
    flags = {
        "device": args.teleop, "out": str(out), "sim": bool(args.sim), "robot_ip": args.robot_ip,
        "ur_type": args.ur_type, "camera_serial": args.camera_serial,
        "image_hw": tuple(args.image_size) if args.image_size else None, "resume": bool(args.resume),
        "repo_id": args.repo_id, "realtime": bool(args.realtime),
        "rosbag_dir": (args.rosbag_dir or str(default_bag_dir(out))) if args.rosbag else None,
        "encoder": args.encoder, "policy": args.policy, "operator": args.operator, "note": args.note,
        "task": args.task, "episodes": args.episodes, "command_rate_hz": args.command_rate_hz,
        "max_episode_s": args.episode_timeout_s, "seed": args.seed, "safety": safety,
        "cell_params_file": args.params_file,
    }
    return teleop_config(overrides={k: v for k, v in flags.items() if v is not None}, where="--teleop flags")


def _sigterm_to_interrupt() -> None:
    """SIGTERM -> KeyboardInterrupt in the main thread, so `finally` blocks run (terminal
    restored, arm stopped, episode in progress dropped)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _usage_problem(args: argparse.Namespace) -> str:
    """The first flag combination `--teleop` refuses ("" = none)."""
    if bool(args.sim) == bool(args.robot_ip):
        return "--teleop needs exactly one of --sim or --robot-ip IP"
    if not args.out:
        return "--out DIR is required"
    if args.sim and args.camera not in (None, "sim"):
        return "--sim records the sim camera; --camera is for the real cell"
    if args.teleop == "freedrive" and args.sim:
        return ("freedrive moves the real arm by hand; the sim arm has no freedrive "
                "(use keyboard, gamepad, spacemouse or replay:FILE with --sim)")
    if not args.sim and args.camera == "sim":
        return "the real cell records a RealSense (--camera realsense)"
    return ""


def run_teleop(args: argparse.Namespace) -> int:
    """The teleop branch of `dynaflip record`; returns its exit code (0 ok, 1 the recording
    failed: device / arm / camera missing, 2 usage, 130 interrupted). Prints a JSON summary."""
    import json
    import sys
    from pathlib import Path

    from dynaflip_ros.data import dataset_io
    from dynaflip_ros.data.recorder import DatasetSchemaError
    from dynaflip_ros.teleop.devices import (
        KEY_HELP,
        CombinedDevice,
        DeviceError,
        KeyboardDevice,
    )
    from dynaflip_ros.teleop.record import open_session

    problem = _usage_problem(args)
    if not problem:
        problem = dataset_io.output_dir_problem(Path(args.out), args.resume)
    if problem:
        print(f"dynaflip record: {problem}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    try:
        opts = teleop_config_from_args(args)
    except ValueError as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE

    _sigterm_to_interrupt()
    res = None
    try:
        res = open_session(opts, echo=lambda line: print(line, flush=True))
        dev = res.device
        if isinstance(dev, KeyboardDevice) or (isinstance(dev, CombinedDevice) and any(
                isinstance(d, KeyboardDevice) for d in dev.devices)):
            print(KEY_HELP, flush=True)
        if res.bag is not None:
            print(f"raw session log (rosbag2 MCAP): {res.bag.path}", flush=True)
        summary = res.session.run()
        result = {"saved_episodes": summary.saved, "discarded": summary.discarded,
                  "frames_saved": summary.frames_saved, "slow_ticks": summary.slow_ticks,
                  "record_ticks": summary.record_ticks, "ended_by": summary.ended_by, "wall_s": summary.wall_s,
                  "dataset_episodes": res.recorder.num_episodes, "dataset_frames": res.recorder.num_frames,
                  "root": str(out), "driver": res.driver.kind,
                  "rosbag": str(res.bag.path) if res.bag is not None else None}
    except (DeviceError, ImportError) as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (DatasetSchemaError, FileNotFoundError) as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dynaflip record: interrupted; saved episodes are kept, the one in progress was dropped",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (dataset_io.DatasetCorruptError, OSError, RuntimeError, ValueError) as e:
        print(f"dynaflip record: recording failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if res is not None:
            res.close()
    print(json.dumps(result, indent=2))
    return EXIT_OK
