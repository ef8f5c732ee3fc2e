"""What keeps the consumers' counts exact across crashes and re-deliveries (PostgreSQL).

* ``clickhouse_outbox``: a finished batch's summed counts for ClickHouse (the hourly issue
  rollup and the outcomes), inserted in the transaction that deletes the batch's queue
  items, so they exist exactly when the items were finished. The consumer ships a row to
  ClickHouse after the commit under the row's token and deletes it; a row whose consumer
  died in between is claimed again after ``claimed_until`` and shipped under the same
  token, which ClickHouse drops if it had arrived (migration clickhouse/0003).
* ``stored_event_ids``: which of a batch's event ids a project has counted before (the
  issue counters' ``processed_events``, written by storage/issues.record_events), so a
  consumer keeps the first event of an id and never stores or groups a second one.

The outbox holds rows of many tenants; only consumers read it, and each of its rows goes
to ClickHouse with the organization and project ids that ingest fixed for its items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class OutboxRow:
    id: int
    #: The insert_deduplication_token prefix this row is shipped under, every time.
    token: str
    rows: bytes


def add_to_outbox(conn: psycopg.Connection[Any], rows: bytes, lease_s: float) -> OutboxRow:
    """Queue ``rows`` for ClickHouse (call inside the transaction that finishes the items
    they count); claimed by the caller for ``lease_s`` so that it ships them itself.

    Makes that transaction's commit durable (consumers otherwise commit asynchronously):
    counts shipped after a commit an OS crash then loses would be counted again when the
    items are re-delivered."""
    conn.execute("SET LOCAL synchronous_commit = on")
    row = conn.execute(
        "INSERT INTO clickhouse_outbox (rows, claimed_until)"
        " VALUES (%s, now() + make_interval(secs => %s)) RETURNING id, token",
        (rows, lease_s)).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return OutboxRow(int(row[0]), str(row[1]), rows)


def claim_outbox(conn: psycopg.Connection[Any], max_rows: int, lease_s: float
                 ) -> list[OutboxRow]:
    """Up to ``max_rows`` rows no consumer holds (their shipper died or failed), oldest
    first, claimed for ``lease_s``; committed at once."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE clickhouse_outbox o SET claimed_until = now() + make_interval(secs => %s)"
            " FROM (SELECT id FROM clickhouse_outbox WHERE claimed_until < now()"
            "       ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) c"
            " WHERE o.id = c.id RETURNING o.id, o.token, o.rows",
            (lease_s, max_rows)).fetchall()
    return sorted((OutboxRow(int(r[0]), str(r[1]), bytes(r[2])) for r in rows),
                  key=lambda r: r.id)


def delete_from_outbox(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    """Forget shipped rows; committed at once."""
    if ids:
        with conn.transaction():
            conn.execute("DELETE FROM clickhouse_outbox WHERE id = ANY(%s)", (list(ids),))


def outbox_size(conn: psycopg.Connection[Any]) -> int:
    """Rows not yet shipped (or shipped but not yet forgotten)."""
    with conn.transaction():
        row = conn.execute("SELECT count(*) FROM clickhouse_outbox").fetchone()
    return int(row[0]) if row else 0


def stored_event_ids(conn: psycopg.Connection[Any], events: Iterable[tuple[int, str]]
                     ) -> set[tuple[int, str]]:
    """The (project id, event id) pairs among ``events`` that were counted before, within
    the de-duplication window (``CRASHRAY_DEDUP_WINDOW_S``); committed at once."""
    pairs = sorted(set(events))
    if not pairs:
        return set()
    with conn.transaction():
        rows = conn.execute(
            "SELECT p.project_id, p.event_id FROM processed_events p"
            " JOIN unnest(%s::bigint[], %s::text[]) AS k(project_id, event_id)"
            " ON p.project_id = k.project_id AND p.event_id = k.event_id",
            ([p for p, _ in pairs], [e for _, e in pairs])).fetchall()
    return {(int(r[0]), str(r[1])) for r in rows}
