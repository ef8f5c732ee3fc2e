"""The hand-off between ingest and the consumers, as ingest sees it: ``Handoff``, with two
implementations chosen by settings.

* The PostgreSQL queue (storage/queue.py ``PostgresQueue``), the default: right for one
  machine; the consumer actors claim from it (actors/consumer.py).
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
from collections.abc import Sequence
from typing import Protocol

from storage.kafka import KafkaHandoff, KafkaSettings, ensure_topics
from storage.queue import OrganizationBacklog, PostgresQueue, QueuedItem

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


def handoff_from_settings(postgres_url: str, kafka: KafkaSettings | None) -> Handoff:
    """Kafka when it is configured (creating its topics when missing, as far as the brokers
    allow), the PostgreSQL queue otherwise."""
    if kafka is None:
        return PostgresQueue(postgres_url)
    log.info("ingest hands off to Kafka (%s)", kafka.bootstrap)
    ensure_topics(kafka, timeout_s=kafka.delivery_timeout_s)
    return KafkaHandoff(kafka)
