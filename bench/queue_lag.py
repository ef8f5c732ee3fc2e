"""What the consumer pool autoscaler's measure of the queue costs at a million items.

Every ``CRASHRAY_CONSUMER_SCALE_INTERVAL_S`` the autoscaler asks PostgreSQL how many items
wait (unclaimed, or their lease ran out) and how long the first of them has waited
(``storage.queue.waiting_backlog``: the count stops at ``LAG_COUNT_CAP``, the oldest is
the first waiting id in primary-key order). Measured here against the exact count it
avoids, on a scratch database of the machine's PostgreSQL built by the real migrations,
with the Python SDK corpus event as payload (5.5 KB, TOASTed), in two states:

  churned    consumers have taken the first 10 % (deleted, not yet vacuumed: their index
             entries are still there) and hold the next 1,000 under a lease
  vacuumed   the same after VACUUM ANALYZE
  small      then all but the first 5,000 waiting items processed (deleted), vacuumed: the
             usual case, a pool keeping up

Median of --runs reads each, after one warm-up; a table, then one JSON line.

  python bench/queue_lag.py --rows 1000000

(From a worktree, put it first: ``PYTHONPATH=$PWD python bench/queue_lag.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from actors.pool_autoscaler import LAG_COUNT_CAP
from storage import postgres
from storage.queue import waiting_backlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import scratch_database

ADMIN_URL = os.environ.get("CRASHRAY_BENCH_POSTGRES_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
CORPUS_ENVELOPE = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdk"
                   / "python-sdk-2.75.0-exception.envelope")
FILL_CHUNK = 100_000
#: Items the consumers hold under a lease in the churned state (2 consumers x 500).
CLAIMED = 1_000
#: Items left waiting in the ``small`` state.
SMALL_BACKLOG = 5_000




def fill(url: str, rows: int, payload: bytes) -> None:
    """``rows`` items received a minute ago; the first 10 % processed, the next held."""
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, rows, FILL_CHUNK):
            conn.execute(
                "INSERT INTO ingest_queue (project_id, organization_id, key_id, item_type,"
                " event_id, received_at, meta, payload)"
                " SELECT 1, 1, 1, 'event', md5(g::text), now() - interval '1 minute',"
                " '{}'::jsonb, %s::bytea || int4send(g) FROM generate_series(1, %s) g",
                (payload, min(FILL_CHUNK, rows - start)))
            print(f"  filled {start + FILL_CHUNK} rows", file=sys.stderr, flush=True)
        conn.execute("ANALYZE ingest_queue")
        taken = rows // 10
        conn.execute("DELETE FROM ingest_queue WHERE id <= %s", (taken,))
        conn.execute("UPDATE ingest_queue SET claimed_until = now() + interval '1 hour'"
                     " WHERE id <= %s", (taken + CLAIMED,))


def exact_count(conn: psycopg.Connection[Any]) -> object:
    return conn.execute("SELECT count(*) FROM ingest_queue"
                        " WHERE claimed_until IS NULL OR claimed_until < now()").fetchone()


def median_ms(url: str, runs: int, action: Callable[[psycopg.Connection[Any]], object]
              ) -> float:
    with psycopg.connect(url) as conn:
        action(conn)
        conn.commit()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            action(conn)
            times.append((time.perf_counter() - started) * 1000)
            conn.commit()
    return round(statistics.median(times), 2)


def measure(url: str, runs: int, state: str, figures: dict[str, Any]) -> None:
    figures[f"{state}_waiting_backlog_ms"] = median_ms(
        url, runs, lambda conn: waiting_backlog(conn, LAG_COUNT_CAP))
    figures[f"{state}_exact_count_ms"] = median_ms(url, runs, exact_count)
    with psycopg.connect(url) as conn:
        backlog = waiting_backlog(conn, LAG_COUNT_CAP)
    figures[f"{state}_waiting_items"] = backlog.waiting_items
    figures[f"{state}_oldest_age_s"] = round(backlog.oldest_age_s, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="queued items (1M)")
    parser.add_argument("--runs", type=int, default=9, help="reads timed per query (9)")
    args = parser.parse_args(argv)
    payload = CORPUS_ENVELOPE.read_bytes().split(b"\n")[2]
    figures: dict[str, Any] = {"rows": args.rows, "payload_bytes": len(payload),
                               "count_cap": LAG_COUNT_CAP}
    with scratch_database("crashray_bench_lag", ADMIN_URL) as url:
        postgres.migrate(url)
        fill(url, args.rows, payload)
        measure(url, args.runs, "churned", figures)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE ingest_queue")
        measure(url, args.runs, "vacuumed", figures)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM ingest_queue WHERE id > %s",
                         (args.rows // 10 + CLAIMED + SMALL_BACKLOG,))
            conn.execute("VACUUM ANALYZE ingest_queue")
        measure(url, args.runs, "small", figures)
    for key, value in figures.items():
        print(f"{key:32} {value}")
    print(json.dumps({"benchmark": "queue_lag", **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
