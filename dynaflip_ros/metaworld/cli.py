"""`dynaflip metaworld`: the frozen-encoder MetaWorld benchmark of one encoder (metaworld/bench.py).

Scripted-expert demos per task (cached), the encoder frozen, a 3-layer MLP policy on its pooled
embedding and the hand state per training seed, seeded rollouts; success per task and training
seed, one JSON line per rollout in --out (resumable).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip metaworld --recipe dynaflip --steps 500 --out results/metaworld/dynaflip   # pre-train on the demos, then test
  dynaflip metaworld --recipe imagenet --out results/metaworld/imagenet                 # untrained baseline
  dynaflip metaworld --encoder outputs/bench/dynaflip/encoder --out outputs/metaworld/ours   # any encoder, frozen
  dynaflip metaworld --encoder models/encoder --tasks reach,drawer-open --demos 10 --episodes 5 \\
      --training-seeds 0 --out /tmp/mw_smoke

Default tasks: reach, button-press-topdown, drawer-open, door-open, pick-place, assembly,
bin-picking, peg-insert-side (any MetaWorld v3 task name works). Demos come from episode seeds
0, 1, ... (failed expert episodes skipped), rollouts from 100000 on: the same scenes for every
encoder and training seed. Needs metaworld 3.1.1 (scripts/setup_env.sh installs it).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "metaworld", help="frozen-encoder MetaWorld benchmark: expert demos, MLP policy, seeded rollouts",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--encoder", help="an existing encoder directory (a train-encoder artifact or an export), frozen")
    src.add_argument("--recipe", help="pre-train an encoder of this recipe (train-encoder --recipe) on the demos of "
                                      "all --tasks first, into OUT/encoder (resumable)")
    p.add_argument("--steps", type=int, default=500, help="--recipe: encoder pre-training steps (default 500)")
    p.add_argument("--tasks", default=None, metavar="LIST", help="comma-separated task names (default: the eight above)")
    p.add_argument("--demos", type=int, default=25, help="successful expert demos per task (default 25)")
    p.add_argument("--episodes", type=int, default=20, help="rollouts per task and training seed (default 20)")
    p.add_argument("--training-seeds", default="0,1,2", metavar="LIST", help="MLP training seeds (default 0,1,2)")
    p.add_argument("--mlp-steps", type=int, default=3000, help="behaviour-cloning steps per MLP (default 3000)")
    p.add_argument("--max-steps", type=int, default=500, help="longest rollout in env steps (default 500, MetaWorld's)")
    p.add_argument("--demo-cache", default="outputs/metaworld/demos", metavar="DIR",
                   help="where demos are kept between encoders (default outputs/metaworld/demos)")
    p.add_argument("--backend", default="torch", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                   help="encoder backend (default torch: reads a train-encoder artifact directly)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (created; resumed when it exists)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynaflip_ros.configs.validate import parse_seed_list
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.metaworld.bench import MlpConfig, run_metaworld
    from dynaflip_ros.metaworld.env import DEFAULT_TASKS, task_name

    if args.encoder is not None and not Path(args.encoder).is_dir():
        raise UserError(f"--encoder {args.encoder} is not a directory")
    if min(args.demos, args.episodes, args.mlp_steps, args.max_steps, args.steps) < 1:
        raise UserError("--demos, --episodes, --mlp-steps, --max-steps and --steps must be >= 1")
    try:
        seeds = tuple(parse_seed_list(args.training_seeds))
    except ValueError as e:
        raise UserError(f"--training-seeds: {e}") from e
    tasks = [task_name(t.strip()) for t in args.tasks.split(",")] if args.tasks else list(DEFAULT_TASKS)
    import torch

    torch.set_num_threads(args.threads)
    encoder = args.encoder
    if args.recipe is not None:
        from dynaflip_ros.configs.encoder import EncoderConfig
        from dynaflip_ros.encoder.recipes import get_recipe
        from dynaflip_ros.metaworld.bench import load_or_record_demos, pretrain_encoder

        try:
            get_recipe(args.recipe)
        except ValueError as e:
            raise UserError(f"--recipe: {e}") from e
        hw = tuple(EncoderConfig().model.input_hw)
        demos = [load_or_record_demos(args.demo_cache, t, args.demos, hw) for t in tasks]
        encoder = pretrain_encoder(demos, args.recipe, Path(args.out) / "encoder", args.steps, threads=args.threads)
    results = run_metaworld(encoder, args.out, tasks, n_demos=args.demos, episodes=args.episodes,
                            training_seeds=seeds, mlp=MlpConfig(steps=args.mlp_steps), demo_cache_dir=args.demo_cache,
                            backend=args.backend, threads=args.threads, max_steps=args.max_steps)
    total = sum(sum(v.values()) for v in results.values())
    print(f"success {total}/{args.episodes * len(seeds) * len(tasks)} over {len(tasks)} task(s); rollouts in "
          f"{Path(args.out) / 'episodes.jsonl'}")
    return 0
