"""`dynaflip ensemble-policy`: combine policy checkpoints of one recipe into a checkpoint ensemble."""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

DESCRIPTION = """Combine policy checkpoints of one recipe on one encoder (e.g. two training seeds) into a
checkpoint ensemble directory (policies/checkpoint_ensemble.py): each member is copied into it and
ensemble.json records the sha256 of every member's policy.json. Deployed like a single policy
(`dynaflip eval --policy DIR`, the policy node's model_dir): each chunk is the mean of the
members' chunks, `--samples-per-chunk` / samples_per_chunk counted over all members. Members that
differ in encoder, text encoder, fps, embedding width, window or chunk length are refused."""

EPILOG = """examples:
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out outputs/policy_s0 --seed 0
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out outputs/policy_s1 --seed 1
  dynaflip ensemble-policy --member outputs/policy_s0 --member outputs/policy_s1 --out models/policy
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ensemble-policy", help="combine policy checkpoints (training seeds) into an ensemble",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--member", action="append", required=True, metavar="DIR",
                   help="a policy checkpoint directory (dynaflip train-policy --out); repeat, at least twice")
    p.add_argument("--out", required=True, help="ensemble directory (replaced once every member is checked)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.policies.checkpoint_ensemble import write_ensemble

    for m in args.member:
        if not Path(m).is_dir():
            raise UserError(f"--member: not a directory: {m}")
    try:
        out = write_ensemble(args.member, args.out)
    except ValueError as e:  # fewer than 2 members, --out among them, incompatible or damaged members
        raise UserError(str(e)) from e
    print(f"ensemble of {len(args.member)} policies written to {out}", flush=True)
    return 0
