"""Instance-wide figures for operators' metrics (actors/metrics_sampler.py): never per
tenant, never on a request path."""

from __future__ import annotations

from typing import Any

import psycopg


def dead_letter_totals(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Dead letters of the whole instance per item type (a handful of types; the table
    is small: items that failed on their own, until replayed or dropped)."""
    rows = conn.execute("SELECT item_type, count(*) FROM ingest_dead_letters"
                        " GROUP BY item_type").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def is_instance_admin(conn: psycopg.Connection[Any], user_id: int | None) -> bool:
    """Whether ``user_id`` is an instance admin: a user made with ``crashray user create
    --superuser`` (``users.is_superuser``, the instance's only role above organizations).
    Organization tokens (no user) never are."""
    if user_id is None:
        return False
    row = conn.execute("SELECT is_superuser FROM users WHERE id = %s", (user_id,)).fetchone()
    return bool(row and row[0])


def organization_queued(conn: psycopg.Connection[Any], organization_id: int
                        ) -> tuple[int, int]:
    """(items, payload bytes) ``organization_id`` has waiting in the ingest queue, summed
    from ``ingest_queue_usage`` (kept by the queue's triggers, migration 0012) without
    folding it: a read, cheap at any queue size."""
    row = conn.execute("SELECT coalesce(sum(items), 0), coalesce(sum(bytes), 0)"
                       " FROM ingest_queue_usage WHERE organization_id = %s",
                       (organization_id,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
