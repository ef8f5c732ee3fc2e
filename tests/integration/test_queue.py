"""The PostgreSQL hand-off queue against the real server (no Ray needed)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from events.grouping import DEFAULT_GROUPING_CONFIG
from serve_apps.ingest_handoff import hand_off
from storage import postgres
from storage import queue as pg_queue
from storage.bootstrap import bootstrap
from storage.queue import PostgresQueue, QueuedItem, UnqueueableData
from tests.support import scratch_database


@pytest.fixture
def queue_url() -> Iterator[str]:
    with scratch_database("crashray_queue") as url:
        postgres.migrate(url)
        yield url


def item(n: int) -> QueuedItem:
    return QueuedItem(1, 1, 1, "event", uuid.uuid4().hex, dt.datetime.now(dt.UTC),
                      b'{"n": %d}' % n, {"client_ip": "127.0.0.1"})


def test_concurrent_enqueues_and_backlog_checks_keep_every_item(queue_url: str) -> None:
    """Ingest enqueues from worker threads while it also asks for the backlog; every
    acknowledged item must be in the table (a shared connection once lost them)."""
    queue = PostgresQueue(queue_url)
    stop = threading.Event()

    def check_backlog() -> None:
        while not stop.is_set():
            queue.backlog_upper_bound()

    def enqueue(worker: int) -> None:
        for batch in range(40):
            queue.enqueue([item(worker * 1000 + batch * 5 + i) for i in range(5)])

    checker = threading.Thread(target=check_backlog)
    checker.start()
    writers = [threading.Thread(target=enqueue, args=(w,)) for w in range(6)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    checker.join()
    with psycopg.connect(queue_url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM ingest_queue"
                           ).fetchone()
    assert row == (6 * 40 * 5, 6 * 40 * 5)
    assert queue.backlog_upper_bound() == 6 * 40 * 5


def test_claims_do_not_overlap_and_expired_leases_are_reclaimed(queue_url: str) -> None:
    PostgresQueue(queue_url).enqueue([item(n) for n in range(10)])
    with psycopg.connect(queue_url) as a, psycopg.connect(queue_url) as b:
        first = pg_queue.claim(a, 6, lease_s=0.2)
        second = pg_queue.claim(b, 6, lease_s=30)
        assert len(first) == 6 and len(second) == 4
        assert not {c.id for c in first} & {c.id for c in second}
        assert pg_queue.claim(b, 10, lease_s=30) == []
        threading.Event().wait(0.3)  # the first claimer "died": its lease runs out
        again = pg_queue.claim(b, 10, lease_s=30)
        assert sorted(c.id for c in again) == sorted(c.id for c in first)
        assert {c.attempts for c in again} == {2}


def test_counted_event_ids_are_forgotten_after_the_dedup_window(queue_url: str) -> None:
    from storage.issues import prune_processed_events

    with psycopg.connect(queue_url) as conn:
        conn.execute("INSERT INTO processed_events (project_id, event_id, processed_at)"
                     " SELECT 1, 'old' || n, now() - interval '2 days'"
                     " FROM generate_series(1, 25) n")
        conn.execute("INSERT INTO processed_events (project_id, event_id)"
                     " SELECT 1, 'new' || n FROM generate_series(1, 5) n")
        conn.commit()
        assert prune_processed_events(conn, 86_400, max_rows=10) == 10
        assert prune_processed_events(conn, 86_400, max_rows=100) == 15
        left = conn.execute("SELECT count(*) FROM processed_events").fetchone()
    assert left == (5,)


def test_concurrent_consumers_create_exactly_one_issue_for_a_new_hash(queue_url: str) -> None:
    """Many consumers see the first events of a new error at once (app and system hashes,
    some only the system one): exactly one issue, and every event joins it."""
    from storage.issues import IssueCandidate, issue_ids_for

    with psycopg.connect(queue_url) as conn:
        bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
    now = dt.datetime.now(dt.UTC)

    def candidate(hashes: tuple[str, ...]) -> IssueCandidate:
        return IssueCandidate(1, hashes, "v1", "RaceError: x", "", "error", "error", "python",
                              now, None)

    start = threading.Barrier(8)
    results: list[int | None] = []
    lock = threading.Lock()

    def consume(worker: int) -> None:
        hashes = ("a" * 32, "b" * 32) if worker % 2 else ("b" * 32,)
        with psycopg.connect(queue_url) as conn:
            start.wait()
            ids = issue_ids_for(conn, [candidate(hashes)])
            conn.commit()
        with lock:
            results.extend(ids)

    workers = [threading.Thread(target=consume, args=(w,)) for w in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with psycopg.connect(queue_url) as conn:
        issues = conn.execute("SELECT id FROM issues").fetchall()
        hashes = conn.execute("SELECT hash, issue_id FROM group_hashes ORDER BY hash").fetchall()
    assert len(issues) == 1
    assert set(results) == {issues[0][0]}
    assert hashes == [("a" * 32, issues[0][0]), ("b" * 32, issues[0][0])]


def test_the_queue_refuses_data_jsonb_cannot_hold_as_its_own_error(queue_url: str) -> None:
    queue = PostgresQueue(queue_url)
    for meta in ({"sent_at": "2026\x00"}, {"item_headers": {"x": 2**70}},
                 {"client": "\ud800"}):
        poisoned = QueuedItem(1, 1, 1, "event", None, dt.datetime.now(dt.UTC), b"{}", meta)
        with pytest.raises(UnqueueableData):
            queue.enqueue([item(1), poisoned])
    queue.enqueue([item(2)])  # the connection is still usable
    with psycopg.connect(queue_url) as conn:
        row = conn.execute("SELECT count(*) FROM ingest_queue").fetchone()
    assert row == (1,)


def test_a_hand_off_batch_with_a_poisoned_request_queues_all_the_others(queue_url: str) -> None:
    """The defence behind ingest's door check (serve_apps/ingest_handoff.py): requests of
    other organizations in the same COPY are queued; only the poisoned one fails."""
    queue = PostgresQueue(queue_url)
    now = dt.datetime.now(dt.UTC)
    groups = [[QueuedItem(org, org, org, "event", uuid.uuid4().hex, now, b"{}",
                          {"sent_at": "2026\x00" if org == 13 else None})
               for _ in range(3)] for org in range(1, 41)]
    results = hand_off(groups, queue.enqueue)
    assert [n + 1 for n, r in enumerate(results) if r is not None] == [13]
    assert isinstance(results[12], UnqueueableData)
    with psycopg.connect(queue_url) as conn:
        rows = conn.execute("SELECT organization_id, count(*) FROM ingest_queue"
                            " GROUP BY organization_id ORDER BY 1").fetchall()
    assert rows == [(org, 3) for org in range(1, 41) if org != 13]


def org_item(org: int, payload: bytes) -> QueuedItem:
    return QueuedItem(org * 10, org, org * 100, "event", uuid.uuid4().hex,
                      dt.datetime.now(dt.UTC), payload, {})


def test_each_organizations_queued_items_and_bytes_stay_exact_through_the_queue(
        queue_url: str) -> None:
    """What ingest's backlog caps read: every way items enter and leave the queue (the
    hand-off, a consumer finishing, dead letters and their replay, concurrent writers)
    keeps each organization's figures equal to a count of the queue, and apart."""
    queue = PostgresQueue(queue_url)
    queue.enqueue([org_item(1, b"x" * 100) for _ in range(30)]
                  + [org_item(2, b"y" * 7) for _ in range(4)])

    def figures() -> dict[int, tuple[int, int]]:
        return {org: (b.items, b.bytes) for org, b in queue.queued_per_organization().items()}

    assert figures() == {1: (30, 3000), 2: (4, 28)}
    with psycopg.connect(queue_url) as conn:
        claimed = pg_queue.claim(conn, 50, lease_s=30)
        assert figures() == {1: (30, 3000), 2: (4, 28)}  # claimed is still queued
        org1 = [c for c in claimed if c.item.organization_id == 1]
        with conn.transaction():
            pg_queue.delete(conn, [c.id for c in org1[:10]])
            pg_queue.dead_letter(conn, org1[10], "poison")
            # Not visible to others before the consumer commits.
            assert figures() == {1: (30, 3000), 2: (4, 28)}
        assert figures() == {1: (19, 1900), 2: (4, 28)}
        with conn.transaction():
            pg_queue.replay_dead_letters(conn, 1, None)
        assert figures() == {1: (20, 2000), 2: (4, 28)}
        with conn.transaction():
            pg_queue.delete(conn, [c.id for c in claimed if c.item.organization_id == 2])
    assert figures() == {1: (20, 2000)}  # an organization with nothing queued is left out

    def replica_hands_off(org: int) -> None:
        replica = PostgresQueue(queue_url)  # an ingest replica of its own
        for _ in range(20):
            replica.enqueue([org_item(org, b"z" * 10) for _ in range(5)])

    writers = [threading.Thread(target=replica_hands_off, args=(org,)) for org in (3, 3, 4)]
    readers_stop = threading.Event()

    def read_while_writing() -> None:
        reader = PostgresQueue(queue_url)  # folds concurrently with the other readers
        while not readers_stop.is_set():
            reader.queued_per_organization()

    readers = [threading.Thread(target=read_while_writing) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    readers_stop.set()
    for t in readers:
        t.join()
    final = figures()
    with psycopg.connect(queue_url) as conn:
        counted = {int(r[0]): (int(r[1]), int(r[2])) for r in conn.execute(
            "SELECT organization_id, count(*), sum(octet_length(payload)) FROM ingest_queue"
            " GROUP BY organization_id").fetchall()}
        folded_rows = conn.execute("SELECT count(*) FROM ingest_queue_usage").fetchone()
    assert final == counted == {1: (20, 2000), 3: (200, 2000), 4: (100, 1000)}
    assert folded_rows is not None and folded_rows[0] == 3  # folded: one per organization
