"""`dynaflip train-encoder`: DynaFLIP pre-training of the image encoder on recorded episodes.

Thin wrapper around `dynaflip_ros.encoder.train.train_encoder`; imports only argparse at module
level (torch and friends load inside `run`).
"""
from __future__ import annotations

import argparse

EPILOG = """examples:
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder --steps 3000 --batch-size 32 \\
      --config config/encoder.yaml --seed 0
  dynaflip train-encoder --dataset outputs/demos --out /tmp/enc_smoke --steps 20 --batch-size 8

The output directory holds image_encoder.safetensors (the network that runs at inference),
heads.safetensors (training-only heads), manifest.json (input size, mean/std, embedding dim,
sha256 of the weights, the resolved config) and train_log.jsonl (one JSON record per logged step).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-encoder",
        help="pre-train the DynaFLIP image encoder (image/language/3D-flow alignment)",
        description=(
            "Pre-train the image encoder with the DynaFLIP objective (triangle-area InfoNCE over "
            "image transitions, language and 3D flow + temporal-contrastive + actor losses) on a "
            "recorded LeRobotDataset v3 (dynaflip record)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="LeRobotDataset v3 root directory (from `dynaflip record`)")
    p.add_argument("--out", required=True, help="output artifact directory (created; files are replaced)")
    p.add_argument("--config", default=None, help="YAML with sections model/loss/data/train (default: built-in defaults, see config/encoder.yaml)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    p.add_argument("--seed", type=int, default=None, help="override train.seed")
    p.add_argument("--threads", type=int, default=None, help="override train.num_threads (torch CPU threads)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0); default cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from dynaflip_ros.configs.encoder import EncoderConfig
    from dynaflip_ros.configs.io import ConfigError, load_yaml

    try:
        cfg = load_yaml(EncoderConfig, args.config) if args.config else EncoderConfig()
        overrides = {k: v for k, v in (
            ("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed), ("num_threads", args.threads)) if v is not None}
        if overrides:
            cfg.train = dataclasses.replace(cfg.train, **overrides)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"train-encoder: bad config: {e}", file=sys.stderr)
        return 2

    from dynaflip_ros.encoder.train import train_encoder

    try:
        result = train_encoder(args.dataset, args.out, cfg, device=args.device, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"train-encoder: {e}", file=sys.stderr)
        return 1
    print(
        f"encoder written to {result.out_dir}: embedding_dim {result.manifest.embedding_dim}, "
        f"input {tuple(result.manifest.input_hw)}, sha256 {result.manifest.weights_sha256}, "
        f"{result.seconds_per_step:.2f} s/step"
    )
    return 0
