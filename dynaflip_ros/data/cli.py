"""`dynaflip record`: record demonstrations into a local LeRobotDataset v3.0 (data/recorder.py).

Thin: the work lives in `sim.record_demos.record_sim_episodes` (--sim, scripted expert) and
`teleop.cli.run_teleop` (--teleop DEVICE, sim or real arm; its flags come from
`teleop.cli.add_teleop_arguments`). Module level imports only argparse and the other command-line
adapters (the `dynaflip` dispatcher imports every verb module to build --help).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog
from dynaflip_ros.teleop.cli import add_teleop_arguments

EPILOG = """examples:
  dynaflip record --sim --episodes 100 --out outputs/demos
      100 scripted-expert attempts (seeds 0..99) in MuJoCo, successful ones kept, 224x224 images
  dynaflip record --sim --episodes 50 --seed 100 --out outputs/demos --resume
      append 50 more attempts (seeds 100..149); seeds already in the dataset are skipped
  dynaflip record --sim --episodes 5 --image-size 128 --keep-failed --out /tmp/demos
  dynaflip record --sim --out outputs/demos --config config/record.yaml

teleoperated demonstrations (same dataset schema; `dynaflip train-policy` fine-tunes on them):
  dynaflip record --teleop keyboard --sim --out outputs/teleop_demos --episodes 5
      drive the MuJoCo UR3 from this terminal in real time (key map printed at start:
      w/s a/d r/f move, u/o i/k j/l rotate, c/v gripper, b start, n save, x discard, z re-record, Q quit)
  dynaflip record --teleop replay:tests/data/teleop_replay.jsonl --sim --out /tmp/replayed
      replay a recorded command file in lock-step simulation (deterministic; --realtime for wall time)
  dynaflip record --teleop spacemouse --robot-ip 192.168.1.10 --ur-type cb3 \\
        --camera realsense --camera-serial 123456789012 --out outputs/real_demos --rosbag \\
        --task "Pick the red cube into the sink" --operator alice --note "new sink position"
  dynaflip record --teleop freedrive --robot-ip 192.168.1.10 --out outputs/kinesthetic --task "..."
      kinesthetic demos: the arm is in UR freedrive (teach mode), keyboard keys start/stop episodes

output: LeRobotDataset v3.0 at --out (PNG images inside parquet), per-episode metadata in
  meta/dynaflip_episodes.jsonl (seed, object, success, source, demonstrator). Each episode is
  committed when it ends: a killed run loses at most the episode in progress; --resume repairs
  and continues it. Prints a JSON summary.
  Teleop episodes also store device, camera settings, code / model provenance and loop timing
  (slow ticks) in that file's "extra"; --rosbag writes a raw MCAP log next to --out.
""" + exit_codes_epilog("recording failed (device / arm / camera missing)")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _image_hw(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '120x160' -> (120, 160) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 16 or max(values) > 4096:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with 16 <= N <= 4096, got {text!r}")
    return values[0], values[1]


def _check_phases(names) -> tuple[str, ...]:
    """The expert phase names `names` as a tuple; ArgumentTypeError naming any that is not in
    `data.schema.PHASES` (the --action-noise-phases flag and a RecordConfig YAML alike)."""
    from dynaflip_ros.data.schema import PHASES

    names = tuple(names)
    unknown = [n for n in names if n not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown expert phase(s) {unknown or [names]}; known: {','.join(PHASES)}")
    return names


def _phase_list(text: str) -> tuple[str, ...]:
    """'approach,descend' -> ("approach", "descend") (`_check_phases`)."""
    return _check_phases(p.strip() for p in text.split(","))


def load_takeover_driver(encoder_dir: str, policy_dir: str):
    """The learner of expert-takeover recording: (`eval.closed_loop.PolicyDriver` of the encoder
    and policy, {"encoder": sha256, "policy": sha256}); one torch / ONNX Runtime thread. Raises
    the loaders' errors (EncoderMismatchError for a policy trained on another encoder)."""
    from dynaflip_ros.eval.closed_loop import PolicyDriver, load_encoder_and_policy

    encoder, policy = load_encoder_and_policy(encoder_dir, policy_dir, threads=1)
    return PolicyDriver(encoder, policy), {"encoder": encoder.manifest.weights_sha256, "policy": policy.weights_sha256}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record demonstrations (sim scripted expert or teleop, sim or real UR3) into a LeRobotDataset",
        description=(
            "Record pick-into-sink demonstrations into a local LeRobotDataset v3.0 at 10 Hz: camera "
            "RGB, joint state + gripper, joint-target action, expert phase and 3D point tracks of the "
            "object. --sim alone runs the MuJoCo cell with the scripted expert (through SafeArm). "
            "--teleop DEVICE records teleoperated demos on the sim (--sim) or the real UR3 "
            "(--robot-ip), everything moving through SafeArm."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", action="store_true", help="record the MuJoCo cell with the scripted expert")
    p.add_argument("--config", default=None, help="RecordConfig YAML (e.g. config/record.yaml); flags override it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = p.add_argument_group("episodes")
    e.add_argument("--episodes", type=int, default=None, help="expert episodes to attempt (default 10); --teleop: saved episodes before exiting (default: until quit)")
    e.add_argument("--seed", type=int, default=None, help="seed of the first attempt; attempt i uses seed+i (default 0); --teleop --sim: first scene seed")
    e.add_argument("--episode-timeout-s", type=float, default=None, help="simulated-time cap per episode (default 15); --teleop: episodes are saved at this length (default 300)")
    e.add_argument("--keep-failed", action="store_true", help="keep failed expert episodes (success=false)")
    e.add_argument("--randomize-scene", action="store_true",
                   help="--sim: draw lights, table / floor colours and camera pose per episode (encoder pre-training data)")
    e.add_argument("--action-noise-rad", type=float, default=None,
                   help="--sim: perturb the expert's joint commands (in the --action-noise-phases) by this "
                        "standard deviation, rad (DART recovery data; labels stay clean; default 0)")
    e.add_argument("--action-noise-phases", type=_phase_list, default=None, metavar="PHASE[,PHASE...]",
                   help="--sim: expert phases in which that perturbation is driven; it decays in the others "
                        "(default approach,descend)")
    e.add_argument("--regrasp-fraction", type=float, default=None, metavar="F",
                   help="--sim: share of episodes whose first grasp misses on purpose before the expert re-plans "
                        "and picks the object (recovery data; the missed attempt is context only; default 0)")
    e.add_argument("--takeover-window-s", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="--sim with --policy/--encoder: the learner drives each episode until a time drawn in "
                        "[MIN, MAX] s (or until it closes the gripper), then the expert takes over (default 1 6)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="dataset directory (created; see --resume); required with --sim")
    o.add_argument("--resume", action="store_true", help="append to the dataset at --out (repairs a killed run)")
    o.add_argument("--image-size", type=_image_hw, default=None, metavar="N|HxW", help="image size (default 224)")
    o.add_argument("--repo-id", default=None, help="LeRobot repo id stored with the dataset (default local/pick_into_sink)")
    add_teleop_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    if args.teleop:
        from dynaflip_ros.teleop.cli import run_teleop

        return run_teleop(args)
    if args.robot_ip or not args.sim:
        print(
            "dynaflip record: choose --sim (scripted expert in MuJoCo) or --teleop DEVICE with --sim or "
            "--robot-ip IP (teleoperated demos); nothing was recorded.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not args.out:
        print("dynaflip record: --out DIR is required", file=sys.stderr)
        return EXIT_USAGE

    from dynaflip_ros.configs.io import ConfigError, from_dict, load_yaml, to_dict
    from dynaflip_ros.configs.record import RecordConfig

    try:
        cfg = load_yaml(RecordConfig, args.config) if args.config else RecordConfig()
        overrides = {
            "episodes": args.episodes,
            "seed": args.seed,
            "image_hw": args.image_size,
            "max_episode_s": args.episode_timeout_s,
            "repo_id": args.repo_id,
            "only_success": False if args.keep_failed else None,
            "randomize_scene": True if args.randomize_scene else None,
            "action_noise_rad": args.action_noise_rad,
            "action_noise_phases": args.action_noise_phases,
            "regrasp_fraction": args.regrasp_fraction,
            "takeover_window_s": tuple(args.takeover_window_s) if args.takeover_window_s else None,
        }
        merged = {**to_dict(cfg), **{k: v for k, v in overrides.items() if v is not None}}
        cfg = from_dict(RecordConfig, merged, "dynaflip record")
        _check_phases(cfg.action_noise_phases)  # a YAML's phase names, checked like the flag's
    except (ConfigError, OSError, argparse.ArgumentTypeError) as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE

    from dynaflip_ros.data import dataset_io

    out = Path(args.out)
    problem = dataset_io.output_dir_problem(out, args.resume)
    if problem:
        print(f"dynaflip record: {problem}", file=sys.stderr)
        return EXIT_USAGE

    from dynaflip_ros.configs.sim import SceneRandomization, SimConfig
    from dynaflip_ros.data.recorder import DatasetSchemaError
    from dynaflip_ros.sim.record_demos import record_sim_episodes

    driver, driver_info = None, None
    if args.policy or args.encoder:
        if not (args.policy and args.encoder):
            print("dynaflip record: expert takeover needs both --policy and --encoder (the learner)", file=sys.stderr)
            return EXIT_USAGE
        driver, driver_info = load_takeover_driver(args.encoder, args.policy)

    try:
        summary = record_sim_episodes(
            cfg.episodes,
            out,
            seed=cfg.seed,
            image_hw=cfg.image_hw,
            only_success=cfg.only_success,
            progress=not args.no_progress,
            resume=args.resume,
            repo_id=cfg.repo_id,
            max_episode_s=cfg.max_episode_s,
            sim_config=SimConfig(randomization=SceneRandomization(enabled=cfg.randomize_scene)),
            action_noise_rad=cfg.action_noise_rad,
            action_noise_tau_s=cfg.action_noise_tau_s,
            action_noise_phases=cfg.action_noise_phases,
            regrasp_fraction=cfg.regrasp_fraction,
            regrasp_offset_m=cfg.regrasp_offset_m,
            driver=driver,
            driver_info=driver_info,
            takeover_window_s=cfg.takeover_window_s,
        )
    except DatasetSchemaError as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (dataset_io.DatasetCorruptError, OSError) as e:
        print(f"dynaflip record: recording failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(summary, indent=2))
    return EXIT_OK
