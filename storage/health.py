"""What ``GET /readyz`` asks PostgreSQL: whether it answers within a bound, and the queue's
waiting items and the age of the oldest, measured as the pool autoscaler and the metrics
sampler measure them (``storage.queue.waiting_backlog``); on the Kafka hand-off, the
consumer group's lag and the age of its oldest waiting message instead
(``storage.kafka.GroupBacklog``, as the pool autoscaler measures it). Instance-wide figures
only: no organization or project is named or revealed."""

from __future__ import annotations

import psycopg

from storage.kafka import GroupBacklog
from storage.queue import Backlog, waiting_backlog


def postgres_health(url: str, timeout_s: float) -> None:
    """Connect (within ``timeout_s``) and ask one statement. Raises ``psycopg.Error`` when
    the server does not answer in time."""
    with _connect(url, timeout_s) as conn:
        conn.execute("SELECT 1")


def queue_health(url: str, timeout_s: float, count_cap: int) -> Backlog:
    """Connect (within ``timeout_s``, each statement too), measure the queue, and close.
    Raises ``psycopg.Error`` when the server does not answer in time."""
    with _connect(url, timeout_s) as conn:
        return waiting_backlog(conn, count_cap)


def kafka_health(meter: GroupBacklog, timeout_s: float) -> Backlog:
    """The consumer group's lag and oldest waiting message; raises ``KafkaException`` when
    the brokers do not answer within ``timeout_s``."""
    return meter.measure(timeout_s)


def _connect(url: str, timeout_s: float) -> psycopg.Connection[tuple[object, ...]]:
    whole_seconds = max(1, round(timeout_s))
    return psycopg.connect(url, connect_timeout=whole_seconds, autocommit=True,
                           options=f"-c statement_timeout={int(timeout_s * 1000)}")
