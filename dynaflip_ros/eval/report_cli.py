"""`dynaflip report`: the report of an OOD evaluation session (eval/ood_report.py).

Reads SESSION_DIR/session.json and episodes.jsonl (written by `dynaflip eval-ood --out SESSION_DIR`),
writes summary.json, plots/*.png and report.html there and prints a table per model: success
rate with its Wilson 95 % interval per condition and the drop against the nominal control on the
same seeds (Newcombe's paired interval, exact McNemar p). An interrupted session is reported as
far as it got; the episodes still missing are listed.
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip report outputs/ood_session
  # an interrupted session: the report covers the episodes that ran and lists the missing ones;
  # the same `dynaflip eval-ood` command with --out outputs/ood_session resumes it

Rates in %, drops in percentage points (nominal - condition: positive = worse than nominal).
""" + exit_codes_epilog()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="report of an OOD evaluation session (summary.json, plots, report.html)",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session_dir", metavar="SESSION_DIR", help="session directory of `dynaflip eval-ood --out`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.ood_records import SessionFileError
    from dynaflip_ros.eval.ood_report import REPORT_FILE, format_tables, write_report

    try:
        summary = write_report(args.session_dir)  # FileNotFoundError (an OSError: exit 2) without a session
    except SessionFileError as e:
        raise UserError(f"{args.session_dir}: {e}") from e
    print(format_tables(summary))
    print(f"report: {Path(args.session_dir) / REPORT_FILE}")
    return 0
