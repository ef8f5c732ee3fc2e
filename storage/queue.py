"""The durable hand-off between ingest and the consumers: the PostgreSQL queue.

Ingest appends accepted items with one COPY per ``@serve.batch`` batch and answers the SDK
only after the commit. Consumers claim batches with ``FOR UPDATE SKIP LOCKED`` and a lease
(``claimed_until``): a consumer that dies simply lets its lease run out and another one
claims the rows again (at-least-once). Rows are deleted in the same transaction that
counts the events into their issues, after the ClickHouse insert succeeded.

What each organization has queued (items, payload bytes) is kept beside the queue in
``ingest_queue_usage`` by the table's own triggers (migration 0012), exact at every commit
and cheap to read: ingest's per-organization backlog caps ask for it once a second.

Ingest reaches it through ``storage.handoff.Handoff``, which the Kafka hand-off
(storage/kafka.py) implements too.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from events.errors import BadRequest

#: PostgreSQL NOTIFY channel that wakes idle consumers as soon as items arrive.
NOTIFY_CHANNEL = "crashray_ingest"


@dataclass(frozen=True)
class QueuedItem:
    """One accepted envelope item, with what ingest knew about it."""

    project_id: int
    organization_id: int
    key_id: int | None
    item_type: str
    event_id: str | None
    received_at: dt.datetime
    payload: bytes
    #: Envelope context processing needs: client_ip, sent_at, sdk, user_agent, headers.
    meta: dict[str, Any] = field(default_factory=dict)


class UnqueueableData(BadRequest):
    """PostgreSQL or the JSON encoder refused the items' data (not the connection): the
    COPY is rolled back, and the same items would fail again (serve_apps/ingest_handoff.py
    finds the request they came from)."""

    code = "unqueueable_data"


@dataclass(frozen=True)
class OrganizationBacklog:
    """What one organization has in the queue: items accepted and not yet processed, and
    the bytes of their payloads."""

    items: int
    bytes: int


class AttemptAbandoned(Exception):
    """Its caller stopped waiting for the attempt before it had sent anything: it is rolled
    back, and the items are someone else's to store (storage/spool.py)."""


class Attempt:
    """One transaction that appends items, as the caller waiting for it can follow it from
    another thread. Before any item is sent the transaction reports its id and server
    process (``started``); a caller that stopped waiting (``abandon``) learns them, or, when
    they were not reported yet, that the transaction will send nothing (``started`` then
    raises ``AttemptAbandoned``)."""

    def __init__(self, on_start: Callable[[int, int], object] | None = None) -> None:
        #: Called with the ids before any item is sent (the spool's drainer records them).
        self._on_start = on_start
        self._lock = threading.Lock()
        self._ids: tuple[int, int] | None = None
        self._abandoned = False

    def started(self, xid: int, backend_pid: int) -> None:
        with self._lock:
            if self._abandoned:
                raise AttemptAbandoned("the caller stopped waiting before any item was sent")
            if self._on_start is not None:
                self._on_start(xid, backend_pid)
            self._ids = (xid, backend_pid)

    def abandon(self) -> tuple[int, int] | None:
        """Stop following: the transaction's (id, server process) if it may send items,
        None if it never will."""
        with self._lock:
            self._abandoned = True
            return self._ids


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    attempts: int
    item: QueuedItem


#: libpq's TCP keepalive parameters for the hand-off's connections.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10,
                              "keepalives_interval": 5, "keepalives_count": 3}

#: What PostgreSQL or the encoder raise for data the queue cannot store.
_REFUSALS = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, orjson.JSONEncodeError)

_COLUMNS = ("project_id", "organization_id", "key_id", "item_type", "event_id",
            "received_at", "meta", "payload")


class PostgresQueue:
    """``storage.handoff.Handoff`` over the ``ingest_queue`` table; one connection per instance.

    Callers may use it from several threads (ingest runs it via ``asyncio.to_thread``): a
    lock keeps each transaction whole, because psycopg would otherwise turn a second
    thread's ``transaction()`` into a savepoint inside the first one's."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # TCP keepalives end a connection whose peer vanished (a host gone, a network
            # cut) within about half a minute, rather than never; a server that is merely
            # frozen still answers them from its kernel, so its transactions stay open.
            self._conn = psycopg.connect(self._url, **KEEPALIVES)
        return self._conn

    def enqueue(self, items: Sequence[QueuedItem], attempt: Attempt | None = None) -> None:
        """Append ``items`` in one transaction. ``attempt``, when given, learns the
        transaction's id and server process before any item is sent, so whoever gave up
        waiting can later ask whether it committed (storage/spool.py)."""
        if not items:
            return
        with self._lock:
            self._enqueue_locked(items, attempt)

    def _enqueue_locked(self, items: Sequence[QueuedItem], attempt: Attempt | None) -> None:
        try:
            with self._appending() as cur:
                _start(cur, attempt)
                _copy(cur, items)
        except _REFUSALS as exc:
            raise UnqueueableData("the queue cannot store these items",
                                  [f"{type(exc).__name__}: {exc}"]) from exc

    def enqueue_separately(self, items: Sequence[QueuedItem], attempt: Attempt,
                           set_aside: Callable[[list[tuple[QueuedItem, str]]], object]
                           ) -> None:
        """Append ``items`` one by one in one transaction, leaving out those the queue
        refuses for their data: ``set_aside`` gets them, with the reason, before the
        commit (the spool's drainer, for a batch answered 200 that holds such an item)."""
        with self._lock, self._appending() as cur:
            _start(cur, attempt)
            refused = []
            for it in items:
                try:
                    with cur.connection.transaction():
                        _copy(cur, [it])
                except _REFUSALS as exc:
                    refused.append((it, f"{type(exc).__name__}: {exc}"))
            if refused:
                set_aside(refused)

    @contextmanager
    def _appending(self) -> Iterator[psycopg.Cursor[Any]]:
        """A transaction that appends to the queue and wakes the consumers when it commits
        (call holding the lock)."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
                cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        except psycopg.OperationalError:
            # A broken connection is dropped so the next batch reconnects; the error still
            # reaches the caller, whose SDKs get a 503 and nothing is acknowledged.
            conn.close()
            raise

    def transaction_statuses(self, xids: Sequence[int]) -> dict[int, str | None]:
        """``txid_status`` of each id: 'committed', 'aborted', 'in progress', or None when
        the server does not know it (too old, or from the future: another server)."""
        found: dict[int, str | None] = {}
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                for xid in xids:
                    try:
                        with conn.transaction():
                            row = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
                        found[xid] = row[0] if row else None
                    except psycopg.errors.InvalidParameterValue:
                        found[xid] = None
        return found

    def end_transaction(self, xid: int, backend_pid: int) -> bool:
        """Terminate the server process still running transaction ``xid`` (it aborts
        unless it had committed); whether one was."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE pid = %s AND backend_xid::text = %s",
                    (backend_pid, str(xid % 2**32))).fetchone()
        return bool(row and row[0])

    def backlog_upper_bound(self) -> int:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT coalesce(max(id) - min(id) + 1, 0) FROM ingest_queue").fetchone()
        return int(row[0]) if row else 0

    def queued_per_organization(self) -> dict[int, OrganizationBacklog]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                return queued_per_organization(conn)

    def close(self, wait_s: float = 5.0) -> None:
        """Close the connection once no thread uses it; left to the thread still using it
        (one stuck in a server that hangs) after ``wait_s``."""
        if not self._lock.acquire(timeout=wait_s):
            return
        try:
            if self._conn is not None:
                self._conn.close()
        finally:
            self._lock.release()


def _start(cur: psycopg.Cursor[Any], attempt: Attempt | None) -> None:
    """Tell ``attempt`` the transaction's id and server process before anything is sent."""
    if attempt is not None:
        row = cur.execute("SELECT txid_current(), pg_backend_pid()").fetchone()
        assert row is not None
        attempt.started(int(row[0]), int(row[1]))


def _copy(cur: psycopg.Cursor[Any], items: Sequence[QueuedItem]) -> None:
    with cur.copy(f"COPY ingest_queue ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for it in items:
            copy.write_row((it.project_id, it.organization_id, it.key_id, it.item_type,
                            it.event_id, it.received_at, orjson.dumps(it.meta).decode(),
                            it.payload))


def queue_lag(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What waits in the queue, for operators: items, bytes, and the age in seconds of the
    oldest item (0 when empty). One scan; not for per-request paths."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(octet_length(payload)), 0),"
        " coalesce(extract(epoch FROM now() - min(received_at)), 0),"
        " count(*) FILTER (WHERE claimed_until > now())"
        " FROM ingest_queue").fetchone()
    items, size, age, claimed = row if row else (0, 0, 0, 0)
    return {"items": int(items), "bytes": int(size), "oldest_age_s": float(age),
            "claimed": int(claimed)}


#: Arbitrary constant for pg_try_advisory_xact_lock: one folder of ``ingest_queue_usage`` at
#: a time (others only read; a second folder would wait for the first one's rows).
_USAGE_FOLD_LOCK_ID = 0x63727175  # "crqu"


def queued_per_organization(conn: psycopg.Connection[Any]) -> dict[int, OrganizationBacklog]:
    """Items and payload bytes queued per organization, from ``ingest_queue_usage`` (the
    changes the queue's triggers record; migration 0012), as of now. Organizations with
    nothing queued are left out. First folds the recorded changes into one row per
    organization, unless another caller is folding right now (then it only reads): that
    keeps the table at about one row per organization and per statement since the last
    fold. Call inside the caller's transaction."""
    locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                          (_USAGE_FOLD_LOCK_ID,)).fetchone()
    if locked and locked[0]:
        # Rows other transactions add meanwhile are not seen, so not deleted: they stay.
        conn.execute(
            "WITH folded AS (DELETE FROM ingest_queue_usage RETURNING *)"
            " INSERT INTO ingest_queue_usage (organization_id, items, bytes)"
            " SELECT organization_id, sum(items), sum(bytes) FROM folded"
            " GROUP BY organization_id HAVING sum(items) <> 0 OR sum(bytes) <> 0")
    rows = conn.execute(
        "SELECT organization_id, sum(items), sum(bytes) FROM ingest_queue_usage"
        " GROUP BY organization_id HAVING sum(items) > 0").fetchall()
    return {int(r[0]): OrganizationBacklog(int(r[1]), int(r[2])) for r in rows}


def listen(url: str) -> psycopg.Connection[Any]:
    """A connection that receives a notification whenever items are queued (wait on it
    with ``conn.notifies(timeout=…)``)."""
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return listener


def claim(conn: psycopg.Connection[Any], max_items: int, lease_s: float) -> list[ClaimedItem]:
    """Claim up to ``max_items`` unclaimed (or lease-expired) items, oldest first.

    Commits the claim at once so the lease is visible to other consumers."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE ingest_queue q SET claimed_until = now() + make_interval(secs => %s),"
            " attempts = q.attempts + 1"
            " FROM (SELECT id FROM ingest_queue"
            "       WHERE claimed_until IS NULL OR claimed_until < now()"
            "       ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) c"
            " WHERE q.id = c.id RETURNING q.id, q.attempts, "
            + ", ".join(f"q.{c}" for c in _COLUMNS),
            (lease_s, max_items),
        ).fetchall()
    rows.sort(key=lambda r: r[0])
    return [ClaimedItem(int(r[0]), int(r[1]), _queued_item(r[2:])) for r in rows]


def _queued_item(r: Sequence[Any]) -> QueuedItem:
    meta = r[6] if isinstance(r[6], dict) else orjson.loads(r[6])
    return QueuedItem(project_id=int(r[0]), organization_id=int(r[1]),
                      key_id=None if r[2] is None else int(r[2]), item_type=str(r[3]),
                      event_id=r[4], received_at=r[5], meta=meta, payload=bytes(r[7]))


def delete(conn: psycopg.Connection[Any], ids: Sequence[int]) -> set[int]:
    """Remove finished items (call inside the caller's transaction); returns the ids this
    transaction removed. An item another consumer finished first (its lease had run out)
    is not among them: the caller must then neither store nor count it again. The rows
    stay locked until the caller commits, so a second holder waits and then finds none."""
    if not ids:
        return set()
    rows = conn.execute("DELETE FROM ingest_queue WHERE id = ANY(%s) RETURNING id",
                        (sorted(ids),)).fetchall()
    return {int(r[0]) for r in rows}


def release(conn: psycopg.Connection[Any], claims: Sequence[tuple[int, int]]) -> int:
    """Give claimed items back unfinished and uncounted: ``claims`` are (id, attempts) as
    claimed, so an item re-claimed by another consumer since is left alone. For a batch
    that failed because storage was down, not because of its items: the claim does not
    count towards ``consumer_max_attempts``. Returns the items released; committed at once."""
    if not claims:
        return 0
    with conn.transaction():
        cur = conn.execute(
            "UPDATE ingest_queue q SET claimed_until = NULL, attempts = q.attempts - 1"
            " FROM unnest(%s::bigint[], %s::integer[]) AS c(id, attempts)"
            " WHERE q.id = c.id AND q.attempts = c.attempts",
            ([c[0] for c in claims], [c[1] for c in claims]))
    return cur.rowcount


@dataclass(frozen=True)
class Backlog:
    """What waits for a consumer: items not claimed, or whose lease ran out."""

    #: How many, counted up to the caller's cap (``count_cap`` means at least that many).
    waiting_items: int
    #: Seconds the first waiting item in queue order has waited since ingest received it
    #: (PostgreSQL's clock against ingest's ``received_at``); 0 when none waits.
    oldest_age_s: float


def waiting_backlog(conn: psycopg.Connection[Any], count_cap: int) -> Backlog:
    """The pool autoscaler's measure of the queue, cheap at any size: the count stops at
    ``count_cap`` (a scan of at most that many rows: 14-26 ms for 100,000 of a million
    queued where counting them all takes 70-83 ms; ~1 ms with 5,000 waiting:
    ``bench/queue_lag.py``) and the oldest is the first waiting id (the primary key's
    order). No index beyond the primary key is needed. Items replayed from the dead letters get new
    ids but keep their ``received_at``: when one comes first it reads as old."""
    with conn.transaction():
        row = conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM ingest_queue"
            "         WHERE claimed_until IS NULL OR claimed_until < now() LIMIT %s) w),"
            " (SELECT extract(epoch FROM now() - received_at) FROM ingest_queue"
            "  WHERE claimed_until IS NULL OR claimed_until < now() ORDER BY id LIMIT 1)",
            (count_cap,)).fetchone()
    if row is None:
        return Backlog(0, 0.0)
    return Backlog(int(row[0]), max(float(row[1] or 0.0), 0.0))


# --- dead letters ------------------------------------------------------------------------
# Items that fail on their own (poison): kept whole in ``ingest_dead_letters`` until an
# operator replays them (back into the queue as if never claimed) or drops them
# (``crashray dead-letters``). Storage outages never put items here: consumers give their
# batch back and back off (actors/consumer.py).


def dead_letter(conn: psycopg.Connection[Any], claimed: ClaimedItem, error: str) -> bool:
    """Move an item that fails on its own out of the queue, keeping all of it (call inside
    the caller's transaction); False when the item was no longer queued (another consumer
    finished it first)."""
    cur = conn.execute(
        "WITH moved AS (DELETE FROM ingest_queue WHERE id = %s RETURNING *)"
        " INSERT INTO ingest_dead_letters (id, project_id, organization_id, key_id,"
        " item_type, event_id, received_at, meta, payload, attempts, error)"
        " SELECT id, project_id, organization_id, key_id, item_type, event_id, received_at,"
        " meta, payload, attempts, %s FROM moved",
        (claimed.id, error),
    )
    return cur.rowcount == 1


@dataclass(frozen=True)
class DeadLetter:
    id: int
    organization_id: int
    project_id: int
    #: The project's slug; None when the project was deleted since.
    project_slug: str | None
    item_type: str
    event_id: str | None
    received_at: dt.datetime
    attempts: int
    error: str
    failed_at: dt.datetime
    payload_bytes: int


def dead_letters(conn: psycopg.Connection[Any], organization_id: int | None, limit: int,
                 ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Dead letters, newest first: of one organization, or of the whole instance (None,
    for the instance's operator); only ``ids`` when given."""
    where, params = _dead_letter_scope(organization_id, ids)
    rows = conn.execute(
        "SELECT d.id, d.organization_id, d.project_id, p.slug, d.item_type, d.event_id,"
        " d.received_at, d.attempts, d.error, d.failed_at, octet_length(d.payload)"
        " FROM ingest_dead_letters d LEFT JOIN projects p ON p.id = d.project_id"
        f" AND p.organization_id = d.organization_id WHERE {where}"
        " ORDER BY d.id DESC LIMIT %(limit)s", {**params, "limit": limit}).fetchall()
    return [DeadLetter(int(r[0]), int(r[1]), int(r[2]), r[3], str(r[4]), r[5], r[6],
                       int(r[7]), str(r[8]), r[9], int(r[10])) for r in rows]


@dataclass(frozen=True)
class DeadLetterCount:
    project_id: int
    project_slug: str | None
    item_type: str
    count: int
    oldest_failed_at: dt.datetime
    newest_failed_at: dt.datetime
    #: The error of the newest one (what an operator looks at first).
    latest_error: str


def dead_letter_counts(conn: psycopg.Connection[Any], organization_id: int,
                       project_ids: Sequence[int]) -> list[DeadLetterCount]:
    """Dead letters of ``organization_id`` per project and type: of ``project_ids`` (those
    the caller sees) and of the organization's projects deleted since (their items were
    accepted for the organization; a deleted project is a common cause)."""
    rows = conn.execute(
        "SELECT d.project_id, p.slug, d.item_type, count(*), min(d.failed_at),"
        " max(d.failed_at), (array_agg(d.error ORDER BY d.id DESC))[1]"
        " FROM ingest_dead_letters d LEFT JOIN projects p ON p.id = d.project_id"
        " AND p.organization_id = d.organization_id"
        " WHERE d.organization_id = %s AND (d.project_id = ANY(%s) OR p.id IS NULL)"
        " GROUP BY d.project_id, p.slug, d.item_type ORDER BY d.project_id, d.item_type",
        (organization_id, list(project_ids))).fetchall()
    return [DeadLetterCount(int(r[0]), r[1], str(r[2]), int(r[3]), r[4], r[5], str(r[6]))
            for r in rows]


def replay_dead_letters(conn: psycopg.Connection[Any], organization_id: int | None,
                        ids: Sequence[int] | None) -> list[int]:
    """Put dead letters back into the queue (of one organization, or of the instance for
    None; only ``ids`` when given, else all), unclaimed and with no attempts; wakes the
    consumers. Call inside the caller's transaction; returns the dead letters' ids.

    They get new queue ids: an old, low id would stretch ``backlog_upper_bound`` (max id
    minus min id) over everything queued since and make ingest refuse items. Their events
    keep their ids, so one stored by an earlier attempt is not stored or counted twice."""
    where, params = _dead_letter_scope(organization_id, ids)
    rows = conn.execute(
        f"WITH moved AS (DELETE FROM ingest_dead_letters d WHERE {where} RETURNING d.*),"
        " queued AS (INSERT INTO ingest_queue (project_id, organization_id, key_id,"
        " item_type, event_id, received_at, meta, payload)"
        " SELECT project_id, organization_id, key_id, item_type, event_id, received_at,"
        " meta, payload FROM moved ORDER BY id)"
        " SELECT id FROM moved", params).fetchall()
    if rows:
        conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return sorted(int(r[0]) for r in rows)


def drop_dead_letters(conn: psycopg.Connection[Any], organization_id: int | None,
                      ids: Sequence[int] | None) -> list[int]:
    """Delete dead letters for good (scoped as ``replay_dead_letters``); returns the ids."""
    where, params = _dead_letter_scope(organization_id, ids)
    rows = conn.execute(f"DELETE FROM ingest_dead_letters d WHERE {where} RETURNING d.id",
                        params).fetchall()
    return sorted(int(r[0]) for r in rows)


def _dead_letter_scope(organization_id: int | None, ids: Sequence[int] | None
                       ) -> tuple[str, dict[str, Any]]:
    conditions = ["TRUE"]
    params: dict[str, Any] = {}
    if organization_id is not None:
        conditions.append("d.organization_id = %(org)s")
        params["org"] = organization_id
    if ids is not None:
        conditions.append("d.id = ANY(%(ids)s)")
        params["ids"] = list(ids)
    return " AND ".join(conditions), params
