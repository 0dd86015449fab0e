"""`dynaflip <verb>`: the user-facing command line. Thin: the work lives in the library.

Each verb lives in its own module exposing `register(subparsers)`, which adds an argparse
sub-parser (with examples in its epilog, ending with `exit_codes_epilog(...)`) and sets
`func=run`. Verb modules import only argparse (and this module) at module level, so
`dynaflip --help` starts without torch, MuJoCo or ROS.

Errors (`main`): a `errors.UserError` (bad input, a damaged or mismatched file, a missing model),
a `configs.io.ConfigError` and an `OSError` (a missing or unreadable file) print one line,
"dynaflip <verb>: <message>", on stderr and exit `errors.EXIT_USAGE` (2); Ctrl-C exits 130;
any other exception is a bug and keeps its traceback (exit 1).

One flag name per concept, in every verb: --out (anything written), --encoder / --policy (model
directories), --backend (encoder inference backend), --config (the verb's own config YAML),
--params-file (a ROS 2 params file, `<node>: ros__parameters: ...`), --safety-config (a
SafetyConfig YAML), --robot-ip (UR controller address), --episode-timeout-s (per-episode time
limit), --seed, --episodes, --threads, --image-size.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from dynaflip_ros.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UserError

# verb -> module defining register(subparsers)
VERBS: dict[str, str] = {
    "record": "dynaflip_ros.data.cli",
    "train-encoder": "dynaflip_ros.encoder.cli",
    "export": "dynaflip_ros.export.cli",
    "train-policy": "dynaflip_ros.policies.cli",
    "ensemble-policy": "dynaflip_ros.policies.ensemble_cli",
    "eval": "dynaflip_ros.eval.cli",
    "eval-ood": "dynaflip_ros.eval.ood_cli",
    "report": "dynaflip_ros.eval.report_cli",
    "results": "dynaflip_ros.eval.results_cli",
    "visualize": "dynaflip_ros.eval.visualize_cli",
    "metaworld": "dynaflip_ros.metaworld.cli",
    "probe": "dynaflip_ros.eval.probe_cli",
    "embedding-shift": "dynaflip_ros.eval.embedding_shift_cli",
    "privileged": "dynaflip_ros.eval.privileged_cli",
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
  dynaflip eval-ood --model shipped=models/encoder,models/policy --conditions distractors:1,lighting:1 --out outputs/ood/s
  dynaflip report outputs/ood/s
  dynaflip probe --dataset outputs/demos --encoder models/encoder
  dynaflip privileged --dataset outputs/demos --policy outputs/policy_privileged --episodes 20
  dynaflip launch pick_into_sink --sim --episodes 20
  dynaflip fault-inject
  dynaflip calibrate hand-eye --mode eye-to-hand --sim
"""


def exit_codes_epilog(failure: str = "", **codes: str) -> str:
    """The "exit codes:" paragraph of a verb's --help epilog, the same for every verb.

    failure: what exit 1 means for this verb besides a bug ("" = only a bug);
    codes: further verb-specific codes, keyword `c<N>` -> meaning (e.g. c3="TensorRT missing").
    Returns text lines indented like the epilogs, each ending in a newline.
    """
    items = [(EXIT_OK, "ok")]
    items.append((EXIT_FAILURE, f"{failure}, or a bug (traceback)" if failure else "a bug (traceback)"))
    items.append((EXIT_USAGE, "bad flag, config, input file or model, or a robot / camera / device that is not "
                              "ready: one line 'dynaflip <verb>: <message>'"))
    items += sorted((int(k.lstrip("c")), v) for k, v in codes.items())
    items.append((EXIT_INTERRUPTED, "interrupted (Ctrl-C)"))
    return "exit codes:\n" + "".join(f"  {code:>3}  {text}\n" for code, text in items)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynaflip",
        description="DynaFLIP encoder training, export and ROS 2 deployment on a UR3 (sim or real).",
        epilog=EPILOG + exit_codes_epilog(),
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


def _user_error_types() -> tuple[type[BaseException], ...]:
    """UserError, ConfigError (a UserError too; listed in case it is not) and OSError."""
    from dynaflip_ros.configs.io import ConfigError

    return (UserError, ConfigError, OSError)


def one_line(error: BaseException) -> str:
    """`error` as one line: its message with newlines folded ("; "), the class name when empty."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and not error.strerror:
        text = f"{text}: {error.filename}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the verb, return its exit code (see module doc)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print(f"dynaflip {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_error_types() as e:
        print(f"dynaflip {args.verb}: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
