"""Consumers that read the Kafka hand-off (``CRASHRAY_KAFKA_BOOTSTRAP``) instead of the
PostgreSQL queue: the same processing and storing as actors/consumer.py's
``BatchConsumer`` (which this extends: only where the items come from and how they are
finished differs), one member of the consumer group per consumer actor, so the pool
shares the partitions out (a pool larger than the partitions leaves the extra members
idle).

Every batch follows this order, which loses nothing and counts nothing twice:

  poll (``KafkaItemSource``) → process → drop event ids stored before → issues → one
  PostgreSQL transaction: advance the stored offsets of the batch's partitions
  (storage/kafka_offsets.py; a message below the stored offset was finished by an earlier
  transaction and is neither stored nor counted again), count the new events into their
  issues, insert the rows into ClickHouse, reopen issues, send invalid items to the
  dead-letter topic (acknowledged before the commit), queue the summed counts (hourly
  issue counts, outcomes) in ``clickhouse_outbox`` → commit → commit the offsets to Kafka
  → ship the counts to ClickHouse (actors/store_events.py, as on the PostgreSQL queue).

A consumer killed before its PostgreSQL commit leaves the batch uncommitted on Kafka: the
partitions' next owner reads it again, its ClickHouse rows collapse with the first copies
(they identify themselves by event id, and by ``kafka_queue_id``: topic, partition and
offset), and its counts were never queued. Killed after the PostgreSQL commit but before
the Kafka commit, the next owner reads the batch again and finds every message below the
stored offset: nothing is stored or counted twice. The same holds for a batch read by a
member whose partitions were taken away by a rebalance meanwhile (the offsets' row lock
orders the two transactions). An event id the project stored before (an SDK that sent an
event again after a 503) is dropped as on the PostgreSQL queue (``invalid`` /
``duplicate_item``).

Failures: a batch that fails while ClickHouse does not answer is read again (the consumer
seeks back to its first offsets) once it answers; a batch that fails while it does is
finished item by item in offset order, and an item that fails on its own goes to the
dead-letter topic with the error in its ``crashray-error`` header, unless it is the
batch's first item and has failed fewer than ``consumer_max_attempts`` times in this
consumer (then the batch is read again after a pause: the cause may not be the item).
Offsets are committed past an item only once it is stored or dead-lettered. An offset
out of range (retention deleted messages before they were read, or the partition's log was
recreated) resets to the earliest offset: ``KafkaItemSource`` counts what was skipped or
read again, this consumer logs it, counts it in ``crashray_consumer_items_total``
(``skipped_by_retention``, ``offsets_rewound``) and reports it in its stats (and ``/readyz``);
it never stops consuming over it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from actors.consumer import BatchConsumer, ConsumerConfig
from cluster import metrics
from events.consume import WorkItem
from events.process import Symbolicator
from storage.clickhouse import EventStore
from storage.kafka import KafkaItemSource, KafkaSettings, SourcedItem
from storage.kafka_offsets import Partition, advance_offsets

log = logging.getLogger("crashray.kafka_consumer")

#: Set in every queue id made from a Kafka position, so that ClickHouse rows keyed by
#: queue id (``sessions_raw``, ``envelope_items``) never collide with the PostgreSQL
#: queue's ids (a bigserial far below it) when an instance moves from one to the other.
KAFKA_QUEUE_ID_BIT: Final = 1 << 62
_TOPIC_BITS, _PARTITION_BITS, _OFFSET_BITS = 6, 16, 40


def kafka_queue_id(topic_index: int, partition: int, offset: int) -> int:
    """The stable queue id of a Kafka message (the same every time it is read): what
    identifies its ClickHouse rows across re-deliveries."""
    if not (0 <= topic_index < 1 << _TOPIC_BITS and 0 <= partition < 1 << _PARTITION_BITS
            and 0 <= offset < 1 << _OFFSET_BITS):
        raise ValueError(f"topic {topic_index}, partition {partition}, offset {offset}: past"
                         f" {_TOPIC_BITS}, {_PARTITION_BITS} and {_OFFSET_BITS} bits")
    return (KAFKA_QUEUE_ID_BIT | topic_index << (_PARTITION_BITS + _OFFSET_BITS)
            | partition << _OFFSET_BITS | offset)


class KafkaBatchConsumer(BatchConsumer):
    """``BatchConsumer`` reading a Kafka consumer group (no Ray): poll one batch and see
    it through (the order in the module docstring)."""

    def __init__(self, config: ConsumerConfig, kafka: KafkaSettings,
                 store: EventStore | None = None, resolver: Any | None = None,
                 symbolicator: Symbolicator | None = None,
                 source: KafkaItemSource | None = None,
                 client_id: str = "crashray-consumer") -> None:
        super().__init__(config, store, resolver, symbolicator)
        self.kafka = kafka
        self._source = source if source is not None else KafkaItemSource(
            kafka, client_id=client_id)
        #: The batch in hand: queue id → where its message was read.
        self._sourced: dict[int, SourcedItem] = {}
        #: Partitions read again from an earlier offset whose stored offset must restart
        #: there (kept until a transaction that did so committed).
        self._resets: dict[Partition, int] = {}
        #: The queue ids the current transaction finishes (``_take``).
        self._finished_now: set[int] = set()
        #: Queue id → times it failed on its own as the first item of its batch.
        self._failures: dict[int, int] = {}
        self._reported = {"skipped": 0, "rewound": 0}

    def run_once(self) -> int:
        """Poll and finish one batch; returns the number of items read. Raises
        ``StorageOutage`` while ClickHouse does not answer (the batch is read again)."""
        self._check_storage_back()
        batch = self._source.poll(self.config.batch_items, self.config.idle_poll_s)
        self._report_offset_resets()
        self._resets.update(batch.rewound_to)
        if not batch.items:
            self._source.commit(batch)  # dead letters only: kept on their topic already
            return 0
        items = [self._work_item(s) for s in batch.items]
        self._sourced = {i.queue_id: s for i, s in zip(items, batch.items, strict=True)}
        metrics.record_consumer_items("claimed", [i.item_type for i in items])
        try:
            self._finish_batch(items)
        except BaseException:
            # Not stored (or not all of it): read it again from its first offsets; what a
            # committed transaction finished is found below the stored offsets.
            self._source.give_back(batch)
            raise
        self._source.commit(batch)
        self.processed_total += len(items)
        return len(items)

    def _finish_batch(self, items: list[WorkItem]) -> None:
        self._load_project_settings({i.project_id for i in items})
        try:
            self._finish(items)
        except psycopg.OperationalError:
            raise  # the database is gone, not the batch: everything is read again
        except Exception as exc:  # the batch failed after planning: find the poison item
            self._conn.rollback()
            self._release_if_storage_down(items, exc)
            self._isolate_failures(items, exc)

    def _work_item(self, s: SourcedItem) -> WorkItem:
        q = s.item
        # attempts = the last allowed: an item whose processing raises is dead-lettered
        # at once (a Kafka consumer cannot leave one message for later and commit past it).
        return WorkItem(kafka_queue_id(self._source.topics.index(s.topic), s.partition,
                                       s.offset),
                        self.config.max_attempts, q.organization_id, q.project_id,
                        q.key_id, q.item_type, q.event_id, q.received_at, q.payload, q.meta)

    def _finish(self, items: Sequence[WorkItem]) -> None:
        super()._finish(items)
        self._forget_resets(items)  # committed: the stored offsets restarted there

    def _forget_resets(self, items: Sequence[WorkItem]) -> None:
        for item in items:
            s = self._sourced[item.queue_id]
            self._resets.pop((s.topic, s.partition), None)

    # --- the hand-off's side (actors/consumer.BatchConsumer) ------------------------------

    def _take(self, items: Sequence[WorkItem], finishing: Sequence[int]) -> set[int]:
        last: dict[Partition, int] = {}
        for item in items:
            s = self._sourced[item.queue_id]
            key = (s.topic, s.partition)
            last[key] = max(last.get(key, -1), s.offset)
        before = advance_offsets(self._conn, self.kafka.consumer_group, last,
                                 {k: v for k, v in self._resets.items() if k in last})
        self._finished_now = {
            item.queue_id for item in items
            if self._sourced[item.queue_id].offset
            >= before[(self._sourced[item.queue_id].topic,
                       self._sourced[item.queue_id].partition)]}
        return self._finished_now & set(finishing)

    def _dead_letter(self, item: WorkItem, error: str) -> bool:
        if item.queue_id not in self._finished_now:
            return False  # finished by an earlier transaction
        self._source.dead_letter_item(self._sourced[item.queue_id], error)
        return True

    def _give_back(self, items: Sequence[WorkItem]) -> int:
        return len(items)  # run_once seeks back to the batch's first offsets

    def _isolate_failures(self, items: list[WorkItem], batch_error: Exception) -> None:
        """Finish the items one by one in the order read (per partition, offset order: the
        stored offset passes an item only once it is stored or dead-lettered). An item
        that fails on its own is dead-lettered at once, unless it is the first (nothing
        succeeded yet) and has not failed ``max_attempts`` times: then the batch is read
        again later (``batch_error`` raised), as the PostgreSQL queue retries a batch none
        of whose items succeed."""
        for n, item in enumerate(items):
            try:
                self._finish([item])
                continue
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # dead-lettered or retried below
                self._conn.rollback()
                error = f"{type(exc).__name__}: {exc}"
            self._release_if_storage_down(items[n:], batch_error)
            failures = self._failures[item.queue_id] = self._failures.get(item.queue_id, 0) + 1
            if n == 0 and failures < self.config.max_attempts:
                raise batch_error
            log.error("Kafka item %s fails on its own, dead-lettered: %s",
                      self._sourced[item.queue_id], error)
            with self._conn.transaction():
                self._take([item], [item.queue_id])
                self._dead_letter(item, error)
            self._forget_resets([item])
            self._failures.pop(item.queue_id, None)
            metrics.record_consumer_items("dead_lettered", [item.item_type])

    # --- reporting ----------------------------------------------------------------------

    def _report_offset_resets(self) -> None:
        """Count what offset resets skipped (retention deleted it unread) or made read
        again, once each."""
        skipped = self._source.skipped - self._reported["skipped"]
        rewound = self._source.rewound - self._reported["rewound"]
        if skipped:
            log.error("%d Kafka messages were deleted by retention before a consumer read"
                      " them (CRASHRAY_KAFKA_RETENTION_MS / _BYTES, or consumers too few)",
                      skipped)
            metrics.inc("crashray_consumer_items_total", skipped, item_type="unknown",
                        outcome="skipped_by_retention")
        if rewound:
            metrics.inc("crashray_consumer_items_total", rewound, item_type="unknown",
                        outcome="offsets_rewound")
        self._reported = {"skipped": self._source.skipped, "rewound": self._source.rewound}

    def source_stats(self) -> dict[str, Any]:
        """The member's Kafka figures for ``Consumer.stats`` (the pool autoscaler and
        ``/readyz`` read them)."""
        return {"kafka": {"assignment": [f"{t}/{p}" for t, p in self._source.assignment()],
                          "lag": self._source.lag(), "skipped": self._source.skipped,
                          "rewound": self._source.rewound,
                          "dead_lettered": self._source.dead_lettered}}

    def close(self) -> None:
        """Leave the group (the partitions go to the other members at once), then close
        the PostgreSQL connection."""
        self._source.close()
        super().close()

