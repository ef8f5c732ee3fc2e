"""What ingest's per-organization backlog check costs: counting the queue vs. the usage rows.

Ingest refuses an organization with too much queued (CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG,
CRASHRAY_MAX_QUEUED_BYTES_PER_ORG) from per-organization figures each replica asks for once
a second. Two ways to get them, measured here on a scratch database of the machine's
PostgreSQL with the real migrations and the Python SDK corpus event as payload (5.5 KB):

  grouped count   SELECT organization_id, count(*), sum(octet_length(payload))
                  FROM ingest_queue GROUP BY organization_id    (and the count alone over an
                  index on organization_id, vacuumed: its best case)
  usage rows      storage.queue.queued_per_organization: the changes the queue's statement
                  triggers record in ingest_queue_usage (migration 0012), folded and summed

and what the triggers cost the writers: one hand-off COPY of --batch items
(``PostgresQueue.enqueue``) and one consumer batch of 500 items (claim, then delete in a
transaction), each with the triggers and without (``ALTER TABLE … DISABLE TRIGGER``),
alternating. Printed as a table, then one JSON line.

  python bench/queue_usage.py --rows 1000000 --orgs 100

(From a worktree, put it first: ``PYTHONPATH=$PWD python bench/queue_usage.py``.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from storage import postgres
from storage import queue as pg_queue
from storage.queue import PostgresQueue, QueuedItem

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import scratch_database

ADMIN_URL = os.environ.get("CRASHRAY_BENCH_POSTGRES_ADMIN_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
CORPUS_ENVELOPE = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdk"
                   / "python-sdk-2.75.0-exception.envelope")
TRIGGERS = ("ingest_queue_usage_insert", "ingest_queue_usage_delete")
#: Rows the fill inserts per statement.
FILL_CHUNK = 100_000




def corpus_payload() -> bytes:
    return CORPUS_ENVELOPE.read_bytes().split(b"\n")[2]


def items(count: int, orgs: int, payload: bytes) -> list[QueuedItem]:
    now = dt.datetime.now(dt.UTC)
    return [QueuedItem(project_id=org, organization_id=org, key_id=org, item_type="event",
                       event_id=uuid.uuid4().hex, received_at=now, payload=payload,
                       meta={"client_ip": "127.0.0.1", "sent_at": None, "item_headers": {}})
            for org in (random.randrange(1, orgs + 1) for _ in range(count))]


def set_triggers(url: str, enabled: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for trigger in TRIGGERS:
            conn.execute(f"ALTER TABLE ingest_queue {'ENABLE' if enabled else 'DISABLE'}"
                         f" TRIGGER {trigger}")


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def writer_costs(url: str, rounds: int, batch: int, orgs: int, payload: bytes
                 ) -> dict[str, dict[str, float]]:
    """Median ms of one hand-off COPY and one consumer claim+delete, triggers on and off."""
    queue = PostgresQueue(url)
    copy: dict[bool, list[float]] = {True: [], False: []}
    consume: dict[bool, list[float]] = {True: [], False: []}
    with psycopg.connect(url) as conn:
        for n in range(rounds * 2):
            enabled = n % 2 == 0
            set_triggers(url, enabled)
            batch_items = items(batch, orgs, payload)
            copy[enabled].append(timed_ms(lambda b=batch_items: queue.enqueue(b)))

            def consume_one() -> None:
                claimed = pg_queue.claim(conn, 500, 30.0)
                with conn.transaction():
                    pg_queue.delete(conn, [c.id for c in claimed])

            consume[enabled].append(timed_ms(consume_one))
    set_triggers(url, True)
    queue.close()
    return {"handoff_copy_ms": {"triggers": statistics.median(copy[True]),
                                "no_triggers": statistics.median(copy[False])},
            "consumer_claim_delete_ms": {"triggers": statistics.median(consume[True]),
                                         "no_triggers": statistics.median(consume[False])}}


def fill(url: str, rows: int, orgs: int, payload: bytes) -> float:
    """``rows`` queued items spread over ``orgs`` organizations; returns seconds taken."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, rows, FILL_CHUNK):
            count = min(FILL_CHUNK, rows - start)
            conn.execute(
                "INSERT INTO ingest_queue (project_id, organization_id, key_id, item_type,"
                " event_id, received_at, meta, payload)"
                " SELECT o, o, o, 'event', md5(g::text), now(), '{}'::jsonb,"
                " %s::bytea || int4send(g) FROM generate_series(1, %s) g,"
                " LATERAL (SELECT 1 + (hashint4(g) & 2147483647) %% %s AS o) org",
                (payload, count, orgs))
            print(f"  filled {start + count} rows", file=sys.stderr, flush=True)
        conn.execute("VACUUM ANALYZE ingest_queue")
    return time.perf_counter() - started


def median_ms(url: str, runs: int, action: Callable[[psycopg.Connection[Any]], object]
              ) -> float:
    with psycopg.connect(url) as conn:
        action(conn)  # warm the cache
        conn.commit()
        times = []
        for _ in range(runs):
            times.append(timed_ms(lambda: action(conn)))
            conn.commit()
    return statistics.median(times)


def grouped_count(conn: psycopg.Connection[Any]) -> object:
    return conn.execute("SELECT organization_id, count(*), sum(octet_length(payload))"
                        " FROM ingest_queue GROUP BY organization_id").fetchall()


def grouped_count_only(conn: psycopg.Connection[Any]) -> object:
    return conn.execute("SELECT organization_id, count(*) FROM ingest_queue"
                        " GROUP BY organization_id").fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="queued items (1M)")
    parser.add_argument("--orgs", type=int, default=100, help="organizations (100)")
    parser.add_argument("--batch", type=int, default=256,
                        help="items per hand-off COPY (256: CRASHRAY_HANDOFF_BATCH_MAX_ITEMS)")
    parser.add_argument("--rounds", type=int, default=30, help="writer rounds per mode (30)")
    parser.add_argument("--runs", type=int, default=5, help="reads timed per query (5)")
    args = parser.parse_args(argv)
    payload = corpus_payload()
    figures: dict[str, Any] = {"rows": args.rows, "orgs": args.orgs,
                               "payload_bytes": len(payload)}
    with scratch_database("crashray_bench_qu", ADMIN_URL) as url:
        postgres.migrate(url)
        figures.update(writer_costs(url, args.rounds, args.batch, args.orgs, payload))
        figures["fill_s"] = round(fill(url, args.rows, args.orgs, payload), 1)
        usage = median_ms(url, args.runs, pg_queue.queued_per_organization)
        with psycopg.connect(url) as conn, conn.transaction():
            exact = {int(r[0]): (int(r[1]), int(r[2])) for r in grouped_count(conn)}  # type: ignore[attr-defined]
            folded = pg_queue.queued_per_organization(conn)
        figures["usage_rows_agree"] = exact == {o: (b.items, b.bytes)
                                                for o, b in folded.items()}
        figures["grouped_count_ms"] = median_ms(url, args.runs, grouped_count)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE INDEX ingest_queue_org ON ingest_queue (organization_id)")
            conn.execute("VACUUM ANALYZE ingest_queue")
        figures["indexed_count_only_ms"] = median_ms(url, args.runs, grouped_count_only)
        figures["usage_rows_ms"] = usage
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.2f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.2f}"
        print(f"{key:28} {value}")
    print(json.dumps({"benchmark": "queue_usage", **figures}))
    return 0 if figures["usage_rows_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
