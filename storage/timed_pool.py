"""A psycopg connection pool that reports how long each request waited for a
connection (``crashray_postgres_pool_wait_seconds``, cluster/metrics.py).

A wait here means the pool's ``max_size`` connections were all busy (or the check of a
connection took a round trip): the first sign that a deployment needs more connections
(``ApiConfig.pool_max_connections``) or that PostgreSQL is slow. psycopg_pool keeps only
the sum of the waits (``get_stats()["requests_wait_ms"]``); a histogram shows their spread.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg_pool import ConnectionPool

from cluster import metrics


class TimedConnectionPool(ConnectionPool[Any]):
    """``ConnectionPool`` whose ``getconn`` (and so ``connection()``) is timed, tagged with
    the Serve deployment that owns the pool."""

    def __init__(self, *args: Any, deployment: str, **kwargs: Any) -> None:
        self.deployment = deployment
        super().__init__(*args, **kwargs)

    def getconn(self, timeout: float | None = None) -> Any:
        started = time.perf_counter()
        conn = super().getconn(timeout=timeout)
        metrics.observe("crashray_postgres_pool_wait_seconds", metrics.since(started),
                        deployment=self.deployment)
        return conn
