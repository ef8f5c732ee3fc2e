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

  PYTHONPATH=$PWD python bench/kafka_handoff.py --items 20000 --batch 64
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import postgres
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000, help="items per back end")
    parser.add_argument("--batch", type=int, default=64, help="items per hand-off (64)")
    parser.add_argument("--threads", type=int, default=2, help="concurrent hand-offs (2)")
    parser.add_argument("--projects", type=int, default=50, help="projects (keys) (50)")
    parser.add_argument("--partitions", type=int, default=12, help="partitions (12)")
    parser.add_argument("--no-postgres", action="store_true", help="Kafka only")
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
    for name in ("kafka", "postgres"):
        if name in figures:
            f = figures[name]
            print(f"{name:9} {f['items_per_s']:>8} items/s  p50 {f['handoff_p50_ms']:>7} ms"
                  f"  p99 {f['handoff_p99_ms']:>7} ms  per hand-off of {args.batch}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
