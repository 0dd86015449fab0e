"""`dynaflip <verb>`: the user-facing command line. Thin: the work lives in the library.

Each verb lives in its own module exposing `register(subparsers)`, which adds an argparse
sub-parser (with examples in its epilog) and sets `func=run`. Verb modules import only argparse
at module level, so `dynaflip --help` starts without torch, MuJoCo or ROS.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# verb -> module defining register(subparsers)
VERBS: dict[str, str] = {
    "record": "dynaflip_ros.data.cli",
    "train-encoder": "dynaflip_ros.encoder.cli",
    "export": "dynaflip_ros.export.cli",
    "train-policy": "dynaflip_ros.policies.cli",
    "eval": "dynaflip_ros.eval.cli",
    "launch": "dynaflip_ros.ros.launch_cli",
    "fault-inject": "dynaflip_ros.eval.fault_cli",
    "calibrate": "dynaflip_ros.calibration.cli",
    "ur-loopback": "dynaflip_ros.sim.ur_loopback.cli",
}

EPILOG = """examples:
  dynaflip record --sim --episodes 100 --out outputs/demos
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder
  dynaflip export --encoder outputs/encoder --out models/encoder
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out models/policy
  dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20
  dynaflip launch pick_into_sink --sim --episodes 20
  dynaflip fault-inject
  dynaflip calibrate hand-eye --mode eye-to-hand --sim
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynaflip",
        description="DynaFLIP encoder training, export and ROS 2 deployment on a UR3 (sim or real).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, module in VERBS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # verb not built yet
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
