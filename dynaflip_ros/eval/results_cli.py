"""`dynaflip results`: the encoder comparison tables of docs/results.md from the result files.

Reads RESULTS_DIR/our_task/<recipe>/ (written by scripts/bench_encoders.sh: each recipe's OOD
session, encoder and policy manifests, probe) and RESULTS_DIR/metaworld/<recipe>/ (`dynaflip
metaworld` runs), compares every recipe with DynaFLIP per condition or task (pooled Wilson
intervals, the mean over training seeds with a t interval, the paired difference to DynaFLIP on
matched training and episode seeds) and rewrites the generated section of the results document
and its plots. Recipes without results, unfinished runs and protocol mismatches are listed in
the section (eval/results.py).
"""
from __future__ import annotations

import argparse

from dynaflip_ros.cli import exit_codes_epilog

EPILOG = """examples:
  dynaflip results                                   # results/ -> docs/results.md, docs/img/
  dynaflip results --check                           # exit 1 when docs/results.md is out of date
  dynaflip results --results-dir /tmp/r --doc /tmp/results.md --img-dir /tmp/img
""" + exit_codes_epilog("--check: the document's generated section differs from the result files")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "results", help="regenerate the encoder comparison tables of docs/results.md from results/",
        description=__doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="results", metavar="DIR", help="result files (default results/)")
    p.add_argument("--doc", default="docs/results.md", metavar="FILE", help="document to update (default docs/results.md)")
    p.add_argument("--img-dir", default="docs/img", metavar="DIR", help="where the plot goes (default docs/img)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the document's generated section is not what the files give")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dynaflip_ros.errors import UserError
    from dynaflip_ros.eval.ood_records import SessionFileError
    from dynaflip_ros.eval.results import build_section, replace_section, write_results

    try:
        if args.check:
            text, _, _ = build_section(args.results_dir, args.doc, args.img_dir)
            doc = Path(args.doc).read_text()
            if replace_section(doc, text) != doc:
                print(f"{args.doc}: the generated section is out of date; run `dynaflip results`")
                return 1
            print(f"{args.doc}: up to date")
            return 0
        summaries = write_results(args.results_dir, args.doc, args.img_dir)
    except SessionFileError as e:
        raise UserError(str(e)) from e
    for name, summary in summaries.items():
        done = list(summary["recipes"])
        print(f"{name}: {len(done)} recipe(s) with results ({', '.join(done) or 'none'}); "
              f"{len(summary['missing'])} missing run(s), {len(summary['warnings'])} warning(s)")
        for m in summary["missing"]:
            print(f"  missing: {m}")
        for w in summary["warnings"]:
            print(f"  warning: {w}")
    return 0
