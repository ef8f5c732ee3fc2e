"""The durable hand-off between ingest and the consumers: the PostgreSQL queue.

Ingest appends accepted items with one COPY per ``@serve.batch`` batch and answers the SDK
only after the commit. Consumers claim batches with ``FOR UPDATE SKIP LOCKED`` and a lease
(``claimed_until``): a consumer that dies simply lets its lease run out and another one
claims the rows again (at-least-once). Rows are deleted in the same transaction that
counts the events into their issues, after the ClickHouse insert succeeded.

The Kafka hand-off (a later issue) implements the same ``HandoffQueue`` protocol.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import psycopg

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


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    attempts: int
    item: QueuedItem


class HandoffQueue(Protocol):
    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        """Append ``items``; returns only once they are durable."""

    def backlog_upper_bound(self) -> int:
        """An upper bound of the items accepted but not yet processed (cheap to ask)."""


_COLUMNS = ("project_id", "organization_id", "key_id", "item_type", "event_id",
            "received_at", "meta", "payload")


class PostgresQueue:
    """``HandoffQueue`` over the ``ingest_queue`` table; one connection per instance.

    Callers may use it from several threads (ingest runs it via ``asyncio.to_thread``): a
    lock keeps each transaction whole, because psycopg would otherwise turn a second
    thread's ``transaction()`` into a savepoint inside the first one's."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url)
        return self._conn

    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        if not items:
            return
        with self._lock:
            self._enqueue_locked(items)

    def _enqueue_locked(self, items: Sequence[QueuedItem]) -> None:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY ingest_queue ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                    for it in items:
                        copy.write_row((it.project_id, it.organization_id, it.key_id,
                                        it.item_type, it.event_id, it.received_at,
                                        orjson.dumps(it.meta).decode(), it.payload))
                cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        except psycopg.OperationalError:
            # A broken connection is dropped so the next batch reconnects; the error still
            # reaches the caller, whose SDKs get a 503 and nothing is acknowledged.
            conn.close()
            raise

    def backlog_upper_bound(self) -> int:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT coalesce(max(id) - min(id) + 1, 0) FROM ingest_queue").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


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


def delete(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    """Remove finished items (call inside the caller's transaction)."""
    if ids:
        conn.execute("DELETE FROM ingest_queue WHERE id = ANY(%s)", (list(ids),))


def dead_letter(conn: psycopg.Connection[Any], claimed: ClaimedItem, error: str) -> None:
    """Move an item that keeps failing out of the queue, keeping all of it."""
    conn.execute(
        "WITH moved AS (DELETE FROM ingest_queue WHERE id = %s RETURNING *)"
        " INSERT INTO ingest_dead_letters (id, project_id, organization_id, item_type,"
        " event_id, received_at, meta, payload, attempts, error)"
        " SELECT id, project_id, organization_id, item_type, event_id, received_at, meta,"
        " payload, attempts, %s FROM moved",
        (claimed.id, error),
    )
