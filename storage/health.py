"""What ``GET /readyz`` asks PostgreSQL: whether it answers within a bound, and the queue's
waiting items and the age of the oldest, measured as the pool autoscaler and the metrics
sampler measure them (``storage.queue.waiting_backlog``). Instance-wide figures only: no
organization or project is named or revealed."""

from __future__ import annotations

import psycopg

from storage.queue import Backlog, waiting_backlog


def queue_health(url: str, timeout_s: float, count_cap: int) -> Backlog:
    """Connect (within ``timeout_s``, each statement too), measure the queue, and close.
    Raises ``psycopg.Error`` when the server does not answer in time."""
    whole_seconds = max(1, round(timeout_s))
    with psycopg.connect(url, connect_timeout=whole_seconds, autocommit=True,
                         options=f"-c statement_timeout={int(timeout_s * 1000)}") as conn:
        return waiting_backlog(conn, count_cap)
