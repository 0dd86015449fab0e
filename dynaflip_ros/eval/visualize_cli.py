"""`dynaflip visualize`: PCA of an encoder's patch features and Grad-CAM of a policy, as images.

For frames of a recorded dataset: the camera image, its patch features projected on their first
three principal components as RGB, and (with --policy) the Grad-CAM of the policy's predicted
arm motion with respect to the encoder's feature map over the image (eval/visualize.py).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip visualize --dataset outputs/demos --encoder models/encoder --policy models/policy --out outputs/vis
  dynaflip visualize --dataset outputs/demos --encoder outputs/bench/tcn/encoder/export --episodes 0,3,7 \\
      --frame-index 25 --out outputs/vis_tcn            # PCA only (no --policy)

Writes frame_e<episode>_f<frame>.png per frame, overview.png (one row per frame) and
analysis.json (the instruction and Grad-CAM scalar S of each frame) into --out. A checkpoint
ensemble's first member is the policy explained.
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize", help="PCA of patch features and policy Grad-CAM for dataset frames, as PNGs",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="LeRobotDataset v3 root (dynaflip record --out)")
    p.add_argument("--encoder", required=True, help="exported encoder directory (manifest.json + image_encoder.safetensors)")
    p.add_argument("--policy", default=None, help="policy directory trained on that encoder (adds the Grad-CAM panel)")
    p.add_argument("--episodes", default=None, metavar="LIST",
                   help="dataset episode rows, 'A-B' or 'A,B,C' (default: the first four)")
    p.add_argument("--frame-index", type=int, default=10, help="frame of each episode (default 10; clipped to its length)")
    p.add_argument("--noise-samples", type=int, default=4, help="noise samples the Grad-CAM scalar sums over (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise samples (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from dynaflip_ros.configs.validate import parse_seed_list
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.visualize import visualize

    for flag, path in (("--dataset", args.dataset), ("--encoder", args.encoder), ("--policy", args.policy)):
        if path is not None and not Path(path).is_dir():
            raise UserError(f"{flag} {path} is not a directory")
    if args.noise_samples < 1 or args.frame_index < 0:
        raise UserError("--noise-samples must be >= 1 and --frame-index >= 0")
    try:
        episodes = parse_seed_list(args.episodes) if args.episodes else None
    except ValueError as e:
        raise UserError(f"--episodes: {e}") from e
    torch.set_num_threads(args.threads)
    try:
        frames = visualize(args.dataset, args.encoder, args.out, policy_dir=args.policy, episodes=episodes,
                           frame_index=args.frame_index, noise_samples=args.noise_samples, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from e
    for f in frames:
        s = "" if f.saliency_s is None else f", Grad-CAM S {f.saliency_s:.4g} rad^2"
        print(f"episode {f.episode} frame {f.frame_index}: {f.image}{s}  ({f.instruction})")
    print(f"overview: {Path(args.out) / 'overview.png'}")
    return 0
