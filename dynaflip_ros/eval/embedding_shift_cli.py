"""`dynaflip embedding-shift`: how far each OOD condition moves a frozen encoder's output (eval/embedding_shift.py).

Resets the simulated scene of every episode seed under every condition as `dynaflip eval-ood`
does, embeds its first frame and reports, per condition, the shift from the same seed's nominal
output relative to the distance between two nominal scenes, and how often the perturbed output
is still nearest to its own scene's nominal output. No policy runs.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip embedding-shift --encoder models/encoder --conditions lighting:0.1,texture:0.1,camera_pose:0.1
  dynaflip embedding-shift --encoder outputs/bench/tcn/encoder/export --episodes 50 \\
      --conditions distractors:0.5,novel_object:0.5,lighting:0.1,texture:0.1,camera_pose:0.1,placement:0.25 \\
      --threads 1 --out outputs/bench/tcn/shift.json

relative shift: ||e(perturbed) - e(nominal)|| of one seed over the mean distance between two nominal
scenes (< 1: the condition moves the output less than another scene does); retrieval: the share of
seeds whose perturbed output is nearest to their own nominal output (chance 1/seeds).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    from dynaflip_ros.eval.ood_cli import add_scene_flags

    p = subparsers.add_parser(
        "embedding-shift", help="how far OOD conditions move a frozen encoder's output (no policy)",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="exported encoder directory (manifest.json + model)")
    p.add_argument("--backend", default="onnxruntime", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                   help="encoder backend (default onnxruntime)")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads (default 2)")
    add_scene_flags(p, 50, "episode seeds, one first frame each per condition")
    p.add_argument("--out", metavar="PATH", help="also write the report as JSON here")
    p.set_defaults(func=run)


def format_report(report) -> str:
    """One line per view and condition: mean relative shift (95 % interval) and retrieval k/n."""
    lines = [f"seeds {report.seeds[0]}..{report.seeds[-1]} ({len(report.seeds)}); encoder "
             f"{report.encoder['weights_sha256'][:12]}"]
    for view, per in report.stats.items():
        for c, s in per.items():
            ci = "" if s.ci_low is None else f" ({s.ci_low:.2f}-{s.ci_high:.2f})"
            lines.append(f"  {view:<9} {c:<22} relative shift {s.mean:.2f}{ci}  retrieval {s.retrieved}/{s.n} "
                         f"({100 * s.retrieval_ci[0]:.0f}-{100 * s.retrieval_ci[1]:.0f} %)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from dynaflip_ros.configs.sim import SimConfig
    from dynaflip_ros.data.dataset_io import atomic_write_bytes
    from dynaflip_ros.encoder.manifest import token_layout
    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.embedding_shift import embedding_shift
    from dynaflip_ros.eval.ood_cli import parse_seeds
    from dynaflip_ros.eval.ood_records import NOMINAL
    from dynaflip_ros.policies.train import load_encoder_backend
    from dynaflip_ros.sim.perturbations import parse_conditions
    from dynaflip_ros.sim.pick_into_sink import PickIntoSinkEnv

    if not Path(args.encoder).is_dir():
        raise UserError(f"--encoder {args.encoder} is not a directory")
    try:
        conditions = [c.name for c in parse_conditions(args.conditions) if c.name != NOMINAL]
    except ValueError as e:
        raise UserError(f"--conditions: {e}") from None
    if not conditions:
        raise UserError("--conditions: give at least one condition besides nominal (nominal is the reference)")
    seeds = parse_seeds(args.seeds, args.episodes, args.seed)
    if len(seeds) < 2:
        raise UserError(f"need at least 2 episode seeds, got {len(seeds)}")
    enc = load_encoder_backend(args.encoder, args.backend, args.threads)
    layout = token_layout(enc.manifest)
    env = PickIntoSinkEnv(SimConfig())
    try:
        report = embedding_shift(enc, env, seeds, conditions, embedding_dim=None if layout is None else layout.embedding_dim,
                                 progress=lambda line: print(line, flush=True))
    finally:
        env.close()
    report.encoder["dir"] = str(args.encoder)
    print(format_report(report))
    if args.out:
        atomic_write_bytes(Path(args.out), (json.dumps(report.to_dict(), indent=1) + "\n").encode())
        print(f"[embedding-shift] wrote {args.out}")
    return 0
