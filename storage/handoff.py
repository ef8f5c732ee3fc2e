"""The hand-off between ingest and the consumers, as ingest sees it: ``Handoff``, with two
implementations chosen by settings.

* The PostgreSQL queue (storage/queue.py ``PostgresQueue``), the default: right for one
  machine; the consumer actors claim from it (actors/consumer.py). Ingest reaches it through
  storage/spool.py ``BoundedQueue``, which answers within ``CRASHRAY_HANDOFF_TIMEOUT_S``
  while the server hangs by spooling to the node's disk.
* Kafka (storage/kafka.py ``KafkaHandoff``) when ``CRASHRAY_KAFKA_BOOTSTRAP`` is set: a
  partitioned, replicated buffer for clusters whose intake outgrows one PostgreSQL; the
  consumer actors then read it as one consumer group (actors/kafka_consumer.py).

Either way ``enqueue`` returns only once the items are durable, and raises otherwise (ingest
answers 503 with ``Retry-After``, or 400 for ``UnqueueableData``: the same items would fail
again). What the backlog checks mean differs: on PostgreSQL both are exact; on Kafka
``backlog_upper_bound`` is the consumer group's lag on the events topic, and
``queued_per_organization`` is empty (Kafka cannot tell per organization cheaply), so the
per-organization backlog caps (``CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG``, ``…_BYTES_PER_ORG``)
apply to the PostgreSQL queue only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg

from storage.kafka import GroupBacklog, KafkaHandoff, KafkaSettings, ensure_topics
from storage.queue import Backlog, OrganizationBacklog, PostgresQueue, QueuedItem, waiting_backlog
from storage.spool import BoundedQueue, SpoolSettings

log = logging.getLogger("crashray.handoff")


class Handoff(Protocol):
    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        """Hand ``items`` off; returns only once they are durable, raises otherwise."""

    def backlog_upper_bound(self) -> int:
        """An upper bound of the items accepted but not yet processed (cheap to ask)."""

    def queued_per_organization(self) -> dict[int, OrganizationBacklog]:
        """Items and payload bytes queued per organization (cheap to ask)."""

    def close(self) -> None:
        """Release the connection (PostgreSQL) or deliver what is buffered (Kafka)."""


def handoff_from_settings(postgres_url: str, kafka: KafkaSettings | None,
                          spool: SpoolSettings | None = None) -> Handoff:
    """Kafka when it is configured (creating its topics when missing, as far as the brokers
    allow), the PostgreSQL queue otherwise: answering within ``spool.timeout_s`` through
    the spool (storage/spool.py) when ``spool`` is given."""
    if kafka is None:
        return PostgresQueue(postgres_url) if spool is None else BoundedQueue(postgres_url, spool)
    log.info("ingest hands off to Kafka (%s)", kafka.bootstrap)
    ensure_topics(kafka, timeout_s=kafka.delivery_timeout_s)
    return KafkaHandoff(kafka)


class ConsumerBacklog:
    """What waits for the consumers on the instance's hand-off, as the pool autoscaler and
    a reprocess task measure it: the PostgreSQL queue's waiting items and the age of the
    first (``storage.queue.waiting_backlog``), or on Kafka the consumer group's lag on the
    events and outcomes topics and the age of its oldest waiting message
    (``storage.kafka.GroupBacklog``, which raises ``KafkaException`` when the brokers do
    not answer). Not thread-safe: one caller at a time; ``close`` when done."""

    def __init__(self, kafka: KafkaSettings | None,
                 connection: Callable[[], psycopg.Connection[Any]]) -> None:
        self._kafka = kafka
        self._connection = connection
        self._group: GroupBacklog | None = None

    def measure(self, count_cap: int, timeout_s: float) -> Backlog:
        """``count_cap`` bounds the PostgreSQL count; ``timeout_s`` each broker request."""
        if self._kafka is None:
            return waiting_backlog(self._connection(), count_cap)
        if self._group is None:
            self._group = GroupBacklog(self._kafka)
        return self._group.measure(timeout_s)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
            self._group = None
