"""Import benchmark: ``crashray import`` events/s over N generated events, and where the
time goes.

Generates N events from the Python and Node SDK captures (tests/fixtures/sdk: fresh
event ids, ``--issues`` distinct error types, timestamps spread over the last 20 days) as
one JSON lines file, starts ``crashray up`` on a fresh data dir, runs ``crashray import``
into ``crashray/default`` once (wall time of the command, Ray's connection included; the
job's own events/s and task time per stage as the command prints them), runs it a second
time (everything skipped as stored), and checks the issue counters sum to N. Then, in this
process on a sample, splits the processing stage into parse, normalize+scrub (sentry-relay)
and group (tags, grouping, issue metadata).

  python bench/import_events.py                   # 100,000 events, 1,000 issues
  python bench/import_events.py --events 20000 --concurrency 2
  python bench/import_events.py --events 20000 --concurrency 2 --unique-values
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg
from _load import free_port
from ingest import start_crashray, stop_crashray

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sdk"
SDK_FILES = ("python-sdk-2.75.0-exception", "node-sdk-11.12.0-exception")


def templates() -> list[dict[str, object]]:
    events = []
    for name in SDK_FILES:
        lines = (FIXTURES / f"{name}.envelope").read_bytes().split(b"\n")
        events.append(orjson.loads(lines[2]))
    return events


def generate(path: Path, events: int, issues: int, unique_values: bool = False) -> None:
    """``unique_values``: every event's exception value differs (``… #n``), so no two
    events share what grouping reads and the grouping memo never helps."""
    now = time.time()
    bases = templates()
    with path.open("wb") as f:
        for n in range(events):
            event = dict(bases[n % len(bases)])
            values = [dict(v) for v in event["exception"]["values"]]  # type: ignore[index]
            values[-1]["type"] = f"BenchError{n % issues}"
            if unique_values:
                values[-1]["value"] = f"{values[-1].get('value', '')} #{n}"
            event.update(event_id=uuid.uuid4().hex, timestamp=now - (n % 1_728_000),
                         exception={"values": values})
            f.write(orjson.dumps(event) + b"\n")


def import_once(data_dir: Path, source: Path, concurrency: int) -> dict[str, object]:
    environment = {**os.environ, "CRASHRAY_PIPELINE_CONCURRENCY": str(concurrency)}
    started = time.perf_counter()
    result = subprocess.run(["crashray", "import", "--project", "default", "--data-dir",
                             str(data_dir), "--quiet", "--stage-times", str(source)],
                            capture_output=True, text=True, env=environment,
                            stdin=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"crashray import failed:\n{result.stderr[-3000:]}")
    # Ray's own warnings (a raylet's, say) can follow on stdout: take the two lines by
    # what they say.
    lines = result.stdout.strip().splitlines()

    def last(prefix: str) -> str:
        found = [x for x in lines if x.startswith(prefix)]
        if not found:
            raise SystemExit(f"crashray import printed no {prefix!r} line:\n{result.stdout[-3000:]}")
        return found[-1]

    return {"concurrency": concurrency, "wall_s": round(wall_s, 2),
            "summary": last("imported "), "stages": last("task time per stage")}


def times_seen(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT coalesce(sum(i.times_seen), 0) FROM issues i JOIN projects"
                           " p ON p.id = i.project_id JOIN organizations o ON"
                           " o.id = p.organization_id WHERE o.slug = 'crashray'"
                           " AND p.slug = 'default'").fetchone()
    return int(row[0]) if row else 0


def processing_split(source: Path, sample: int) -> dict[str, float]:
    """Microseconds per event of parse, normalize+scrub and group, in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from events.process import EventProcessor, parse_event_json
    from pipelines.import_events import ImportJob, import_context

    job = ImportJob("", "", 1, 1, 90, 30.0, 1000)
    processor = EventProcessor()
    processor.set_scrubbing(1, {"scrubData": True, "scrubDefaults": True})
    lines = source.read_bytes().splitlines()[:sample]
    received = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for line in lines:
        parse_event_json(line)
    parse_s = time.perf_counter() - started
    ctx = import_context(job, received, None)
    started = time.perf_counter()
    for line in lines:
        processor._scrub(processor._normalize(line, ctx), 1)
    normalize_s = time.perf_counter() - started
    started = time.perf_counter()
    for line in lines:
        processor.process(line, ctx)
    total_s = time.perf_counter() - started
    return {"parse_us": round(parse_s / len(lines) * 1e6),
            "normalize_scrub_us": round(normalize_s / len(lines) * 1e6),
            "group_us": round(max(total_s - normalize_s - parse_s, 0) / len(lines) * 1e6),
            "process_total_us": round(total_s / len(lines) * 1e6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--issues", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="CRASHRAY_PIPELINE_CONCURRENCY of the import")
    parser.add_argument("--unique-values", action="store_true",
                        help="a distinct exception value per event: no event is grouped"
                             " like one before (the grouping memo's worst case)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crashray-bench-import-"))
    data_dir = work / "data"
    data_dir.mkdir()
    source = work / "events.jsonl"
    try:
        generate(source, args.events, args.issues, args.unique_values)
        print(f"generated {args.events} events ({source.stat().st_size / 2**20:.0f} MiB)",
              flush=True)
        instance = start_crashray(data_dir, free_port())
        try:
            results = [import_once(data_dir, source, args.concurrency)]
            print(results[-1], flush=True)
            results.append(import_once(data_dir, source, args.concurrency))  # all stored
            print(results[-1], flush=True)
            counted = times_seen(instance.pg_url)
        finally:
            stop_crashray(instance)
        split = processing_split(source, min(2000, args.events))
        print(f"processing per event, one process: {split}")
        print(f"times_seen sum {counted} (expected {args.events})")
        print(json.dumps({"bench": "import", "events": args.events, "results": results,
                          "processing_split": split, "times_seen": counted}))
        return 0 if counted == args.events else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
