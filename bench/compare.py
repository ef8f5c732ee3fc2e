"""Crashray and Bugsink under the same load, one after the other, in one table.

Runs bench/ingest.py's measurement (a fresh `crashray up`, or the one named by --dsn/--pg-url)
and then bench/bugsink_baseline.py's (a fresh Bugsink), never both at once, so each has the
machine to itself. Prints one table with a column per system, then one JSON line each.

  python bench/compare.py --concurrency 16 --seconds 20 --bugsink-bin /tmp/bugsink-venv/bin
  python bench/compare.py --rate 500 --seconds 20 --bugsink-bin /tmp/bugsink-venv/bin
"""

from __future__ import annotations

import argparse
import sys

from _measure import Report, format_table
from bugsink_baseline import add_bugsink_arguments, run_bugsink
from ingest import build_parser as crashray_parser
from ingest import run_crashray


def build_parser() -> argparse.ArgumentParser:
    parser = crashray_parser()
    parser.description = __doc__
    add_bugsink_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.dsn) != bool(args.pg_url):
        raise SystemExit("attaching needs both --dsn and --pg-url (and --token for the API check)")
    reports: list[Report] = [run_crashray(args)]
    try:
        reports.append(run_bugsink(args))
    except SystemExit as exc:
        print(f"Bugsink baseline not measured: {exc}", file=sys.stderr)
    print(format_table(reports))
    for report in reports:
        print(report.json_line())
    return 0 if all(r.losses == 0 for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
