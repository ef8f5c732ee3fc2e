"""`crashray up` to its DSN line, in seconds (issue 17's target: ≤ 10 s).

Each run starts `crashray up` in a fresh temporary data dir on a free port (a first start:
private PostgreSQL initialized, migrations, bootstrap) and, with --restart, once more on the
same data dir (a later start); the time is from the command's launch to the line
`DSN: …` on its output, the moment an SDK can be pointed at it. Every instance is stopped
with SIGTERM before the next starts.

Example: python bench/startup.py --runs 3 --restart
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _load import free_port
from ingest import _kill_leftovers, crashray_pids, start_crashray, stop_crashray
from profile_ingest import TICKS_PER_S, cmdline_of, cpu_ticks, role_of

#: CPU seconds by process role at the DSN line, summed over the runs.
BY_ROLE: dict[str, float] = {}


def time_to_dsn(data_dir: Path) -> tuple[float, float, int]:
    """Seconds to the DSN line, CPU seconds the instance's live processes had spent by
    then (processes that already ended, such as initdb, not counted), and how many."""
    started = time.monotonic()
    instance = start_crashray(data_dir, free_port())
    # start_crashray returns once "Crashray is running" follows the DSN: the line after.
    elapsed = time.monotonic() - started
    pids = crashray_pids(instance)
    cpu_s = 0.0
    for pid in pids:
        spent = cpu_ticks(pid) / TICKS_PER_S
        role = role_of(cmdline_of(pid))
        BY_ROLE[role] = BY_ROLE.get(role, 0.0) + spent
        cpu_s += spent
    stop_crashray(instance)
    _kill_leftovers(data_dir)
    return elapsed, cpu_s, len(pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--restart", action="store_true",
                        help="also time a second start on each run's data dir")
    args = parser.parse_args(argv)
    first: list[float] = []
    again: list[float] = []
    for run in range(args.runs):
        data_dir = Path(tempfile.mkdtemp(prefix="crs-"))
        try:
            seconds, cpu_s, processes = time_to_dsn(data_dir)
            first.append(seconds)
            line = (f"run {run + 1}: first start {seconds:.1f} s ({cpu_s:.1f} CPU-s in"
                    f" {processes} processes)")
            if args.restart:
                seconds, cpu_s, processes = time_to_dsn(data_dir)
                again.append(seconds)
                line += f", second start {seconds:.1f} s ({cpu_s:.1f} CPU-s)"
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        print(line, flush=True)
    runs = args.runs * (2 if args.restart else 1)
    print("CPU seconds per start by role (mean over the starts):")
    for role, spent in sorted(BY_ROLE.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {spent / runs:6.2f}  {role}")
    for name, values in (("first start", first), ("second start", again)):
        if values:
            print(f"{name}: median {statistics.median(values):.1f} s,"
                  f" min {min(values):.1f} s, max {max(values):.1f} s over {len(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
