"""`dynaflip record`: record demonstrations into a local LeRobotDataset v3.0 (data/recorder.py).

Thin: the work lives in `data.recorder.record_sim_episodes`. Module level imports only argparse
(the `dynaflip` dispatcher imports every verb module to build --help).
"""
from __future__ import annotations

import argparse

EPILOG = """examples:
  dynaflip record --sim --episodes 100 --out outputs/demos
      100 scripted-expert attempts (seeds 0..99) in MuJoCo, successful ones kept, 224x224 images
  dynaflip record --sim --episodes 50 --seed 100 --out outputs/demos --resume
      append 50 more attempts (seeds 100..149); seeds already in the dataset are skipped
  dynaflip record --sim --episodes 5 --image-size 128 --keep-failed --out /tmp/demos
  dynaflip record --sim --out outputs/demos --config config/record.yaml

output: LeRobotDataset v3.0 at --out (PNG images inside parquet), per-episode metadata in
  meta/dynaflip_episodes.jsonl (seed, object, success, source, demonstrator). Each episode is
  committed when it ends: a killed run loses at most the episode in progress; --resume repairs
  and continues it. Prints a JSON summary.
exit codes: 0 ok, 1 recording failed, 2 usage error (also: no --sim, since teleop recording on
  the real arm is not available yet; --out holds a dataset and --resume is missing).
"""

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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record demonstrations (sim scripted expert) into a LeRobotDataset",
        description=(
            "Record pick-into-sink demonstrations into a local LeRobotDataset v3.0 at 10 Hz: camera "
            "RGB, joint state + gripper, joint-target action, expert phase and 3D point tracks of the "
            "object. --sim runs the MuJoCo cell with the scripted expert (through SafeArm); "
            "teleoperated recording on the real UR3 arrives with the real-cell work."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", action="store_true", help="record the MuJoCo cell with the scripted expert")
    p.add_argument("--out", default=None, help="dataset directory (created; see --resume); required with --sim")
    p.add_argument("--episodes", type=int, default=None, help="expert episodes to attempt (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first attempt; attempt i uses seed+i (default 0)")
    p.add_argument("--image-size", type=_image_hw, default=None, metavar="N|HxW", help="image size (default 224)")
    p.add_argument("--resume", action="store_true", help="append to the dataset at --out (repairs a killed run)")
    p.add_argument("--keep-failed", action="store_true", help="keep failed expert episodes (success=false)")
    p.add_argument("--max-episode-s", type=float, default=None, help="simulated-time cap per episode (default 15)")
    p.add_argument("--repo-id", default=None, help="LeRobot repo id stored with the dataset (default local/pick_into_sink)")
    p.add_argument("--config", default=None, help="RecordConfig YAML (e.g. config/record.yaml); flags override it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    if not args.sim:
        print(
            "dynaflip record: only --sim is available. Teleoperated recording on the real UR3 arrives "
            "with the real-cell work (issue 3); nothing was recorded.",
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
            "max_episode_s": args.max_episode_s,
            "repo_id": args.repo_id,
            "only_success": False if args.keep_failed else None,
        }
        merged = {**to_dict(cfg), **{k: v for k, v in overrides.items() if v is not None}}
        cfg = from_dict(RecordConfig, merged, "dynaflip record")
    except (ConfigError, OSError) as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE

    from dynaflip_ros.data import dataset_io

    out = Path(args.out)
    if not args.resume and (dataset_io.is_dataset_dir(out) or (out / dataset_io.COMMIT_PATH).exists()):
        print(f"dynaflip record: {out} already holds a dataset; pass --resume to append to it", file=sys.stderr)
        return EXIT_USAGE
    if dataset_io.foreign_entries(out) and not dataset_io.is_dataset_dir(out):
        print(f"dynaflip record: {out} is not empty and holds no dataset; choose another --out", file=sys.stderr)
        return EXIT_USAGE

    from dynaflip_ros.data.recorder import DatasetSchemaError, record_sim_episodes

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
        )
    except DatasetSchemaError as e:
        print(f"dynaflip record: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (dataset_io.DatasetCorruptError, OSError) as e:
        print(f"dynaflip record: recording failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(summary, indent=2))
    return EXIT_OK
