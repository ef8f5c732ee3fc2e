"""What the events table's merges cost in the embedded ClickHouse (chDB) under different
MergeTree settings: CPU, memory and disk of one process that inserts events as the
consumers do.

Each variant runs in a fresh process with a fresh chDB data dir: the schema as Crashray
migrates it, then ``ALTER TABLE events MODIFY SETTING <variant>``, then ``--batches``
inserts of ``--rows`` events each (the Python SDK's exception event from the corpus,
normalized, scrubbed and grouped as a consumer does, each row with its own event id and
exception value), then it waits until no merge runs and the parts stopped changing for
2 s. Printed per variant:

  cpu_s              the process's user + system CPU over the inserts and merges (chDB's
                     merge threads are threads of this process; the sampler's queries too)
  wall_s             from the first insert until the merges settled
  merge mem peak MB  the largest ``MemoryTracking`` (chDB's own accounting) sampled every
                     20 ms while inserting and merging
  RSS peak MiB       the process's VmHWM
  parts              active parts of the events table at the end
  disk B/event       the events table's bytes on disk per stored event

    python bench/clickhouse_merges.py --batches 300 --rows 30 --rounds 3
    (by default: ClickHouse's own min_bytes_for_wide_part, 10 MB, against Crashray's)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


#: ClickHouse's default: parts of 10 MB of uncompressed data or more are wide.
CLICKHOUSE_DEFAULT = "min_bytes_for_wide_part = 10485760"
#: Crashray's (migration 0008): compact up to 100 MB.
CRASHRAY = "min_bytes_for_wide_part = 104857600"


def _events(rows: int) -> list[Any]:
    """``rows`` processed copies of the corpus's Python SDK exception event."""
    import orjson
    from _load import load_template

    from events.process import EventProcessor, ItemContext

    template = load_template().event
    processor = EventProcessor()
    processor.set_scrubbing(1, {"scrubData": True, "scrubDefaults": True,
                                "scrubIpAddresses": True, "sensitiveFields": [],
                                "excludeFields": []})
    now = dt.datetime.now(dt.UTC)
    out = []
    for n in range(rows):
        event = orjson.loads(orjson.dumps(template))
        event["event_id"] = uuid.uuid4().hex
        event["exception"]["values"][-1]["value"] = f"failure number {n}"
        out.append(processor.process(orjson.dumps(event), ItemContext(1, None, now)))
    return out


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_variant(settings: str, batches: int, rows: int) -> dict[str, Any]:
    import pyarrow as pa

    from events.rows import EventRow, events_table
    from storage.clickhouse import ClickHouseStore

    processed = _events(rows)
    with tempfile.TemporaryDirectory(prefix="crashray-merges-") as data_dir:
        store = ClickHouseStore(f"chdb://{data_dir}/clickhouse")
        store.migrate()
        store.query_rows(f"ALTER TABLE events MODIFY SETTING {settings}", {})
        tables = []
        for b in range(batches):
            table = events_table([EventRow(1, 1, 1 + (b * rows + i) % 1000, 90, p)
                                  for i, p in enumerate(processed)])
            ids = pa.array([str(uuid.uuid4()) for _ in range(rows)], pa.string())
            index = table.schema.get_field_index("event_id")
            tables.append(table.set_column(index, table.schema.field(index),
                                           ids.cast(table.schema.field(index).type)))
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rows_ = store.query_rows(
                    "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'", {})
                peak[0] = max(peak[0], int(rows_[0][0]))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        sampler.start()
        for table in tables:
            store.insert("events", table)
        parts, still = -1, 0
        while still < 20:  # the parts unchanged and no merge running for 2 s
            now_parts = int(store.query_rows(
                "SELECT count() FROM system.parts WHERE table = 'events' AND active", {})[0][0])
            merging = int(store.query_rows(
                "SELECT count() FROM system.merges WHERE table = 'events'", {})[0][0])
            still = still + 1 if (now_parts == parts and not merging) else 0
            parts = now_parts
            time.sleep(0.1)
        wall = time.perf_counter() - started - 2.0
        done.set()
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
        stored = int(store.query_rows("SELECT count() FROM events", {})[0][0])
        on_disk = int(store.query_rows(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE table = 'events' AND active",
            {})[0][0])
    return {"settings": settings, "batches": batches, "rows": rows,
            "stored": stored,
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                           2),
            "wall_s": round(wall, 2), "merge_mem_peak_mb": round(peak[0] / 1e6, 1),
            "rss_peak_mib": round(_vm_hwm_mib(), 1), "parts": parts,
            "bytes_on_disk_per_event": round(on_disk / max(stored, 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rows", type=int, default=30, help="events per insert")
    parser.add_argument("--variants", nargs="+", default=[CLICKHOUSE_DEFAULT, CRASHRAY],
                        help="the events table's MergeTree settings of each variant, as"
                             " ALTER TABLE ... MODIFY SETTING takes them")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant, alternated")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_variant(args.one, args.batches, args.rows)))
        return 0
    print(f"{'settings':<60} {'stored':>7} {'cpu_s':>6} {'wall_s':>6}"
          f" {'merge mem peak MB':>17} {'RSS peak MiB':>12} {'parts':>5} {'disk B/event':>12}")
    for _ in range(args.rounds):
        for variant in args.variants:
            out = subprocess.run(
                [sys.executable, __file__, "--one", variant, "--batches",
                 str(args.batches), "--rows", str(args.rows)],
                check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{r['settings']:<60} {r['stored']:>7} {r['cpu_s']:>6}"
                  f" {r['wall_s']:>6} {r['merge_mem_peak_mb']:>17} {r['rss_peak_mib']:>12}"
                  f" {r['parts']:>5} {r['bytes_on_disk_per_event']:>12}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
