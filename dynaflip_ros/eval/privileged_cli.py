"""`dynaflip privileged`: train the policy recipe on privileged scene state and evaluate it in sim.

The ceiling of the learned stack (eval/privileged.py): the same diffusion policy, config and
demos as `dynaflip train-policy`, but its observation is the ground-truth state read off the
point tracks instead of the image embedding. When this policy fails the task, the policy recipe
limits, whatever the encoder. Command-line adapter; module level imports only argparse and
`dynaflip_ros.cli`.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip privileged --dataset outputs/demos --policy outputs/policy_privileged --episodes 20
  dynaflip privileged --dataset outputs/demos --policy outputs/policy_privileged --config config/policy.yaml \\
      --steps 10000 --episodes 50 --out outputs/eval/privileged.json
  dynaflip privileged --dataset outputs/demos --policy outputs/policy_privileged_offset --target-first \\
      --finger-offset --episodes 50

The policy is trained into --policy (resumable: --resume continues from its checkpoints; a policy
already complete there for the same run is reused), then run closed-loop in the simulated cell on
seeds --seed.. (default 100000, as `dynaflip eval`), the same outcomes and JSON record.
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "privileged", help="policy on ground-truth scene state: the recipe's ceiling in sim",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="LeRobotDataset v3 root with point tracks (dynaflip record --sim)")
    p.add_argument("--policy", required=True, help="policy directory: trained here, then evaluated")
    p.add_argument("--config", default=None, help="policy YAML (sections model:, train:); default: built-in defaults")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    p.add_argument("--target-first", action="store_true",
                   help="also give the instructed object's features in a leading slot (grounding solved for the "
                        "policy; the gap to the plain run is what grounding the instruction costs)")
    p.add_argument("--finger-offset", action="store_true",
                   help="also give the instructed object's centre minus the finger pads' midpoint (3 values, m): "
                        "the offset the gripper still has to close")
    p.add_argument("--resume", action="store_true", help="continue training from the latest checkpoint in --policy")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--seed", type=int, default=100_000, help="seed of evaluation episode 0 (default 100000)")
    p.add_argument("--episode-timeout-s", type=float, default=15.0, help="sim seconds per episode (default 15)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", metavar="PATH", help="evaluation record JSON (default outputs/eval/privileged_<time>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from dynaflip_ros.configs.io import load_yaml
    from dynaflip_ros.configs.policy import PolicyConfig
    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.episodes.record import EvalReport, default_results_path, format_episode, format_summary
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.closed_loop import evaluate_in_sim
    from dynaflip_ros.eval.privileged import SimPrivilegedBackend, layout_name, train_privileged_policy
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    if not Path(args.dataset).is_dir():
        raise UserError(f"--dataset {args.dataset} is not a directory")
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    config = load_yaml(PolicyConfig, args.config) if args.config else PolicyConfig()
    try:
        train = dataclasses.replace(config.train, num_threads=args.threads,
                                    **({"steps": args.steps} if args.steps is not None else {}))
    except ValueError as e:
        raise UserError(f"bad config: {e}") from e
    config = dataclasses.replace(config, train=train)
    torch.set_num_threads(args.threads)
    policy = train_privileged_policy(args.dataset, args.policy, config, target_first=args.target_first,
                                     finger_offset=args.finger_offset, resume=args.resume,
                                     progress=not args.no_progress)
    env = PickIntoSinkEnv(SimConfig())
    encoder = SimPrivilegedBackend(env, target_first=args.target_first, finger_offset=args.finger_offset)
    report = EvalReport(
        mode="lockstep",
        config={"episodes": args.episodes, "seed": args.seed, "max_duration_s": args.episode_timeout_s,
                "privileged": layout_name(args.target_first, args.finger_offset), "dataset": str(args.dataset),
                "policy": str(args.policy)},
        models={"encoder": encoder.manifest.weights_sha256, "policy": policy.weights_sha256})

    def on_episode(record, report) -> None:
        print("[privileged] " + format_episode(record, len(report.episodes) - 1, args.episodes, report.successes), flush=True)

    try:
        evaluate_in_sim(encoder, policy, args.episodes, seed=args.seed, max_duration_s=args.episode_timeout_s,
                        on_episode=on_episode, report=report, env=env)
    finally:
        env.close()
    path = report.write_json(args.out or default_results_path("privileged"))
    print(format_summary(report.to_dict(), path), flush=True)
    return 0
