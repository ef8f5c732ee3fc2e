"""The hand-off's time limit and spool (storage/spool.py) against the real PostgreSQL server
(no Ray needed).

A queue that hangs is made here the way a real one can: another session holds the queue
table's ``ACCESS EXCLUSIVE`` lock, so ingest's COPY waits without an answer, as it waits on
a frozen server (the e2e fault test, tests/e2e/test_faults.py, freezes the whole server
with SIGSTOP)."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from events.errors import Overloaded
from storage import postgres
from storage.queue import Attempt, PostgresQueue, QueuedItem
from storage.spool import IN_PROGRESS_GRACE_S, BoundedQueue, Drainer, Spool, SpoolSettings
from tests.support import scratch_database, wait_until

TIMEOUT_S = 0.5
#: Generous bounds for a loaded 2-core CI machine; the behaviour, not the speed, is tested.
ANSWERED_WITHIN_S = TIMEOUT_S + 1.5
DRAINED_WITHIN_S = 20.0


@pytest.fixture
def queue_url() -> Iterator[str]:
    with scratch_database("crashray_spool") as url:
        postgres.migrate(url)
        yield url


def items(n: int) -> list[QueuedItem]:
    return [QueuedItem(1, 1, 1, "session", None, dt.datetime.now(dt.UTC),
                       b'{"sid": "%s"}' % uuid.uuid4().hex.encode(), {}) for _ in range(n)]


def settings(directory: Path, max_bytes: int = 10 * 1024 * 1024) -> SpoolSettings:
    return SpoolSettings(directory, TIMEOUT_S, max_bytes, drain_interval_s=0.1)


def stored_payloads(url: str) -> list[bytes]:
    with psycopg.connect(url) as conn:
        return [bytes(r[0]) for r in conn.execute("SELECT payload FROM ingest_queue")]


def enqueue_timed(queue: BoundedQueue, batch: list[QueuedItem]) -> float:
    started = time.monotonic()
    queue.enqueue(batch)
    return time.monotonic() - started


def wait_until_drained(queue: BoundedQueue, directory: Path) -> None:
    wait_until(lambda: not Spool(directory).batch_names() and not queue.spooling,
               DRAINED_WITHIN_S, f"the spool in {directory} to be drained")


class HeldQueue:
    """Another session holding the queue table's lock: ingest's COPY waits unanswered."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("LOCK TABLE ingest_queue IN ACCESS EXCLUSIVE MODE")

    def end_waiting_copies(self) -> int:
        """Terminate the sessions whose COPY waits for the lock (their transaction aborts)."""
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'COPY ingest_queue%%'"
            " AND wait_event_type = 'Lock'").fetchone()
        return int(row[0]) if row else 0

    def release(self) -> None:
        self.conn.commit()
        self.conn.close()


@pytest.mark.parametrize("held_transaction", ["commits", "is ended"])
def test_a_queue_that_does_not_answer_is_answered_from_the_spool_and_each_item_kept_once(
        queue_url: str, tmp_path: Path, held_transaction: str) -> None:
    """The first batch waits the time limit, then is spooled and answered; later batches
    are spooled at once. Whether the transaction ingest gave up on commits when the queue
    answers again, or is ended, every item is in the queue exactly once afterwards, and
    batches go to the queue directly again."""
    queue = BoundedQueue(queue_url, settings(tmp_path))
    try:
        queue.enqueue(items(2))  # the connection is open before the queue stops answering
        held = HeldQueue(queue_url)
        first, second, third = items(3), items(4), items(5)
        assert enqueue_timed(queue, first) < ANSWERED_WITHIN_S
        # At once: less than the time limit (spooling costs two fsyncs).
        assert enqueue_timed(queue, second) < TIMEOUT_S
        assert enqueue_timed(queue, third) < TIMEOUT_S
        assert len(Spool(tmp_path).batch_names()) == 3
        started = time.monotonic()
        assert queue.backlog_upper_bound() >= 12, "spooled items count in the backlog"
        assert time.monotonic() - started < ANSWERED_WITHIN_S
        if held_transaction == "is ended":
            assert held.end_waiting_copies() >= 1
        held.release()
        wait_until_drained(queue, tmp_path)
        after = items(6)
        queue.enqueue(after)
        assert not Spool(tmp_path).batch_names(), "the queue takes batches directly again"
        payloads = stored_payloads(queue_url)
        expected = [i.payload for i in first + second + third + after]
        assert sorted(p for p in payloads if p in set(expected)) == sorted(expected)
        assert len(payloads) == 2 + len(expected)
    finally:
        queue.close()


def test_a_drain_that_committed_before_its_replica_died_is_not_appended_again(
        queue_url: str, tmp_path: Path) -> None:
    """A replica died after its drain transaction committed but before it removed the
    batch: the attempt file's transaction id says the batch is stored."""
    spool = Spool(tmp_path)
    batch = items(3)
    spool.write(batch, None)
    (name,) = spool.batch_names()
    writer = PostgresQueue(queue_url)
    writer.enqueue(spool.read(name).items,
                   Attempt(lambda xid, pid: spool.record_attempt([name], xid, pid)))
    writer.close()
    queue = BoundedQueue(queue_url, settings(tmp_path))
    try:
        wait_until_drained(queue, tmp_path)
    finally:
        queue.close()
    assert sorted(stored_payloads(queue_url)) == sorted(i.payload for i in batch)
    assert os.listdir(tmp_path) == ["drain.lock"]


def test_a_full_spool_refuses_with_503_naming_the_setting(
        queue_url: str, tmp_path: Path) -> None:
    queue = BoundedQueue(queue_url, settings(tmp_path, max_bytes=1))
    try:
        queue.enqueue(items(1))
        held = HeldQueue(queue_url)
        try:
            queue.enqueue(items(1))  # spooled: the spool was empty
            with pytest.raises(Overloaded) as refused:
                queue.enqueue(items(1))
            assert refused.value.status == 503 and refused.value.retry_after_s > 0
            assert "CRASHRAY_SPOOL_MAX_BYTES" in " ".join(refused.value.causes)
        finally:
            held.release()
        wait_until_drained(queue, tmp_path)
    finally:
        queue.close()
    assert len(stored_payloads(queue_url)) == 2


def test_a_spooled_batch_the_queue_refuses_is_set_aside_whole_and_the_rest_stored(
        queue_url: str, tmp_path: Path) -> None:
    """A NUL character in a header value is text PostgreSQL cannot store (the door check
    refuses it before a 200; this is the defence behind it)."""
    spool = Spool(tmp_path)
    good_before, good_beside, good_after = items(2), items(2), items(3)
    bad = QueuedItem(1, 1, 1, "event", None, dt.datetime.now(dt.UTC), b"{}",
                     {"user_agent": "nul \u0000 here"})
    spool.write(good_before, None)
    spool.write([good_beside[0], bad, good_beside[1]], None)  # one request's among others
    spool.write(good_after, None)
    bad_name = spool.batch_names()[1]
    queue = BoundedQueue(queue_url, settings(tmp_path))
    try:
        wait_until_drained(queue, tmp_path)
    finally:
        queue.close()
    assert sorted(stored_payloads(queue_url)) == sorted(
        i.payload for i in good_before + good_beside + good_after)
    refused = tmp_path / "refused"
    assert Spool(refused).read(bad_name).items == [bad]
    assert "item 0: UntranslatableCharacter" in (refused / f"{bad_name}.reason").read_text()


def test_a_transaction_still_open_past_the_grace_is_ended_and_its_batch_appended(
        queue_url: str, tmp_path: Path) -> None:
    """A batch spooled while the transaction ingest gave up on stays open (its client gone
    quiet): the drainer waits for it, then past ``IN_PROGRESS_GRACE_S`` (an injected clock)
    terminates its server process, and appends the batch once it is aborted."""
    orphan = psycopg.connect(queue_url)
    row = orphan.execute("SELECT txid_current(), pg_backend_pid()").fetchone()
    assert row is not None
    orphan.execute("INSERT INTO ingest_queue (project_id, organization_id, item_type,"
                   " received_at, meta, payload) VALUES (1, 1, 'session', now(), '{}', 'x')")
    spool = Spool(tmp_path)
    batch = items(3)
    spool.write(batch, (int(row[0]), int(row[1])))
    now = [0.0]
    drainer = Drainer(spool, PostgresQueue(queue_url), batch_files=64, clock=lambda: now[0])
    assert drainer.drain_round() == 0, "in progress: wait"
    now[0] += IN_PROGRESS_GRACE_S / 2
    assert drainer.drain_round() == 0, "still within the grace"
    now[0] += IN_PROGRESS_GRACE_S
    assert drainer.drain_round() == 0, "ended now, settled the next round"
    assert drainer.drain_round() == 1
    assert sorted(stored_payloads(queue_url)) == sorted(i.payload for i in batch)
    assert spool.batch_names() == []
    with pytest.raises(psycopg.OperationalError):
        orphan.execute("SELECT 1")
    orphan.close()
