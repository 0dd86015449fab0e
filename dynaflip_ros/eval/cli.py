"""`dynaflip eval`: closed-loop evaluation of an encoder + policy in the simulated cell (no ROS)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20
  dynaflip eval --sim --encoder outputs/encoder_export --policy outputs/policy --episodes 50 \\
      --seed 100000 --results outputs/eval.json

Runs episodes in lock-step simulation time (deterministic per seed, no real-time waits): every
0.1 s render -> encoder -> policy; chunks go through the interpolator, the 125 Hz servo loop and
SafeArm to the MuJoCo UR3. Seeds default to 100000+ (the demos use seeds 0..N). For the real-time
check through the ROS 2 graph use `dynaflip launch pick_into_sink --sim`.
exit codes: 0 ok, 2 usage error or missing model.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="closed-loop success rate of encoder + policy in sim (no ROS)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", action="store_true", required=True, help="evaluate in the MuJoCo cell")
    p.add_argument("--encoder", required=True, help="encoder artifact dir (manifest.json, encoder.onnx)")
    p.add_argument("--policy", required=True, help="policy checkpoint dir (policy.json)")
    p.add_argument("--episodes", type=int, default=20, help="number of episodes (default 20)")
    p.add_argument("--seed", type=int, default=100_000, help="seed of episode 0 (default 100000)")
    p.add_argument("--max-duration-s", type=float, default=15.0, help="sim seconds per episode")
    p.add_argument("--backend", default="onnxruntime", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                   help="encoder backend (default onnxruntime)")
    p.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    p.add_argument("--results", help="write the results JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    import torch

    from dynaflip_ros.eval.closed_loop import evaluate_in_sim
    from dynaflip_ros.inference.factory import load_encoder_backend
    from dynaflip_ros.policies.diffusion import DiffusionPolicyRunner

    if args.episodes < 1:
        print("--episodes must be >= 1", file=sys.stderr)
        return 2
    for path in (args.encoder, args.policy):
        if not Path(path).is_dir():
            print(f"not a directory: {path}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    encoder = load_encoder_backend(
        args.encoder, backend=args.backend, onnxruntime_options={"intra_op_num_threads": args.threads})
    policy = DiffusionPolicyRunner.load(args.policy, encoder_sha256=encoder.manifest.weights_sha256)

    def report(ep) -> None:
        print(f"[eval] seed={ep.seed} {ep.object_name:<15} {'SUCCESS' if ep.success else 'fail   '} "
              f"{ep.duration_s:5.1f} s  safety rejections {ep.safety_rejections}", flush=True)

    summary = evaluate_in_sim(encoder, policy, args.episodes, seed=args.seed,
                              max_duration_s=args.max_duration_s, on_episode=report)
    d = summary.to_dict()
    n_ok = sum(e.success for e in summary.episodes)
    print(f"[eval] success {n_ok}/{len(summary.episodes)} ({100 * summary.success_rate:.0f}%); "
          f"encode p50 {d['encode_ms_p50']:.1f} ms, policy p50 {d['policy_ms_p50']:.1f} ms; "
          f"wall {summary.wall_time_s:.0f} s")
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(d, indent=2) + "\n")
    return 0
