"""What ingest's hand-off costs: Kafka (storage/kafka.py) against the PostgreSQL queue, in
one run, with the same items and the same batching.

THE KAFKA FIGURES ARE AGAINST librdkafka's MOCK CLUSTER (tests/support_kafka.py: the mock
broker inside the confluent-kafka wheel's librdkafka, 3 brokers in one process on this
machine, partitions in memory), NOT Apache Kafka: no Apache Kafka broker can be installed
here. A real cluster adds network round trips and disk (``acks=all`` waits for the
in-sync replicas), and its brokers do not share this machine's two cores.

Each hand-off is what one ``@serve.batch`` batch of ingest does: ``enqueue`` of --batch
items (the Python SDK corpus event, 5.5 KB, as payload), returning once durable: for Kafka
once every message is acknowledged (idempotent producer, ``acks=all``, zstd, linger 5 ms),
for PostgreSQL once the COPY committed. --threads callers hand off at once (an ingest
replica runs two batches at a time). Printed: items/s, and per hand-off the p50 and p99
latency in ms (what each request of the batch waits for its 200 on top of the rest).

With ``--processed N`` it then measures events fully processed per second, Kafka against
the PostgreSQL queue in the same run: N events (the same corpus event, each with its own
id) are handed off, then one consumer without Ray (``KafkaBatchConsumer`` on the mock
cluster, ``BatchConsumer`` on the queue; batches of ``CRASHRAY_CONSUMER_BATCH_ITEMS``)
processes, groups and stores them (ClickHouse: chDB in this process; PostgreSQL: a scratch
database) until all are counted. Printed: events/s from the first batch to the last commit.

  PYTHONPATH=$PWD python bench/kafka_handoff.py --items 20000 --batch 64
  PYTHONPATH=$PWD python bench/kafka_handoff.py --items 5000 --processed 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from actors.consumer import BatchConsumer, ConsumerConfig
from actors.kafka_consumer import KafkaBatchConsumer
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres
from storage.bootstrap import bootstrap
from storage.clickhouse import ClickHouseStore
from storage.kafka import KafkaHandoff, KafkaSettings
from storage.queue import PostgresQueue, QueuedItem
from tests.support import scratch_database
from tests.support_kafka import MockKafkaCluster

CORPUS_ENVELOPE = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdk"
                   / "python-sdk-2.75.0-exception.envelope")


def batches(count: int, batch: int, projects: int, payload: bytes) -> list[list[QueuedItem]]:
    now = dt.datetime.now(dt.UTC)
    items = [QueuedItem(project_id=1 + n % projects, organization_id=1, key_id=1,
                        item_type="event", event_id=uuid.uuid4().hex, received_at=now,
                        payload=payload, meta={"client_ip": "127.0.0.1", "sent_at": None,
                                               "item_headers": {"type": "event"}})
             for n in range(count)]
    return [items[i:i + batch] for i in range(0, count, batch)]


def run(enqueue: Callable[[Sequence[QueuedItem]], None], work: list[list[QueuedItem]],
        threads: int) -> dict[str, float]:
    """Hand off ``work`` from ``threads`` callers; items/s and latency per hand-off."""
    latencies: list[float] = []
    lock = threading.Lock()
    position = iter(range(len(work)))

    def caller() -> None:
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            started = time.perf_counter()
            enqueue(work[index])
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    latencies.sort()
    return {"items_per_s": round(sum(len(b) for b in work) / seconds),
            "handoff_p50_ms": round(statistics.median(latencies), 2),
            "handoff_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
            "seconds": round(seconds, 2)}


def distinct_events(count: int, project_id: int, organization_id: int, key_id: int,
                    payload: bytes) -> list[QueuedItem]:
    """``count`` copies of the corpus event, each with an event id of its own."""
    event = orjson.loads(payload)
    now = dt.datetime.now(dt.UTC)
    items = []
    for _ in range(count):
        event_id = uuid.uuid4().hex
        items.append(QueuedItem(project_id, organization_id, key_id, "event", event_id, now,
                                orjson.dumps({**event, "event_id": event_id}),
                                {"client_ip": "127.0.0.1", "sent_at": None,
                                 "item_headers": {"type": "event"}}))
    return items


def drain(consumer: BatchConsumer, count: int, timeout_s: float = 600.0) -> dict[str, float]:
    """Run ``consumer`` until ``count`` items were processed; events/s from the start of
    its first non-empty batch."""
    started: float | None = None
    deadline = time.monotonic() + timeout_s
    while consumer.processed_total < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {consumer.processed_total} of {count} processed")
        called = time.perf_counter()
        if consumer.run_once() and started is None:
            started = called  # the first batch counts; joining the group does not
    seconds = time.perf_counter() - (started or time.perf_counter())
    return {"events_per_s": round(count / seconds) if seconds else 0.0,
            "seconds": round(seconds, 2)}


def processed(count: int, payload: bytes, partitions: int, chdb_dir: Path
              ) -> dict[str, dict[str, float]]:
    """Events fully processed per second, Kafka (mock cluster) against the queue."""
    figures: dict[str, dict[str, float]] = {}
    store = ClickHouseStore(f"chdb://{chdb_dir}")
    store.migrate()
    with scratch_database("crashray_bench_kp") as url:
        postgres.migrate(url)
        with postgres.connect(url) as conn:
            boot = bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
            row = conn.execute("SELECT p.organization_id, k.id FROM projects p JOIN"
                               " project_keys k ON k.project_id = p.id WHERE p.id = %s",
                               (boot.project_id,)).fetchone()
        assert row is not None
        config = ConsumerConfig(url, store.dsn, batch_items=500, lease_s=30.0, max_attempts=3,
                                retention_days=90, idle_poll_s=0.5, batch_wait_s=0.0,
                                dedup_window_s=86_400.0)
        cluster = MockKafkaCluster(3)
        try:
            settings = KafkaSettings(bootstrap=cluster.bootstrap, partitions=partitions)
            for topic in (settings.events_topic, settings.outcomes_topic,
                          settings.dead_letters_topic):
                cluster.create_topic(topic, partitions, 3)
            handoff = KafkaHandoff(settings)
            for chunk in batches_of(distinct_events(count, boot.project_id, row[0], row[1],
                                                    payload), 500):
                handoff.enqueue(chunk)
            handoff.close()
            kafka_consumer = KafkaBatchConsumer(config, settings, store=store)
            figures["kafka"] = drain(kafka_consumer, count)
            kafka_consumer.close()
        finally:
            cluster.close()
        queue = PostgresQueue(url)
        for chunk in batches_of(distinct_events(count, boot.project_id, row[0], row[1],
                                                payload), 500):
            queue.enqueue(chunk)
        queue.close()
        pg_consumer = BatchConsumer(config, store=store)
        figures["postgres"] = drain(pg_consumer, count)
        pg_consumer.close()
    return figures


def batches_of(items: list[QueuedItem], size: int) -> list[list[QueuedItem]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000, help="items per back end")
    parser.add_argument("--batch", type=int, default=64, help="items per hand-off (64)")
    parser.add_argument("--threads", type=int, default=2, help="concurrent hand-offs (2)")
    parser.add_argument("--projects", type=int, default=50, help="projects (keys) (50)")
    parser.add_argument("--partitions", type=int, default=12, help="partitions (12)")
    parser.add_argument("--no-postgres", action="store_true", help="Kafka only")
    parser.add_argument("--processed", type=int, default=0,
                        help="also measure N events fully processed by one consumer (0)")
    args = parser.parse_args(argv)
    payload = CORPUS_ENVELOPE.read_bytes().split(b"\n")[2]
    figures: dict[str, Any] = {"broker": "librdkafka mock cluster (NOT Apache Kafka)",
                               "items": args.items, "batch": args.batch,
                               "threads": args.threads, "payload_bytes": len(payload)}
    cluster = MockKafkaCluster(3)
    try:
        settings = KafkaSettings(bootstrap=cluster.bootstrap, partitions=args.partitions)
        for topic in (settings.events_topic, settings.outcomes_topic):
            cluster.create_topic(topic, args.partitions, 3)
        handoff = KafkaHandoff(settings)
        handoff.enqueue(batches(10, 10, 1, payload)[0])  # connections, producer id
        figures["kafka"] = run(handoff.enqueue, batches(args.items, args.batch,
                                                        args.projects, payload), args.threads)
        handoff.close()
    finally:
        cluster.close()
    if not args.no_postgres:
        with scratch_database("crashray_bench_kh") as url:
            postgres.migrate(url)
            queue = PostgresQueue(url)
            queue.enqueue(batches(10, 10, 1, payload)[0])
            figures["postgres"] = run(queue.enqueue, batches(args.items, args.batch,
                                                             args.projects, payload),
                                      args.threads)
            queue.close()
        figures["kafka_vs_postgres_items_per_s"] = round(
            figures["kafka"]["items_per_s"] / figures["postgres"]["items_per_s"], 2)
    if args.processed:
        with tempfile.TemporaryDirectory() as chdb_dir:
            figures["processed"] = processed(args.processed, payload, args.partitions,
                                             Path(chdb_dir))
    for name in ("kafka", "postgres"):
        if name in figures:
            f = figures[name]
            print(f"{name:9} {f['items_per_s']:>8} items/s  p50 {f['handoff_p50_ms']:>7} ms"
                  f"  p99 {f['handoff_p99_ms']:>7} ms  per hand-off of {args.batch}")
    for name, f in figures.get("processed", {}).items():
        print(f"{name:9} {f['events_per_s']:>8} events/s fully processed by one consumer"
              f" ({args.processed} events, {f['seconds']} s)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
