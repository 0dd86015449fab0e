"""`dynaflip train-encoder`: DynaFLIP pre-training of the image encoder on recorded episodes.

Thin wrapper around `dynaflip_ros.encoder.train.train_encoder`; imports only argparse at module
level (torch and friends load inside `run`).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder --steps 3000 --batch-size 32 \\
      --config config/encoder.yaml --seed 0
  dynaflip train-encoder --dataset outputs/demos --out /tmp/enc_smoke --steps 20 --batch-size 8
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder --resume     # continue a stopped run
  dynaflip train-encoder --dataset outputs/more_demos --out outputs/encoder2 --init outputs/encoder
  dynaflip train-encoder --dataset outputs/pretrain --out outputs/enc_clip --recipe clip   # a baseline
  dynaflip train-encoder --out outputs/enc_imagenet --recipe imagenet                     # untrained, frozen
  torchrun --nproc_per_node 4 "$(which dynaflip)" train-encoder --dataset outputs/pretrain --out outputs/enc \
      --device cuda --mixed-precision bf16 --config config/encoder_vit_b14.yaml --resume  # 4 GPUs, data parallel

The output directory holds image_encoder.safetensors (the network that runs at inference),
heads.safetensors (training-only heads), manifest.json (input size, mean/std, embedding dim,
sha256 of the weights, the resolved config, the data summary and the held-out retrieval top-1)
and train_log.jsonl (one JSON record per logged step or retrieval evaluation). While the run is
going, checkpoints/ holds the last resumable checkpoint (every train.save_every steps and at
the end: --resume of a complete run does nothing).
""" + exit_codes_epilog("training failed (a loss became NaN / inf)")


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
    p.add_argument("--dataset", help="LeRobotDataset v3 root directory (from `dynaflip record`); "
                                     "not needed by the untrained recipes (imagenet, random)")
    p.add_argument("--recipe", default="dynaflip",
                   help="objective: dynaflip (default), an ablation (area_only, no_flow, no_language, no_aux, "
                        "no_mismatched_negatives) or a baseline (tcn, clip; imagenet and random: saved untrained); "
                        "applied over --config (encoder/recipes.py)")
    p.add_argument("--config", default=None, help="YAML with sections model/loss/data/train (default: built-in defaults, see config/encoder.yaml)")
    t = p.add_argument_group("training (override the config's train section)")
    t.add_argument("--steps", type=int, default=None, help="override train.steps")
    t.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    t.add_argument("--seed", type=int, default=None, help="override train.seed")
    t.add_argument("--threads", type=int, default=None, help="override train.num_threads (torch CPU threads)")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0); default cpu")
    t.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"),
                   help="autocast the forward pass (CUDA only; fp16 with a gradient scaler); default no")
    s = p.add_argument_group("start")
    s.add_argument("--init", metavar="DIR", default=None,
                   help="start from an existing encoder artifact (image encoder + heads; same architecture)")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same config, dataset and --init; "
                        "a complete run: nothing to do); no checkpoint there: a fresh run")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output artifact directory (created; files are replaced)")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from dynaflip_ros.configs.encoder import EncoderConfig
    from dynaflip_ros.configs.io import load_yaml
    from dynaflip_ros.errors import UserError

    # A bad or missing config file: ConfigError / OSError, one line from dynaflip_ros.cli.main (exit 2).
    from dynaflip_ros.encoder.recipes import apply_recipe, get_recipe, save_untrained

    cfg = load_yaml(EncoderConfig, args.config) if args.config else EncoderConfig()
    try:
        recipe = get_recipe(args.recipe)
        cfg = apply_recipe(cfg, recipe.name)
    except ValueError as e:
        raise UserError(f"--recipe: {e}") from e
    overrides = {k: v for k, v in (
        ("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed), ("num_threads", args.threads))
        if v is not None}
    if overrides:
        try:
            cfg.train = dataclasses.replace(cfg.train, **overrides)
        except ValueError as e:  # the train config's own range checks on the flag values
            raise UserError(f"bad config: {e}") from e
    if not recipe.trained:
        manifest = save_untrained(args.out, cfg, recipe.name, seed=cfg.train.seed)
        print(f"encoder ({recipe.name}, untrained) written to {args.out}: embedding_dim {manifest.embedding_dim}, "
              f"sha256 {manifest.weights_sha256}")
        return 0
    if args.dataset is None or not Path(args.dataset).is_dir():
        raise UserError(f"--dataset {args.dataset} is not a directory (recipe {recipe.name} trains on it)")
    if args.init is not None and not Path(args.init).is_dir():
        raise UserError(f"--init {args.init} is not a directory")

    from dynaflip_ros.encoder.train import train_encoder

    if args.mixed_precision != "no" and not args.device.startswith("cuda"):
        raise UserError(f"--mixed-precision {args.mixed_precision} needs --device cuda")
    result = train_encoder(args.dataset, args.out, cfg, device=args.device, progress=not args.no_progress,
                           init=args.init, resume=args.resume, recipe=recipe.name, mixed_precision=args.mixed_precision)
    if not result.is_main:  # another process of a data-parallel run: rank 0 reports
        return 0
    print(
        f"encoder written to {result.out_dir}: embedding_dim {result.manifest.embedding_dim}, "
        f"input {tuple(result.manifest.input_hw)}, sha256 {result.manifest.weights_sha256}, "
        f"{result.seconds_per_step:.2f} s/step"
    )
    r = result.retrieval
    if r is not None:
        print(f"held-out retrieval top-1 ({r['clips']} clips): transition->language {r['transition_to_language_top1']:.3f} "
              f"(chance {r['chance_language']:.3f}), transition->flow {r['transition_to_flow_top1']:.3f} "
              f"(chance {r['chance_flow']:.3f})")
    return 0
