"""What ``GET /readyz`` asks the stores: whether PostgreSQL answers, and how long the oldest
item of the ingest queue has waited (the hand-off's lag). Instance-wide figures only: no
organization or project is named or revealed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class QueueHealth:
    #: Seconds the oldest queued item has waited; 0 when the queue is empty.
    oldest_age_s: float
    #: An upper bound of the items waiting (ids are consecutive; dead letters leave gaps).
    backlog: int


def queue_health(url: str, timeout_s: float) -> QueueHealth:
    """Connect (within ``timeout_s``), read the queue's head and tail by primary key (two
    index lookups, however long the queue), and close. Raises ``psycopg.Error`` when the
    server does not answer in time."""
    whole_seconds = max(1, round(timeout_s))
    with psycopg.connect(url, connect_timeout=whole_seconds, autocommit=True,
                         options=f"-c statement_timeout={int(timeout_s * 1000)}") as conn:
        row = conn.execute(
            "SELECT (SELECT received_at FROM ingest_queue ORDER BY id LIMIT 1),"
            " coalesce((SELECT max(id) FROM ingest_queue) - (SELECT min(id) FROM ingest_queue)"
            " + 1, 0), now()").fetchone()
    assert row is not None
    oldest, backlog, now = row
    age = 0.0 if oldest is None else max(0.0, (now - oldest) / dt.timedelta(seconds=1))
    return QueueHealth(age, int(backlog))
