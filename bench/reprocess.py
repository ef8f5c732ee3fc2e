"""Reprocess benchmark: ``crashray reprocess`` events/s over N stored events after a
regrouping change, and live ingest while it runs.

Loads N events in M issues of ``crashray/default`` into a fresh data dir by bench/_bulk.py
(as bench/export.py does), starts ``crashray up`` on it, saves a fingerprint rule that
regroups every event by its exception type (``type:* -> {{ type }}``: most events move to
another issue, new issues are created and the old ones merged), then runs

1. ``crashray reprocess`` (the regroup: read, regroup, replace the moved rows, merge the
   emptied issues, rebuild the counts) and prints its events/s (wall time of the command,
   Ray's connection included, and the rate the command itself reports);
2. ``crashray reprocess`` again: nothing changes, so this is the read + regroup rate alone;
3. with ``--live-s S``: S seconds of closed-loop ingest (bench/_load.py) quiet, then the
   same while a third reprocess (after the rule is changed back) runs; prints the accepted
   events/s of both and their ratio (during the job: only the part of the second window
   the job overlaps counts).

  python bench/reprocess.py                               # 100,000 events, 1,000 issues
  python bench/reprocess.py --events 20000 --concurrency 2 --live-s 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _load import LoadPlan, free_port, load_template, run_load, target_from_dsn
from export import bulk_load
from ingest import CrashrayInstance, start_crashray, stop_crashray

REGROUP_RULE = "type:* -> {{ type }}"


def set_rule(token: str, base_url: str, rule: str) -> None:
    response = httpx.put(f"{base_url}/api/0/projects/crashray/default/",
                         json={"fingerprintingRules": rule}, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()


def reprocess_once(data_dir: Path, concurrency: int) -> dict[str, Any]:
    environment = {**os.environ, "CRASHRAY_PIPELINE_CONCURRENCY": str(concurrency)}
    started = time.perf_counter()
    result = subprocess.run(["crashray", "reprocess", "--project", "default", "--data-dir",
                             str(data_dir)], capture_output=True, text=True, env=environment,
                            stdin=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"crashray reprocess failed:\n{result.stderr[-3000:]}")
    line = next((x for x in reversed(result.stdout.splitlines())
                 if x.startswith("reprocess job")), result.stdout.strip()[-300:])
    return {"concurrency": concurrency, "wall_s": round(wall_s, 2), "printed": line}


@dataclass(frozen=True)
class LiveWindow:
    """Closed-loop ingest over a window: when each accepted event was answered (wall)."""

    started_wall: float
    ended_wall: float
    answered_wall: list[float]

    def rate(self, until_wall: float | None = None) -> tuple[float, float]:
        """Accepted events/s from the window's start to ``until_wall`` (its end when None
        or later), and that span in seconds."""
        end = self.ended_wall if until_wall is None else min(until_wall, self.ended_wall)
        span = max(end - self.started_wall, 1e-9)
        return sum(1 for t in self.answered_wall if t <= end) / span, span


def live_load(instance: CrashrayInstance, seconds: float) -> LiveWindow:
    """``seconds`` of closed-loop ingest (8 senders, 200 issues)."""
    plan = LoadPlan(rate_per_s=None, concurrency=8, duration_s=seconds, max_events=10**7,
                    issues=200, connections=8, sample_size=0, drain_timeout_s=0.0)
    started = time.time()
    result = asyncio.run(run_load(target_from_dsn("crashray", instance.dsn), plan,
                                  load_template(), lambda record: None))
    return LiveWindow(started, time.time(), [r.answered_at_wall for r in result.accepted])


def live_ratio(instance: CrashrayInstance, token: str, base_url: str, data_dir: Path,
               seconds: float, concurrency: int) -> dict[str, Any]:
    """Accepted events/s while a reprocess job runs over the same quiet. Only the part of
    the load window the job overlaps counts (a job shorter than the window would
    otherwise be diluted by the quiet seconds after it)."""
    quiet, _ = live_load(instance, seconds).rate()
    set_rule(token, base_url, "")  # a regrouping change back: the third job moves again
    done: dict[str, Any] = {}
    ended: list[float] = []

    def job() -> None:
        done.update(reprocess_once(data_dir, concurrency))
        ended.append(time.time())

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(3.0)  # past Ray's connection, into the job's slices
    window = live_load(instance, seconds)
    thread.join()
    if ended and ended[0] <= window.started_wall + 1.0:
        raise SystemExit("the reprocess job ended before the live load had run a second:"
                         " use more events")
    busy, overlap_s = window.rate(ended[0] if ended else None)
    return {"quiet_events_per_s": round(quiet), "during_reprocess_events_per_s": round(busy),
            "overlap_s": round(overlap_s, 1), "ratio": round(busy / max(quiet, 1e-9), 2),
            "reprocess": done}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--issues", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--live-s", type=float, default=0.0,
                        help="seconds of live ingest quiet and during a reprocess (0: none)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crashray-bench-reprocess-"))
    data_dir = work / "data"
    data_dir.mkdir()
    try:
        started = time.perf_counter()
        token = str(bulk_load(data_dir, args.events, args.issues)["token"])
        print(f"loaded {args.events} events in {time.perf_counter() - started:.1f} s",
              flush=True)
        port = free_port()
        instance = start_crashray(data_dir, port)
        base_url = f"http://127.0.0.1:{port}"
        try:
            set_rule(token, base_url, REGROUP_RULE)
            regroup = reprocess_once(data_dir, args.concurrency)
            print(f"regroup: {regroup['wall_s']} s wall; {regroup['printed']}", flush=True)
            unchanged = reprocess_once(data_dir, args.concurrency)
            print(f"again (nothing to change): {unchanged['wall_s']} s wall;"
                  f" {unchanged['printed']}", flush=True)
            live = None
            if args.live_s > 0:
                live = live_ratio(instance, token, base_url, data_dir, args.live_s,
                                  args.concurrency)
                print(f"live ingest: {live['quiet_events_per_s']} events/s quiet,"
                      f" {live['during_reprocess_events_per_s']} during a reprocess"
                      f" over the {live['overlap_s']} s it overlapped the job"
                      f" (ratio {live['ratio']}); {live['reprocess'].get('printed')}",
                      flush=True)
        finally:
            stop_crashray(instance)
        print(json.dumps({"bench": "reprocess", "events": args.events, "issues": args.issues,
                          "regroup": regroup, "unchanged": unchanged, "live": live}))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
