"""`dynaflip train-policy`: train the diffusion policy on frozen-encoder embeddings of a dataset."""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

DESCRIPTION = """Train a diffusion policy (LeRobot DiffusionPolicy, no vision backbone) on the embeddings
of a frozen, exported encoder and (model.language_conditioning, the default) the frozen MiniLM
sentence embedding of each episode's instruction, drawn among its recorded paraphrases. Every
frame and every distinct instruction is embedded once (cached by encoder sha256 + dataset
fingerprint), then the policy learns (embedding, instruction, state) history -> action chunk.
The checkpoint records the encoder's and the text encoder's sha256 and refuses any other."""

EPILOG = """examples:
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out models/policy
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out /tmp/policy \\
      --steps 500 --batch-size 32 --seed 1
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out models/policy \\
      --config config/policy.yaml --backend torch --cache-dir outputs/cache/embeddings
  # fine-tune the shipped policy on new demos (same model section; stats: train.init_stats)
  dynaflip train-policy --dataset outputs/teleop_demos --encoder models/encoder --out /tmp/ft \
      --init models/policy --steps 1000
  # continue a killed run from its latest checkpoint in --out/checkpoints (same other flags;
  # without a checkpoint: a fresh run, or nothing to do when --out holds this run's policy)
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out models/policy --resume

outputs in --out: model.safetensors + config.json (LeRobot), policy_{pre,post}processor.json +
normaliser stats (.safetensors), policy.json (config, encoder sha256 + manifest, train info),
train_log.jsonl (one JSON object per log / eval event). While training: checkpoints/ (resumable
state every train.checkpoint_every_steps steps; deleted when the policy is written).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-policy",
        help="train the diffusion policy on encoder embeddings",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="LeRobotDataset v3 root (dynaflip record --out)")
    p.add_argument("--config", default=None, help="policy YAML (sections model:, train:); default: built-in defaults")
    m = p.add_argument_group("encoder (embeds the dataset)")
    m.add_argument("--encoder", required=True, help="exported encoder directory (manifest.json + model)")
    m.add_argument(
        "--backend",
        default="onnxruntime",
        choices=("onnxruntime", "torch", "tensorrt", "auto"),
        help="encoder backend used to embed the dataset (default: onnxruntime)",
    )
    m.add_argument("--cache-dir", default=None, help="embedding cache (default: ~/.cache/dynaflip_ros/embeddings)")
    t = p.add_argument_group("training (override the config's train section)")
    t.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    t.add_argument("--batch-size", type=int, default=None, help="batch size (overrides the config)")
    t.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides train.num_threads)")
    t.add_argument(
        "--init", default=None, metavar="DIR",
        help="start from this policy checkpoint's weights (same architecture and embedding widths)",
    )
    t.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its latest checkpoint in --out/checkpoints (same config, dataset "
        "and --init; a complete run: nothing to do); no checkpoint there: a fresh run",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output policy directory")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dynaflip_ros.configs.io import load_yaml
    from dynaflip_ros.configs.policy import PolicyConfig
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.policies.train import train_policy_from_dataset

    # A bad or missing config file: ConfigError / OSError, one line from dynaflip_ros.cli.main (exit 2).
    config = load_yaml(PolicyConfig, args.config) if args.config else PolicyConfig()
    overrides = {
        k: v
        for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed),
                     ("num_threads", args.threads))
        if v is not None
    }
    try:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **overrides))
    except ValueError as e:  # the train config's own range checks on the flag values
        raise UserError(f"bad config: {e}") from e
    for flag, path in (("--dataset", args.dataset), ("--encoder", args.encoder), ("--init", args.init)):
        if path is not None and not Path(path).is_dir():
            raise UserError(f"{flag} {path} is not a directory")
    info = train_policy_from_dataset(
        args.dataset,
        args.encoder,
        args.out,
        config,
        backend=args.backend,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        init_dir=args.init,
        resume=args.resume,
    )
    summary = {
        k: info.get(k)
        for k in (
            "num_parameters",
            "checkpoint_bytes",
            "steps",
            "total_steps",
            "resumed_from_steps",
            "final_loss",
            "final_eval",
            "train_time_s",
            "s_per_step",
            "embedding_time_s",
        )
    }
    print(json.dumps(summary, indent=2))
    if info.get("already_complete"):
        print(f"policy in {args.out} already complete (--resume): nothing to do")
    else:
        print(f"policy written to {args.out}")
    return 0
