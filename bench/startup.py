"""`crashray up` to its DSN line, in seconds (issue 17's target: ≤ 10 s).

Each run starts `crashray up` in a fresh temporary data dir on a free port (a first start:
private PostgreSQL initialized, migrations, bootstrap) and, with --restart, once more on the
same data dir (a later start); the time is from the command's launch to the line
`DSN: …` on its output, the moment an SDK can be pointed at it. Every instance is stopped
with SIGTERM before the next starts.

With --first-event, the moment the DSN is printed one exception is sent with the real
sentry-sdk, and the time until the events API lists it is printed too: what a user waits
for their first event.

Example: python bench/startup.py --runs 3 --restart
         python bench/startup.py --runs 3 --first-event
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _load import free_port
from ingest import (
    CrashrayInstance,
    _kill_leftovers,
    crashray_pids,
    events_page_request,
    start_crashray,
    stop_crashray,
)
from profile_ingest import TICKS_PER_S, cmdline_of, cpu_ticks, role_of

#: CPU seconds by process role at the DSN line, summed over the runs.
BY_ROLE: dict[str, float] = {}


#: Seconds a first event may take to show in the events API before the run fails.
FIRST_EVENT_TIMEOUT_S = 60.0


def send_first_event(instance: CrashrayInstance) -> float:
    """Send one exception with the real sentry-sdk (in a process of its own, as an
    application would) the moment the DSN is printed, and return the seconds until the
    events API lists it."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", SEND_ONE, instance.dsn], check=True, timeout=60)
    request = events_page_request(instance)
    while time.monotonic() - started < FIRST_EVENT_TIMEOUT_S:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if json.loads(response.read()):
                    return time.monotonic() - started
        except urllib.error.URLError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"the first event was not in the events API within"
                     f" {FIRST_EVENT_TIMEOUT_S:.0f} s")


#: Not tests/e2e/send_python_exceptions.py: its default integrations take ~1.3 s more to
#: import here, which this figure would count as Crashray's.
SEND_ONE = """
import sys, sentry_sdk
sentry_sdk.init(dsn=sys.argv[1], default_integrations=False)
try:
    1 / 0
except ZeroDivisionError as exc:
    sentry_sdk.capture_exception(exc)
sentry_sdk.flush(30)
"""


def time_to_dsn(data_dir: Path, first_event: bool = False
                ) -> tuple[float, float, int, float | None]:
    """Seconds to the DSN line, CPU seconds the instance's live processes had spent by
    then (processes that already ended, such as initdb, not counted), how many, and with
    ``first_event`` the seconds from the DSN line to a first event in the events API."""
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
    try:
        to_event = send_first_event(instance) if first_event else None
    finally:
        stop_crashray(instance)
        _kill_leftovers(data_dir)
    return elapsed, cpu_s, len(pids), to_event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--restart", action="store_true",
                        help="also time a second start on each run's data dir")
    parser.add_argument("--first-event", action="store_true",
                        help="at the DSN line send one exception with sentry-sdk and time"
                             " until the events API lists it")
    args = parser.parse_args(argv)
    first: list[float] = []
    again: list[float] = []
    to_events: list[float] = []
    for run in range(args.runs):
        data_dir = Path(tempfile.mkdtemp(prefix="crs-"))
        try:
            seconds, cpu_s, processes, to_event = time_to_dsn(data_dir, args.first_event)
            first.append(seconds)
            line = (f"run {run + 1}: first start {seconds:.1f} s ({cpu_s:.1f} CPU-s in"
                    f" {processes} processes)")
            if to_event is not None:
                to_events.append(to_event)
                line += (f", first event in the API {to_event:.1f} s after the DSN line"
                         f" ({seconds + to_event:.1f} s after launch)")
            if args.restart:
                seconds, cpu_s, processes, _ = time_to_dsn(data_dir)
                again.append(seconds)
                line += f", second start {seconds:.1f} s ({cpu_s:.1f} CPU-s)"
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        print(line, flush=True)
    runs = args.runs * (2 if args.restart else 1)
    print("CPU seconds per start by role (mean over the starts):")
    for role, spent in sorted(BY_ROLE.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {spent / runs:6.2f}  {role}")
    for name, values in (("first start", first), ("second start", again),
                         ("DSN line to the first event in the API", to_events)):
        if values:
            print(f"{name}: median {statistics.median(values):.1f} s,"
                  f" min {min(values):.1f} s, max {max(values):.1f} s over {len(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
