"""Storage bytes per stored event, ClickHouse and PostgreSQL separately, on the benchmark
corpus.

Generates N events from the Python and Node SDK captures (bench/import_events.py's
generator: fresh event ids, ``--issues`` error types, timestamps over 20 days), starts
``crashray up`` on a fresh data dir, stores them through ``crashray import`` (the consumers'
storing code: normalize, scrub, group, ClickHouse rows, issue counters, event ids for
de-duplication), stops it, merges ClickHouse's parts (``OPTIMIZE … FINAL``, as background
merges end up) and measures each table with storage/sizes.py, the same figures ``crashray
storage`` prints.

  cd bench && python storage_bytes.py --events 20000 --issues 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _load import free_port
from import_events import generate, import_once
from ingest import start_crashray, stop_crashray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Tables whose size grows with stored events (the rest hold projects, users, settings).
CLICKHOUSE_EVENT_TABLES = ("events", "issue_counts_hourly", "outcomes", "envelope_items",
                           "sessions_raw")
POSTGRES_EVENT_TABLES = ("issues", "group_hashes", "processed_events", "issue_activity",
                         "clickhouse_outbox", "ingest_queue")


def measure(data_dir: Path) -> dict[str, dict[str, list[int]]]:
    """Rows and bytes per table of both databases of a stopped instance's ``data_dir``."""
    from cluster.embedded_postgres import EmbeddedPostgres
    from storage import postgres
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn
    from storage.sizes import clickhouse_sizes, postgres_sizes

    store = ClickHouseStore(clickhouse_dsn(None, data_dir))
    for table in CLICKHOUSE_EVENT_TABLES:
        store._client.command(f"OPTIMIZE TABLE {table} FINAL")
    clickhouse = {t.table: [t.rows, t.bytes] for t in clickhouse_sizes(store)}
    store.close()
    server = EmbeddedPostgres(data_dir)
    try:
        with postgres.connect(server.start(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            pg = {t.table: [t.rows, t.bytes] for t in postgres_sizes(conn)}
    finally:
        server.stop()
    return {"clickhouse": clickhouse, "postgres": pg}


def per_event(sizes: dict[str, list[int]], tables: tuple[str, ...], events: int
              ) -> dict[str, float]:
    found = {t: round(sizes[t][1] / events, 1) for t in tables if t in sizes}
    found["total"] = round(sum(found.values()), 1)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--issues", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crashray-bench-storage-"))
    data_dir = work / "data"
    data_dir.mkdir()
    source = work / "events.jsonl"
    try:
        generate(source, args.events, args.issues)
        source_bytes = source.stat().st_size
        instance = start_crashray(data_dir, free_port())
        try:
            print(import_once(data_dir, source, 1), flush=True)
        finally:
            stop_crashray(instance)
        sizes = measure(data_dir)
        result = {
            "bench": "storage_bytes", "events": args.events, "issues": args.issues,
            "event_json_bytes": round(source_bytes / args.events, 1),
            "clickhouse_bytes_per_event": per_event(sizes["clickhouse"],
                                                    CLICKHOUSE_EVENT_TABLES, args.events),
            "postgres_bytes_per_event": per_event(sizes["postgres"], POSTGRES_EVENT_TABLES,
                                                  args.events),
            "clickhouse_all_tables_bytes": sum(b for _, b in sizes["clickhouse"].values()),
            "postgres_all_tables_bytes": sum(b for _, b in sizes["postgres"].values()),
            "tables": sizes}
        print(json.dumps(result, indent=1))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
