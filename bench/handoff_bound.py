"""What ingest's hand-off time limit costs, and what it gives (storage/spool.py).

On a scratch database of the machine's PostgreSQL (real migrations, the Python SDK corpus
event as payload, 5.5 KB):

  cost   one hand-off COPY of --batch items, ``PostgresQueue.enqueue`` (no limit) against
         ``BoundedQueue.enqueue`` (the writer thread, the transaction id asked before the
         COPY), alternating, --rounds each: p50 and p99 in ms.
  gain   the queue made to hang (another session holds the table's ACCESS EXCLUSIVE lock,
         as a frozen server would leave ingest's COPY unanswered) for --hang-s seconds while
         one sender hands off a batch every 20 ms: the slowest answer, the answers during
         the hang, how long the spool took to drain after, and whether every item was
         stored exactly once.

  python bench/handoff_bound.py --batch 20 --rounds 300 --hang-s 5

(From a worktree, put it first: ``PYTHONPATH=$PWD python bench/handoff_bound.py``.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._load import load_template
from bench._measure import percentile
from storage import postgres
from storage.queue import PostgresQueue, QueuedItem
from storage.spool import BoundedQueue, Spool, SpoolSettings
from tests.support import scratch_database

TIMEOUT_S = 2.0
SEND_EVERY_S = 0.02


def batch(payload: bytes, size: int) -> list[QueuedItem]:
    return [QueuedItem(1, 1, 1, "event", uuid.uuid4().hex, dt.datetime.now(dt.UTC), payload,
                       {"client_ip": "127.0.0.1"}) for _ in range(size)]


def cost(url: str, spool_dir: Path, payload: bytes, size: int, rounds: int
         ) -> dict[str, list[float]]:
    plain = PostgresQueue(url)
    bounded = BoundedQueue(url, SpoolSettings(spool_dir, TIMEOUT_S, 1 << 30))
    times: dict[str, list[float]] = {"PostgresQueue": [], "BoundedQueue": []}
    for _ in range(rounds):
        for name, queue in (("PostgresQueue", plain), ("BoundedQueue", bounded)):
            items = batch(payload, size)
            started = time.perf_counter()
            queue.enqueue(items)
            times[name].append((time.perf_counter() - started) * 1000)
    plain.close()
    bounded.close()
    return times


def gain(url: str, spool_dir: Path, payload: bytes, size: int, hang_s: float
         ) -> dict[str, float | int | bool]:
    queue = BoundedQueue(url, SpoolSettings(spool_dir, TIMEOUT_S, 1 << 30,
                                            drain_interval_s=0.1))
    sent: list[bytes] = []
    answers: list[tuple[float, float]] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            items = batch(payload, size)
            started = time.monotonic()
            queue.enqueue(items)
            answers.append((started, time.monotonic()))
            sent.extend(i.event_id.encode() for i in items if i.event_id)
            time.sleep(SEND_EVERY_S)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    held = psycopg.connect(url)
    held.execute("LOCK TABLE ingest_queue IN ACCESS EXCLUSIVE MODE")
    hung_from = time.monotonic()
    time.sleep(hang_s)
    held.commit()
    held.close()
    thawed = time.monotonic()
    time.sleep(0.5)
    stop.set()
    sender.join()
    while Spool(spool_dir).batch_names() or queue.spooling:
        time.sleep(0.05)
    drained_s = time.monotonic() - thawed
    queue.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT event_id FROM ingest_queue").fetchall()
    stored = [r[0].encode() for r in rows if r[0]]
    during = [(s, e) for s, e in answers if s <= thawed and e >= hung_from]
    return {"answers": len(answers), "answers_during_hang": len(during),
            "slowest_answer_s": round(max(e - s for s, e in answers), 3),
            "drained_after_thaw_s": round(drained_s, 2),
            "items_sent": len(sent),
            "stored_exactly_once": sorted(stored) == sorted(sent)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--hang-s", type=float, default=5.0)
    args = parser.parse_args()
    payload = orjson.dumps(load_template().event)
    with scratch_database("crashray_bench_handoff") as url, \
            tempfile.TemporaryDirectory() as spool_dir:
        postgres.migrate(url)
        times = cost(url, Path(spool_dir) / "cost", payload, args.batch, args.rounds)
        print(f"hand-off of {args.batch} items, {args.rounds} rounds alternating")
        print(f"{'':16}{'p50 ms':>10}{'p99 ms':>10}")
        for name, values in times.items():
            print(f"{name:16}{percentile(values, 50):10.2f}{percentile(values, 99):10.2f}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE ingest_queue")
        found = gain(url, Path(spool_dir) / "gain", payload, args.batch, args.hang_s)
        print(f"queue hung {args.hang_s} s under a batch every {SEND_EVERY_S * 1000:.0f} ms:",
              found)
        print(json.dumps({"benchmark": "handoff_bound", "batch": args.batch,
                          **{f"{name}_p50_ms": round(percentile(v, 50), 3)
                             for name, v in times.items()},
                          **{f"{name}_p99_ms": round(percentile(v, 99), 3)
                             for name, v in times.items()}, **found}))


if __name__ == "__main__":
    main()
