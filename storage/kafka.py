"""The Kafka hand-off (optional; ``CRASHRAY_KAFKA_BOOTSTRAP``): ingest produces accepted items
to a partitioned, replicated topic and answers the SDK only once the brokers acknowledged
them; consumers read them as one consumer group and commit offsets only after the items are
stored.

Here: the producer side used by ingest (``KafkaHandoff``, the ``storage.handoff.Handoff``
interface), topic creation with bounded retention (``ensure_topics``) and the consumer side
without Ray (``KafkaItemSource``), which the consumer actors use
(actors/kafka_consumer.py: they store and count a batch, outcome tallies included, before
committing it, and keep their own stored offsets in PostgreSQL, storage/kafka_offsets.py).

Producer. Idempotent (``enable.idempotence``: no duplicates or reordering from the
producer's own retries), ``acks=all``, keyed by project id with Java's murmur2 partitioner
(a project's items stay ordered in one partition, and Java clients agree on the partition),
zstd-compressed, ``linger.ms`` small because ``@serve.batch`` already batches. ``enqueue``
returns only once every message of the batch has its delivery report, and within
``delivery_timeout_s``: librdkafka's ``message.timeout.ms`` is set to it, so a broker that is
down or slow fails the batch with ``HandOffUnavailable`` (503, ``Retry-After``) rather than
holding the request. The producer's buffer is bounded (``queue.buffering.max.messages``,
``.kbytes``); a full buffer is a 503 too. A batch that failed part-way may have some of its
messages delivered anyway: the SDK sends again and consumers deduplicate by event id.

Message format, version 1 (``encode_item`` / ``decode_item``)::

    key   = project id, ASCII decimal
    value = b"\\x01"                  format version
            uint32 big-endian n      length of the header
            n bytes                  orjson header {"p": project_id, "o": organization_id,
                                     "k": key_id, "t": item_type, "e": event_id,
                                     "r": received_at (RFC 3339), "m": meta}
            the rest                 the item's payload, raw bytes

Events go to ``events_topic``, outcome tallies (item type ``outcomes``) to ``outcomes_topic``.

Consumer. ``KafkaItemSource`` joins the group (``enable.auto.commit=false``,
``auto.offset.reset=earliest``, cooperative-sticky assignment), polls batches, and commits
a batch's offsets synchronously only when its caller says the batch is stored. A batch
read before its partition was revoked commits nothing for that partition: the new owner
reads those messages again (deduplicated by event id downstream). Messages that cannot be
decoded go to ``dead_letters_topic`` with the reason in the ``crashray-error`` header and
are committed past. Offsets are contiguous on these topics (no compaction, no transactions),
so a jump in offsets, or a committed offset below the partition's first retained one at
assignment, means retention deleted messages before they were read (``auto.offset.reset``
made librdkafka restart at the earliest retained offset): ``skipped`` counts them for the
caller to report, and the consumer carries on.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from events.errors import Overloaded
from events.quotas import OUTCOMES_ITEM_TYPE
from storage.queue import Backlog, OrganizationBacklog, QueuedItem, UnqueueableData

log = logging.getLogger("crashray.kafka")

#: The first byte of every message value; a new layout gets a new number.
FORMAT_VERSION = 1
_HEADER_LENGTH = struct.Struct(">I")
#: Kafka header on a dead letter: why it could not be read.
ASSIGNMENT_STRATEGY = "cooperative-sticky"
ERROR_HEADER = "crashray-error"
#: Kafka header on a dead letter: ``topic/partition/offset`` it was read from.
SOURCE_HEADER = "crashray-source"


@dataclass(frozen=True)
class KafkaSettings:
    """What the Kafka hand-off needs of cluster/settings.py (``CRASHRAY_KAFKA_*``)."""

    bootstrap: str
    events_topic: str = "crashray-events"
    outcomes_topic: str = "crashray-outcomes"
    dead_letters_topic: str = "crashray-dead-letters"
    consumer_group: str = "crashray-consumers"
    partitions: int = 12
    replication_factor: int = 3
    retention_ms: int = 3 * 86_400_000
    retention_bytes: int = 1 << 30
    segment_bytes: int = 128 << 20
    max_message_bytes: int = 8 << 20
    linger_ms: float = 5.0
    delivery_timeout_s: float = 5.0
    buffer_max_messages: int = 100_000
    buffer_max_kbytes: int = 256 * 1024
    #: Seconds between two measurements of the consumer group's lag (``backlog_upper_bound``).
    lag_interval_s: float = 1.0
    #: Milliseconds without a heartbeat after which the group gives a member's partitions
    #: to the others (a crashed consumer actor's, for one).
    session_timeout_ms: int = 45_000


class HandOffUnavailable(Overloaded):
    """The brokers did not acknowledge the items in time (down, slow, or the producer's
    buffer full): nothing is acknowledged to the SDK, which sends again after
    ``Retry-After``."""

    code = "handoff_unavailable"


# --- message format ----------------------------------------------------------------------

def encode_item(item: QueuedItem) -> bytes:
    """The message value of ``item`` (format version 1, in the module docstring)."""
    header = orjson.dumps({"p": item.project_id, "o": item.organization_id, "k": item.key_id,
                           "t": item.item_type, "e": item.event_id, "r": item.received_at,
                           "m": item.meta})
    return b"".join((bytes((FORMAT_VERSION,)), _HEADER_LENGTH.pack(len(header)), header,
                     item.payload))


class UndecodableMessage(ValueError):
    """A message that is no Crashray item (it goes to the dead letters with this reason)."""


def decode_item(value: bytes | None) -> QueuedItem:
    """The item ``encode_item`` wrote; ``UndecodableMessage`` naming what is wrong."""
    if not value:
        raise UndecodableMessage("empty message value")
    if value[0] != FORMAT_VERSION:
        raise UndecodableMessage(f"format version {value[0]} is not {FORMAT_VERSION}")
    if len(value) < 1 + _HEADER_LENGTH.size:
        raise UndecodableMessage(f"{len(value)} bytes: shorter than the framing")
    (length,) = _HEADER_LENGTH.unpack_from(value, 1)
    start = 1 + _HEADER_LENGTH.size
    if start + length > len(value):
        raise UndecodableMessage(f"header length {length} but only {len(value) - start}"
                                 " bytes follow")
    try:
        header = orjson.loads(value[start:start + length])
        return QueuedItem(
            project_id=int(header["p"]), organization_id=int(header["o"]),
            key_id=None if header["k"] is None else int(header["k"]),
            item_type=str(header["t"]), event_id=header["e"],
            received_at=dt.datetime.fromisoformat(header["r"]),
            payload=value[start + length:], meta=dict(header["m"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UndecodableMessage(f"header: {type(exc).__name__}: {exc}") from exc


def topic_of(item: QueuedItem, settings: KafkaSettings) -> str:
    return settings.outcomes_topic if item.item_type == OUTCOMES_ITEM_TYPE \
        else settings.events_topic


# --- topics --------------------------------------------------------------------------------

def topic_config(settings: KafkaSettings) -> dict[str, str]:
    """Per-topic configuration: retention by time and by bytes (per partition), so the
    topics' disk use is bounded whatever the consumers do (README, "Kafka hand-off")."""
    return {"retention.ms": str(settings.retention_ms),
            "retention.bytes": str(settings.retention_bytes),
            "segment.bytes": str(settings.segment_bytes),
            "max.message.bytes": str(settings.max_message_bytes),
            "cleanup.policy": "delete"}


def ensure_topics(settings: KafkaSettings, timeout_s: float = 10.0) -> dict[str, str]:
    """Create the events, outcomes and dead-letter topics when missing, with the configured
    partitions, replication and retention. Returns each topic's state: ``created``,
    ``exists``, or the broker's refusal (a broker that forbids creating topics, or does not
    answer in ``timeout_s``): then an operator creates them (the README says how) and
    ingest answers 503 until they exist."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    topics = [NewTopic(name, settings.partitions, settings.replication_factor,
                       config=topic_config(settings))
              for name in (settings.events_topic, settings.outcomes_topic,
                           settings.dead_letters_topic)]
    states: dict[str, str] = {}
    for name, future in admin.create_topics(topics, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s + 1)
            states[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                states[name] = "exists"
            else:
                states[name] = f"not created: {error.str()}"
                log.warning("Kafka topic %s could not be created (%s); create it with %d"
                            " partitions (CRASHRAY_KAFKA_PARTITIONS), replication factor %d"
                            " (CRASHRAY_KAFKA_REPLICATION_FACTOR) and %s", name, error.str(),
                            settings.partitions, settings.replication_factor,
                            topic_config(settings))
    return states


# --- producer (ingest) ----------------------------------------------------------------------

def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    timeout_ms = int(settings.delivery_timeout_s * 1000)
    return {
        "bootstrap.servers": settings.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": settings.linger_ms,
        # Java's partitioner: the same project lands on the same partition from any client.
        "partitioner": "murmur2_random",
        # librdkafka fails a message not acknowledged within this (retries included), so
        # no request waits longer than the hand-off's bound.
        "message.timeout.ms": timeout_ms,
        "request.timeout.ms": min(timeout_ms, 30_000),
        "queue.buffering.max.messages": settings.buffer_max_messages,
        "queue.buffering.max.kbytes": settings.buffer_max_kbytes,
        "message.max.bytes": settings.max_message_bytes + 64 * 1024,
        "log_level": 4,
    }


@dataclass
class _Delivery:
    """Delivery reports of one ``enqueue`` batch, filled by the poller thread."""

    expected: int
    done: threading.Event = field(default_factory=threading.Event)
    acknowledged: int = 0
    errors: list[KafkaError] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, error: KafkaError | None, _message: Message) -> None:
        with self.lock:
            if error is None:
                self.acknowledged += 1
            else:
                self.errors.append(error)
            if self.acknowledged + len(self.errors) >= self.expected:
                self.done.set()


#: Delivery errors that are the data's fault: the same items would fail again (400).
_DATA_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG,
                          KafkaError.RECORD_LIST_TOO_LARGE})


class KafkaHandoff:
    """``storage.handoff.Handoff`` over Kafka: one idempotent producer per ingest replica,
    safe to call from several threads (``asyncio.to_thread``). A thread of its own serves
    the delivery reports, so each caller waits only for its own batch's."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings))
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery",
                                        daemon=True)
        self._poller.start()
        self._lag = 0
        self._lag_thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        """Produce ``items`` and return once the brokers acknowledged every one; raises
        ``HandOffUnavailable`` within ``delivery_timeout_s`` (plus a second) otherwise,
        ``UnqueueableData`` for an item larger than a message may be."""
        if not items:
            return
        try:
            values = [encode_item(item) for item in items]
        except orjson.JSONEncodeError as exc:
            # As the PostgreSQL queue refuses them (the door check, events/storable.py,
            # should have): the same items would fail again.
            raise UnqueueableData("the Kafka hand-off cannot encode these items",
                                  [f"{type(exc).__name__}: {exc}"]) from exc
        self._check_sizes(items, values)
        self._check_room(len(items))
        delivery = _Delivery(len(items))
        deadline = time.monotonic() + self.settings.delivery_timeout_s + 1.0
        for item, value in zip(items, values, strict=True):
            try:
                self._producer.produce(topic_of(item, self.settings),
                                       key=str(item.project_id).encode(), value=value,
                                       on_delivery=delivery.report)
            except BufferError as exc:
                raise self._unavailable(
                    "the Kafka producer's buffer is full (CRASHRAY_KAFKA_BUFFER_MAX_MESSAGES,"
                    " CRASHRAY_KAFKA_BUFFER_MAX_KBYTES): the brokers do not keep up") from exc
            except KafkaException as exc:
                raise self._unavailable(f"the Kafka producer refused a message: {exc}") from exc
        if not delivery.done.wait(max(deadline - time.monotonic(), 0.0)):
            raise self._unavailable(
                f"{delivery.expected - delivery.acknowledged} of {delivery.expected} messages"
                f" not acknowledged within {self.settings.delivery_timeout_s} s"
                " (CRASHRAY_KAFKA_DELIVERY_TIMEOUT_S)")
        self._raise_for(delivery)

    def _check_sizes(self, items: Sequence[QueuedItem], values: Sequence[bytes]) -> None:
        too_large = [f"{item.item_type} item of {len(value)} bytes"
                     for item, value in zip(items, values, strict=True)
                     if len(value) > self.settings.max_message_bytes]
        if too_large:
            raise UnqueueableData(
                "the Kafka hand-off cannot store these items",
                [*too_large[:3], f"a message may hold {self.settings.max_message_bytes}"
                 " bytes (CRASHRAY_KAFKA_MAX_MESSAGE_BYTES)"])

    def _check_room(self, count: int) -> None:
        """Refuse a batch the producer's buffer cannot take whole, before producing any of
        it (a BufferError part-way would leave some messages sent for a 503)."""
        waiting = len(self._producer)
        if waiting + count > self.settings.buffer_max_messages:
            raise self._unavailable(
                f"{waiting} messages wait for the brokers' acknowledgement, and this batch"
                f" of {count} would pass CRASHRAY_KAFKA_BUFFER_MAX_MESSAGES"
                f" ({self.settings.buffer_max_messages})")

    def _raise_for(self, delivery: _Delivery) -> None:
        if not delivery.errors:
            return
        first = delivery.errors[0]
        causes = [f"{len(delivery.errors)} of {delivery.expected} messages failed:"
                  f" {first.name()}: {first.str()}"]
        if all(error.code() in _DATA_ERRORS for error in delivery.errors):
            raise UnqueueableData("the Kafka brokers refused these items", causes)
        raise self._unavailable("the Kafka brokers did not take the items", causes)

    def _unavailable(self, detail: str, causes: Sequence[str] = ()) -> HandOffUnavailable:
        log.warning("Kafka hand-off failed: %s %s", detail, list(causes))
        return HandOffUnavailable("the service is overloaded",
                                  [detail, *causes])

    # Backlog checks (serve_apps/ingest_request.py). Kafka cannot tell cheaply what one
    # organization has waiting, so the per-organization backlog caps apply to the
    # PostgreSQL queue only; the global guard (CRASHRAY_MAX_QUEUED_ITEMS) applies to the
    # consumer group's lag on the events topic, measured by a thread of its own so that a
    # broker that does not answer never holds a request.

    def backlog_upper_bound(self) -> int:
        """The consumer group's lag on the events topic, as last measured (at most
        ``lag_interval_s`` old while the brokers answer; the last figure otherwise)."""
        if self._lag_thread is None:
            self._lag_thread = threading.Thread(target=self._measure_lag, name="kafka-lag",
                                                daemon=True)
            self._lag_thread.start()
        return self._lag

    def queued_per_organization(self) -> dict[int, OrganizationBacklog]:
        """Always empty: not measurable on Kafka (see above)."""
        return {}

    def _measure_lag(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.settings.bootstrap,
                             "group.id": self.settings.consumer_group,
                             "enable.auto.commit": False, "log_level": 3})
        try:
            while not self._closed.wait(self.settings.lag_interval_s):
                try:
                    self._lag = group_lag(consumer, self.settings.events_topic,
                                          timeout_s=self.settings.delivery_timeout_s)
                except KafkaException:
                    log.warning("could not measure the Kafka consumer lag", exc_info=True)
        finally:
            consumer.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is buffered (for at most ``timeout_s``), then stop the threads."""
        self._producer.flush(timeout_s)
        self._closed.set()
        self._poller.join()


def group_lag(consumer: Consumer, topic: str, timeout_s: float) -> int:
    """Messages of ``topic`` the consumer's group has not committed yet: per partition,
    the high watermark minus the committed offset (the low watermark when none)."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return 0
    partitions = [TopicPartition(topic, p) for p in metadata.partitions]
    committed = consumer.committed(partitions, timeout=timeout_s)
    lag = 0
    for tp in committed:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                   timeout=timeout_s)
        lag += max(high - (tp.offset if tp.offset >= 0 else low), 0)
    return lag


class GroupBacklog:
    """What waits for the consumer group on the events and outcomes topics, as the pool
    autoscaler and ``/readyz`` measure it: the lag (per partition, the high watermark minus
    the committed offset, or the first retained one when none is committed or retention
    passed it) and the age of the oldest message waiting (its timestamp: when ingest
    produced it). The age costs one fetch per lagging partition, read with a client of its
    own that never joins the group nor commits. Not thread-safe: one caller at a time."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._consumer = Consumer({"bootstrap.servers": settings.bootstrap,
                                   "group.id": settings.consumer_group,
                                   "enable.auto.commit": False, "log_level": 3,
                                   "fetch.max.bytes": max(52_428_800,
                                                          settings.max_message_bytes * 2)})

    def measure(self, timeout_s: float, now_s: float | None = None) -> Backlog:
        """Raises ``KafkaException`` when the brokers do not answer within ``timeout_s``."""
        waiting = 0
        firsts: list[TopicPartition] = []
        for topic in (self.settings.events_topic, self.settings.outcomes_topic):
            metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue
            committed = self._consumer.committed(
                [TopicPartition(topic, p) for p in metadata.partitions], timeout=timeout_s)
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=timeout_s)
                start = max(tp.offset, low) if tp.offset >= 0 else low
                if high > start:
                    waiting += high - start
                    firsts.append(TopicPartition(topic, tp.partition, start))
        oldest_ms = self._oldest_timestamp_ms(firsts, timeout_s)
        now_s = time.time() if now_s is None else now_s
        return Backlog(waiting, 0.0 if oldest_ms is None else max(now_s - oldest_ms / 1000, 0.0))

    def _oldest_timestamp_ms(self, firsts: list[TopicPartition], timeout_s: float
                             ) -> int | None:
        """The earliest timestamp among the first waiting message of each partition."""
        if not firsts:
            return None
        self._consumer.assign(firsts)
        found: dict[tuple[str | None, int | None], int] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < len(firsts) and time.monotonic() < deadline:
                for message in self._consumer.consume(len(firsts), 0.1):
                    if message.error() is None:
                        found.setdefault((message.topic(), message.partition()),
                                         message.timestamp()[1])
        finally:
            self._consumer.unassign()
        return min(found.values()) if found else None

    def close(self) -> None:
        self._consumer.close()


# --- consumer (no Ray) ------------------------------------------------------------------

@dataclass(frozen=True)
class SourcedItem:
    """An item with where it was read from."""

    topic: str
    partition: int
    offset: int
    item: QueuedItem


@dataclass(frozen=True)
class ItemBatch:
    """What one ``poll`` read: the items, and for each partition the offset to commit once
    they are stored (dead letters included: they are already kept elsewhere), with the
    assignment it was read under."""

    items: list[SourcedItem]
    #: (topic, partition) → (next offset, assignment generation)
    positions: dict[tuple[str, int], tuple[int, int]]
    dead_lettered: int = 0
    #: (topic, partition) → the offset of the batch's first item there (where
    #: ``give_back`` rewinds to).
    firsts: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) → the offset reading restarted from after the committed offset
    #: was found past the partition's end (its log recreated or truncated): stored offsets
    #: (storage/kafka_offsets.py) must restart there too.
    rewound_to: dict[tuple[str, int], int] = field(default_factory=dict)


#: Commit errors that mean the group is reassigning partitions, not that Kafka is broken.
_REBALANCE_ERRORS = frozenset({KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                               KafkaError.UNKNOWN_MEMBER_ID, KafkaError._ASSIGNMENT_LOST,
                               KafkaError.FENCED_INSTANCE_ID})


class KafkaItemSource:
    """A member of the consumer group: polls batches, commits them when told.

    At-least-once: a batch's offsets are committed only by ``commit``, which the caller
    calls after the items are stored (ClickHouse insert, then the PostgreSQL transaction).
    A member that stops before leaves them to the next owner of the partitions."""

    def __init__(self, settings: KafkaSettings, topics: Sequence[str] | None = None,
                 client_id: str = "crashray-consumer") -> None:
        self.settings = settings
        self.topics = list(topics or (settings.events_topic, settings.outcomes_topic))
        #: Messages retention deleted before this member could read them.
        self.skipped = 0
        #: Offsets jumped back because the committed offset was past the partition's end.
        self.rewound = 0
        #: Messages sent to the dead-letter topic.
        self.dead_lettered = 0
        self._generation = 0
        self._assigned: dict[tuple[str, int], int] = {}
        self._next: dict[tuple[str, int], int | None] = {}
        self._rewound_to: dict[tuple[str, int], int] = {}
        self._consumer = self._new_consumer(client_id)
        self._dead_letters = Producer({"bootstrap.servers": settings.bootstrap,
                                       "enable.idempotence": True, "acks": "all",
                                       "message.max.bytes": settings.max_message_bytes
                                       + 64 * 1024, "log_level": 4})
        self._client_id = client_id

    def _new_consumer(self, client_id: str) -> Consumer:
        settings = self.settings
        consumer = Consumer({
            "bootstrap.servers": settings.bootstrap, "group.id": settings.consumer_group,
            "client.id": client_id, "enable.auto.commit": False,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(min(3000, settings.session_timeout_ms // 3), 100),
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": ASSIGNMENT_STRATEGY, "log_level": 4,
            "fetch.max.bytes": max(52_428_800, settings.max_message_bytes * 2)})
        consumer.subscribe(self.topics, on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_revoke)
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        try:
            committed = consumer.committed(partitions,
                                           timeout=self.settings.delivery_timeout_s)
        except KafkaException:
            log.warning("could not read the committed offsets of %s", partitions,
                        exc_info=True)
            committed = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._assigned[key] = self._generation
            self._next[key] = tp.offset if tp.offset >= 0 else None

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self._next.pop((tp.topic, tp.partition), None)

    def assignment(self) -> list[tuple[str, int]]:
        return sorted(list(self._assigned))  # a copy: the poll thread may be rebalancing

    def poll(self, max_items: int, timeout_s: float) -> ItemBatch:
        """Up to ``max_items`` messages, waiting at most ``timeout_s`` for the first."""
        items: list[SourcedItem] = []
        positions: dict[tuple[str, int], tuple[int, int]] = {}
        firsts: dict[tuple[str, int], int] = {}
        dead = 0
        for message in self._consumer.consume(max_items, timeout_s):
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            key = (topic, partition)
            self._count_skipped(key, offset)
            positions[key] = (offset + 1, self._assigned.get(key, -1))
            try:
                items.append(SourcedItem(topic, partition, offset, decode_item(message.value())))
                # Only items: a dead letter before the first is kept already, and reading
                # it again would keep it twice.
                firsts.setdefault(key, offset)
            except UndecodableMessage as exc:
                self._dead_letter(message, str(exc))
                dead += 1
        if dead:
            self._flush_dead_letters()
            self.dead_lettered += dead
        rewound = {k: v for k, v in self._rewound_to.items() if k in positions}
        for key in rewound:
            del self._rewound_to[key]
        return ItemBatch(items, positions, dead, firsts, rewound)

    def _count_skipped(self, key: tuple[str, int], offset: int) -> None:
        expected = self._next.get(key)
        if expected is not None and offset > expected:
            log.warning("%s[%d]: offsets %d to %d were deleted by retention before they"
                        " were read; continuing at %d", key[0], key[1], expected,
                        offset - 1, offset)
            self.skipped += offset - expected
        elif expected is not None and offset < expected:
            # The committed offset was past the partition's end (a topic recreated, a log
            # truncated by an unclean leader election): reset to the earliest, so messages
            # are read again; consumers deduplicate by event id.
            log.warning("%s[%d]: committed offset %d is past the partition's end; reading"
                        " again from %d", key[0], key[1], expected, offset)
            self.rewound += expected - offset
            self._rewound_to[key] = offset
        self._next[key] = offset + 1

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._PARTITION_EOF, KafkaError._AUTO_OFFSET_RESET):
            # A reset is counted by the offset jump that follows it (_count_skipped).
            log.info("Kafka consumer: %s", error.str())
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("Kafka consumer error (librdkafka retries): %s", error.str())

    def _dead_letter(self, message: Message, reason: str) -> None:
        log.warning("%s[%s] offset %s cannot be read (%s): sent to %s", message.topic(),
                    message.partition(), message.offset(), reason,
                    self.settings.dead_letters_topic)
        self._dead_letters.produce(
            self.settings.dead_letters_topic, key=message.key(), value=message.value(),
            headers=[(ERROR_HEADER, reason.encode()),
                     (SOURCE_HEADER, f"{message.topic()}/{message.partition()}/"
                                     f"{message.offset()}".encode())])

    def dead_letter_item(self, item: SourcedItem, reason: str) -> None:
        """Keep an item that cannot be stored (invalid, or failing on its own) on the
        dead-letter topic with ``reason``; returns once the brokers acknowledged it, raises
        ``HandOffUnavailable`` otherwise (then its offset must not be committed past)."""
        log.warning("%s[%d] offset %d (%s item of project %d) cannot be stored (%s): sent"
                    " to %s", item.topic, item.partition, item.offset, item.item.item_type,
                    item.item.project_id, reason, self.settings.dead_letters_topic)
        self._dead_letters.produce(
            self.settings.dead_letters_topic, key=str(item.item.project_id).encode(),
            value=encode_item(item.item),
            headers=[(ERROR_HEADER, reason.encode()),
                     (SOURCE_HEADER, f"{item.topic}/{item.partition}/{item.offset}".encode())])
        self._flush_dead_letters()
        self.dead_lettered += 1

    def give_back(self, batch: ItemBatch) -> None:
        """The batch was not stored (storage down, a failure that is not its items'): read
        its messages again, from each partition's first offset in it. A partition taken
        away meanwhile is left to its new owner (nothing of it was committed)."""
        try:
            for (topic, partition), first in batch.firsts.items():
                if (topic, partition) in self._assigned:
                    self._consumer.seek(TopicPartition(topic, partition, first))
                    self._next[(topic, partition)] = first
        except KafkaException as exc:
            # A partition not fetched yet cannot be sought: rejoin the group instead, which
            # restarts every partition at the committed offset (at or before this batch).
            log.warning("could not rewind to the batch's first offsets (%s); rejoining the"
                        " consumer group", exc.args[0].str())
            self._consumer.close()
            self._assigned.clear()
            self._next.clear()
            self._consumer = self._new_consumer(self._client_id)

    def _flush_dead_letters(self) -> None:
        """Dead letters must be kept before their offsets are committed past."""
        waiting = self._dead_letters.flush(self.settings.delivery_timeout_s)
        if waiting:
            raise HandOffUnavailable("the dead-letter topic did not take its messages",
                                     [f"{waiting} messages not acknowledged within"
                                      f" {self.settings.delivery_timeout_s} s"])

    def commit(self, batch: ItemBatch) -> list[tuple[str, int]]:
        """Commit ``batch`` (synchronously) for the partitions this member still holds
        under the assignment it was read in; returns those partitions. The others' messages
        will be read again by their new owner."""
        offsets = [TopicPartition(topic, partition, offset)
                   for (topic, partition), (offset, generation) in batch.positions.items()
                   if self._assigned.get((topic, partition)) == generation]
        if not offsets:
            return []
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _REBALANCE_ERRORS:
                raise
            # The group is reassigning partitions: nothing of this batch is committed.
            # Its items are stored, so a later commit of a partition this member keeps
            # covers them, and a partition's new owner reads them again (deduplicated by
            # event id): at-least-once either way.
            log.info("commit skipped during a rebalance: %s", exc.args[0].str())
            return []
        return sorted((tp.topic, tp.partition) for tp in offsets)

    def lag(self) -> int:
        """Messages of the assigned partitions after this member's position (for a pool
        autoscaler), from the watermarks librdkafka already has."""
        total = 0
        for topic, partition in list(self._assigned):  # a copy, as in ``assignment``
            tp = TopicPartition(topic, partition)
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = self._next.get((topic, partition))
            total += max(high - (position if position is not None else low), 0)
        return total

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once)."""
        self._consumer.close()
        self._dead_letters.flush(self.settings.delivery_timeout_s)
