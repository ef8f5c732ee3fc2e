"""The consumers on the Kafka hand-off (actors/kafka_consumer.py): items ingest handed to
Kafka are processed and stored as on the PostgreSQL queue, and what a user reads (issue
counts, stats, outcomes) stays exact through crashes, rebalances, broker outages, offset
resets and poison messages.

The brokers are librdkafka's mock broker (tests/support_kafka.py: the mock cluster inside
the confluent-kafka wheel's librdkafka, in a process of its own), NOT Apache Kafka: no
Apache Kafka broker can be installed on these machines. PostgreSQL is real (a scratch
database built by the migrations), ClickHouse is the real engine (chDB), the consumers are
the real ``KafkaBatchConsumer`` driven batch by batch (Ray runs them in
tests/e2e/test_kafka_ingest.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
import ray
from confluent_kafka import Consumer, Producer, TopicPartition

from actors.consumer import ConsumerConfig, consumer_name
from actors.kafka_consumer import KafkaBatchConsumer
from actors.placement import NAMESPACE
from actors.pool_autoscaler import AutoscalerConfig, start_pool_autoscaler, stop_pool_autoscaler
from events.grouping import DEFAULT_GROUPING_CONFIG
from events.pool_scaling import PoolPolicy
from events.quotas import OUTCOMES_ITEM_TYPE
from pipelines.reprocess import KAFKA_MEASURE_TIMEOUT_S, live_events_wait
from serve_apps.health import HealthConfig, check_readiness
from storage.clickhouse import ClickHouseStore
from storage.kafka import (
    ERROR_HEADER,
    GroupBacklog,
    HandOffUnavailable,
    ItemBatch,
    KafkaHandoff,
    KafkaItemSource,
    KafkaSettings,
)
from storage.kafka_offsets import stored_offsets
from storage.queue import QueuedItem
from tests.integration.conftest import RunningCrashray
from tests.integration.consumer_harness import Harness, OwnerStore, counts_seen, harness
from tests.support import error_event, wait_until
from tests.support_kafka import MockKafkaCluster, enqueue_once_back, mock_kafka_cluster

pytestmark = pytest.mark.integration

PARTITIONS = 4
#: Short, so that a member that closed hands its partitions over quickly.
SESSION_TIMEOUT_MS = 3000
#: Bound on how long a test waits for the consumers to catch up.
CATCH_UP_S = 30.0



@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_kafka_consumer")


@pytest.fixture
def kafka() -> Iterator[MockKafkaCluster]:
    """librdkafka's mock broker (3 brokers; not Apache Kafka) for one test."""
    for cluster in mock_kafka_cluster(3):
        yield cluster
        gc.collect()  # the test's clients go before their brokers


@pytest.fixture
def settings(kafka: MockKafkaCluster) -> KafkaSettings:
    names = KafkaSettings(bootstrap=kafka.bootstrap)
    for topic in (names.events_topic, names.outcomes_topic, names.dead_letters_topic):
        assert kafka.create_topic(topic, PARTITIONS, 3) == 0
    return KafkaSettings(bootstrap=kafka.bootstrap, partitions=PARTITIONS,
                         consumer_group=f"g-{uuid.uuid4().hex[:8]}", delivery_timeout_s=2.0,
                         linger_ms=2, session_timeout_ms=SESSION_TIMEOUT_MS)


@pytest.fixture
def producer(settings: KafkaSettings) -> Iterator[KafkaHandoff]:
    handoff = KafkaHandoff(settings)
    yield handoff
    handoff.close(1.0)


def kafka_consumer(h: Harness, settings: KafkaSettings, source: KafkaItemSource | None = None,
                   store: Any = None, name: str = "c", **config: Any) -> KafkaBatchConsumer:
    """A Kafka consumer of the harness's database (closed with the harness)."""
    values: dict[str, Any] = {
        "postgres_url": h.url, "clickhouse_dsn": h.clickhouse.dsn, "batch_items": 100,
        "lease_s": 5.0, "max_attempts": 3, "retention_days": 90, "idle_poll_s": 0.3,
        "batch_wait_s": 0.0, "dedup_window_s": 86_400, "outbox_sweep_s": 0.0,
        "kafka": settings, **config}
    consumer = KafkaBatchConsumer(ConsumerConfig(**values), settings,
                                  store=store if store is not None else h.clickhouse,
                                  source=source, client_id=name)
    h.consumers.append(consumer)
    return consumer


def run_until(consumers: list[KafkaBatchConsumer], done: Callable[[], bool],
              timeout_s: float = CATCH_UP_S) -> None:
    """Run batches on every consumer until ``done()`` (or fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the consumers did not catch up in time"
        for consumer in consumers:
            try:
                consumer.run_once()
            except Exception:  # a batch retried later (the test asserts the end state)
                time.sleep(0.2)


def events(h: Harness, corpus_dir: Path, title: str, count: int,
           project_id: int | None = None) -> list[QueuedItem]:
    return [h.event_item(error_event(corpus_dir, title), project_id=project_id)
            for _ in range(count)]


def rate_limited_tally(h: Harness, quantity: int) -> QueuedItem:
    """The outcome tally ingest hands off for refused items (serve_apps/ingest_admission
    ``OutcomeTally``): ``quantity`` errors rate limited this hour."""
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    rows = [{"key_id": h.key_id, "hour": hour.isoformat(), "category": "error",
             "reason": "project_quota", "outcome": "rate_limited", "quantity": quantity}]
    return QueuedItem(h.project_id, h.organization_id, None, OUTCOMES_ITEM_TYPE, None,
                      dt.datetime.now(dt.UTC), orjson.dumps(rows), {})


def offsets_of(h: Harness, settings: KafkaSettings) -> dict[tuple[str, int], int]:
    with psycopg.connect(h.url) as conn:
        return stored_offsets(conn, settings.consumer_group)


def add_projects(h: Harness, count: int) -> list[int]:
    """``count`` more projects of the harness's organization (items keyed by project land
    on different partitions)."""
    ids = [h.project_id + 100 + n for n in range(count)]
    for project_id in ids:
        h.sql("INSERT INTO projects (id, organization_id, slug, name, grouping_config)"
              " VALUES (%s, %s, %s, %s, %s) RETURNING id",
              (project_id, h.organization_id, f"p{project_id}", f"p{project_id}",
               DEFAULT_GROUPING_CONFIG))
    return ids


def organization_counts(h: Harness) -> tuple[int, int]:
    """(events counted into the organization's issues, accepted errors in stats_v2)."""
    counted = h.sql("SELECT coalesce(sum(times_seen), 0) FROM issues i JOIN projects p"
                    " ON p.id = i.project_id WHERE p.organization_id = %s",
                    (h.organization_id,))[0][0]
    return int(counted), h.outcome_totals("error").get(("accepted", ""), 0)


def exact(h: Harness, n: int) -> bool:
    return counts_seen(h) == {"count": n, "stats_24h": n, "project_stats": n, "accepted": n}


def test_events_and_outcomes_from_kafka_are_stored_and_counted(
        h: Harness, settings: KafkaSettings, producer: KafkaHandoff, corpus_dir: Path) -> None:
    """Events and the rate-limited tally handed to Kafka (librdkafka's mock broker, not
    Apache Kafka) reach the issue list, the stats and stats_v2, as from the PostgreSQL
    queue; the stored offsets move past them and Kafka's committed offsets follow."""
    producer.enqueue([*events(h, corpus_dir, "FromKafka: boom", 12), rate_limited_tally(h, 5)])
    consumer = kafka_consumer(h, settings)
    run_until([consumer], lambda: exact(h, 12)
              and h.outcome_totals("error").get(("rate_limited", "project_quota")) == 5)
    assert [(i["title"], i["count"]) for i in h.issues()] == [("FromKafka: boom", "12")]
    assert h.queue_size() == 0  # nothing went through the PostgreSQL queue
    offsets = offsets_of(h, settings)
    assert sum(offsets.values()) == 13  # 12 events, 1 tally, offsets from 0
    assert consumer.source_stats()["kafka"]["lag"] == 0


@pytest.mark.parametrize("dies_at", ["clickhouse_insert", "kafka_commit"])
def test_a_consumer_killed_mid_batch_loses_and_duplicates_nothing(
        h: Harness, settings: KafkaSettings, producer: KafkaHandoff, corpus_dir: Path,
        dies_at: str) -> None:
    """A consumer dies after its ClickHouse insert (before the PostgreSQL commit), or
    after the PostgreSQL commit (before the Kafka commit); the next member of the group
    reads the batch again from Kafka (librdkafka's mock broker, not Apache Kafka). Every
    event is counted once, the outcomes once, and no re-read event counts as a duplicate
    (``invalid``/``duplicate_item``)."""
    producer.enqueue([*events(h, corpus_dir, "KilledMidBatch: boom", 10),
                      rate_limited_tally(h, 3)])

    class Killed(BaseException):
        """The process ends here: nothing after runs, nothing is cleaned up."""

    class DiesAfterInsert:
        def __getattr__(self, name: str) -> Any:
            return getattr(h.clickhouse, name)

        def insert_batch(self, tables: Any) -> int:
            h.clickhouse.insert_batch(tables)
            raise Killed

    class DiesBeforeCommit(KafkaItemSource):
        def commit(self, batch: ItemBatch) -> list[tuple[str, int]]:
            if not batch.items:  # an empty poll (a slow broker): nothing to die over yet
                return super().commit(batch)
            raise Killed

    source = DiesBeforeCommit(settings, client_id="doomed") if dies_at == "kafka_commit" \
        else KafkaItemSource(settings, client_id="doomed")
    doomed = kafka_consumer(h, settings, source=source, name="doomed",
                            store=DiesAfterInsert() if dies_at == "clickhouse_insert" else None)
    deadline = time.monotonic() + CATCH_UP_S
    with pytest.raises(Killed):
        while time.monotonic() < deadline:
            doomed.run_once()
    # Died after its PostgreSQL commit (the stored offsets moved), or before it (nothing
    # counted); the batch may hold the events, the tally or both.
    if dies_at == "kafka_commit":
        assert sum(offsets_of(h, settings).values()) > 0
    else:
        assert counts_seen(h)["count"] == 0 and not any(offsets_of(h, settings).values())
    h.consumers.remove(doomed)
    doomed.close()  # its partitions go to the next member; it committed nothing to Kafka

    survivor = kafka_consumer(h, settings, name="survivor")
    run_until([survivor], lambda: exact(h, 10)
              and h.outcome_totals("error").get(("rate_limited", "project_quota")) == 3)
    for _ in range(3):  # anything read again is finished by now
        survivor.run_once()
    assert exact(h, 10)
    assert h.outcome_totals("error") == {("accepted", ""): 10,
                                         ("rate_limited", "project_quota"): 3}


def test_a_rebalance_loses_and_duplicates_nothing(
        h: Harness, settings: KafkaSettings, producer: KafkaHandoff, corpus_dir: Path) -> None:
    """A second consumer joins while the first holds a batch (librdkafka's mock broker,
    not Apache Kafka): the group splits the partitions, the first one's batch read before
    the rebalance is stored once even when the new owner reads it again."""
    projects = add_projects(h, 8)
    producer.enqueue([i for p in projects for i in events(h, corpus_dir, "Rebalanced: a", 5, p)])
    first = kafka_consumer(h, settings, name="first", batch_items=15)
    deadline = time.monotonic() + CATCH_UP_S
    while first.run_once() == 0:
        assert time.monotonic() < deadline
    second = kafka_consumer(h, settings, name="second", batch_items=15)
    producer.enqueue([i for p in projects for i in events(h, corpus_dir, "Rebalanced: b", 5, p)])
    run_until([first, second], lambda: organization_counts(h) == (80, 80))
    for consumer in (first, second):
        consumer.run_once()
    assert organization_counts(h) == (80, 80)
    assert h.outcome_totals("error") == {("accepted", ""): 80}


def test_brokers_down_ten_seconds_refuse_with_503_and_lose_nothing(
        kafka: MockKafkaCluster, h: Harness, settings: KafkaSettings, producer: KafkaHandoff,
        corpus_dir: Path) -> None:
    """Every broker down for ~10 s (``rd_kafka_mock_broker_set_down`` of librdkafka's mock
    broker, not Apache Kafka) while a consumer runs: ingest's hand-off refuses (the 503 of
    ``HandOffUnavailable``), the consumer keeps going without crashing, and every event
    acknowledged before or after is stored and counted once."""
    consumer = kafka_consumer(h, settings, idle_poll_s=0.2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                consumer.run_once()
            except Exception as exc:  # counted: the consumer actor's loop pauses and goes on
                errors.append(exc)
                time.sleep(0.5)

    producer.enqueue(events(h, corpus_dir, "BrokersDown: boom", 5))
    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    refused = 0
    try:
        kafka.all_down()
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:
            try:
                producer.enqueue(events(h, corpus_dir, "BrokersDown: boom", 1))
            except HandOffUnavailable:
                refused += 1
        kafka.all_up()
        enqueue_once_back(producer, events(h, corpus_dir, "BrokersDown: boom", 5))
        deadline = time.monotonic() + CATCH_UP_S
        while not exact(h, 10) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        kafka.all_up()
        stop.set()
        worker.join(30)
    assert refused >= 2
    assert worker.is_alive() is False
    # Accepted before and after the outage: all stored; refused ones were never accepted.
    # (A refused batch may still have reached the brokers: then it is stored as well.)
    seen = counts_seen(h)
    assert seen["count"] >= 10 and seen == {key: seen["count"] for key in seen}


def test_offsets_deleted_by_retention_are_skipped_counted_and_reported(
        kafka: MockKafkaCluster, h: Harness, settings: KafkaSettings, producer: KafkaHandoff,
        corpus_dir: Path) -> None:
    """Retention deleted messages nobody read (``rd_kafka_mock_partition_delete_records``
    of librdkafka's mock broker, not Apache Kafka): the next consumer's offset is out of
    range, it restarts at the earliest retained message, reports how many were skipped
    (stats, for /readyz) and goes on consuming."""
    producer.enqueue(events(h, corpus_dir, "Retained: boom", 3))
    first = kafka_consumer(h, settings, name="first")
    run_until([first], lambda: exact(h, 3))
    h.consumers.remove(first)
    first.close()
    [(topic, partition)] = [k for k, v in offsets_of(h, settings).items() if v]
    producer.enqueue(events(h, corpus_dir, "Retained: boom", 7))  # offsets 3 to 9
    assert kafka.delete_records(topic, partition, 7) == 0  # 3 to 6 never read
    second = kafka_consumer(h, settings, name="second")
    run_until([second], lambda: exact(h, 6))
    assert second.source_stats()["kafka"]["skipped"] == 4
    producer.enqueue(events(h, corpus_dir, "Retained: boom", 1))
    run_until([second], lambda: exact(h, 7))


def test_a_log_recreated_below_the_stored_offset_is_read_from_its_start(
        h: Harness, settings: KafkaSettings, producer: KafkaHandoff, corpus_dir: Path) -> None:
    """The group's offsets (Kafka's and the stored ones) point past a partition's end, as
    after its topic was recreated (set by hand here, on librdkafka's mock broker, not
    Apache Kafka): the consumer resets to the earliest offset, restarts the stored offset
    there too, and stores every message of the new log."""
    sent = events(h, corpus_dir, "Recreated: boom", 6)
    producer.enqueue(sent)
    probe = KafkaItemSource(settings, client_id="probe")
    try:
        deadline = time.monotonic() + CATCH_UP_S
        read: list[Any] = []
        while len(read) < 6 and time.monotonic() < deadline:
            read += probe.poll(10, 0.3).items
        topic, partition = read[0].topic, read[0].partition
        probe.commit(ItemBatch([], {(topic, partition): (1000, probe._assigned[(topic, partition)])}))
    finally:
        probe.close()
    h.sql("INSERT INTO kafka_consumer_offsets (consumer_group, topic, partition, next_offset)"
          " VALUES (%s, %s, %s, 1000) RETURNING 1", (settings.consumer_group, topic, partition))
    consumer = kafka_consumer(h, settings)
    run_until([consumer], lambda: exact(h, 6))
    assert consumer.source_stats()["kafka"]["rewound"] == 1000


def test_poison_goes_to_the_dead_letter_topic_with_its_reason(
        h: Harness, settings: KafkaSettings, producer: KafkaHandoff, corpus_dir: Path) -> None:
    """On librdkafka's mock broker (not Apache Kafka): a message that is no Crashray item,
    an event that is not JSON (invalid) and an event of a project that is gone (fails on
    its own) each land on the dead-letter topic with the reason in ``crashray-error``; the
    good events around them are stored; the invalid one counts once as ``invalid``."""
    raw = Producer({"bootstrap.servers": settings.bootstrap})
    raw.produce(settings.events_topic, key=str(h.project_id).encode(), value=b"\x09junk")
    raw.flush(5)
    good = events(h, corpus_dir, "GoodNeighbour: fine", 4)
    not_json = h.item("event", b"{not json", uuid.uuid4().hex)
    gone = h.event_item(error_event(corpus_dir, "Poison: no project"),
                        project_id=h.project_id + 1)
    producer.enqueue([good[0], not_json, good[1], gone, *good[2:]])
    consumer = kafka_consumer(h, settings, max_attempts=2)
    letters = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "dlq-reader",
                        "auto.offset.reset": "earliest"})
    letters.assign([TopicPartition(settings.dead_letters_topic, p) for p in range(PARTITIONS)])
    reasons: list[bytes] = []

    def dead_letters_kept() -> bool:
        while (message := letters.poll(0.05)) is not None:
            if message.error() is None:
                reason = dict(message.headers() or [])[ERROR_HEADER]
                assert isinstance(reason, bytes)
                reasons.append(reason)
        return len(reasons) >= 3 and any(b"foreign key" in r for r in reasons)

    try:
        run_until([consumer], lambda: exact(h, 4) and dead_letters_kept())
        for _ in range(2):  # nothing more comes
            consumer.run_once()
        dead_letters_kept()
    finally:
        letters.close()
    assert len(reasons) == 3
    assert sum(b"format version 9" in r for r in reasons) == 1
    assert sum(b"foreign key" in r for r in reasons) == 1
    assert consumer.source_stats()["kafka"]["dead_lettered"] == 3
    invalid = {k: v for k, v in h.outcome_totals("error").items() if k[0] == "invalid"}
    assert sum(invalid.values()) == 1
    assert exact(h, 4)


def test_readyz_reports_the_consumer_groups_lag_and_the_brokers_being_down(
        kafka: MockKafkaCluster, h: Harness, settings: KafkaSettings, producer: KafkaHandoff,
        corpus_dir: Path) -> None:
    """On the Kafka hand-off (librdkafka's mock broker, not Apache Kafka) /readyz's
    backlog check is the consumer group's lag and its oldest waiting message, over the
    events and outcomes topics (as the pool autoscaler measures it): ready while fresh,
    unready past CRASHRAY_READY_MAX_QUEUE_AGE_S, back to 0 once consumed, and unready with
    the brokers' error, in bounded time, while they are down."""
    producer.enqueue([*events(h, corpus_dir, "Lagging: boom", 5), rate_limited_tally(h, 1)])
    meter = GroupBacklog(settings)
    try:
        config = HealthConfig(h.url, "", 300.0, 2.0, 0.0, kafka=settings)
        ready = check_readiness(config, lambda: True, meter)
        assert ready.ready and "queue" not in ready.checks
        assert ready.checks["kafka"]["backlog"] == 6
        assert 0 <= ready.checks["kafka"]["oldest_age_s"] < 60
        aged = check_readiness(replace(config, max_queue_age_s=1e-9), lambda: True, meter)
        assert not aged.ready
        assert "CRASHRAY_READY_MAX_QUEUE_AGE_S" in aged.checks["kafka"]["detail"]

        consumer = kafka_consumer(h, settings)
        # All six messages consumed (the tally too, which may come after the five events)
        # and the group's lag back to 0: run_until fails if it never gets there.
        run_until([consumer], lambda: exact(h, 5)
                  and h.outcome_totals("error").get(("rate_limited", "project_quota")) == 1
                  and meter.measure(2.0).waiting_items == 0)

        kafka.all_down()
        started = time.monotonic()
        down = check_readiness(config, lambda: True, meter)
        assert time.monotonic() - started < 3 * config.check_timeout_s + 2
        assert not down.ready and down.checks["postgres"]["ok"]
        assert not down.checks["kafka"]["ok"] and down.checks["kafka"]["detail"]
    finally:
        kafka.all_up()
        meter.close()


def test_a_reprocess_task_pauses_while_the_consumer_group_lags(
        kafka: MockKafkaCluster, h: Harness, settings: KafkaSettings, producer: KafkaHandoff,
        corpus_dir: Path) -> None:
    """``crashray reprocess`` yields to live events on the Kafka hand-off too (librdkafka's
    mock broker, not Apache Kafka): its tasks see live events waiting while the consumer
    group lags, none once the consumers caught up, and with the brokers down they go on
    (not pausing, not failing)."""
    producer.enqueue(events(h, corpus_dir, "Waiting: boom", 3))
    with psycopg.connect(h.url, autocommit=True) as conn, \
            live_events_wait(conn, settings) as waiting:
        assert waiting()
        run_until([kafka_consumer(h, settings)], lambda: exact(h, 3))
        assert not waiting()
        producer.enqueue(events(h, corpus_dir, "Waiting: again", 1))
        assert wait_until(waiting, 10, "the new event counted as waiting")
        kafka.all_down()
        try:
            started = time.monotonic()
            assert not waiting()
            assert time.monotonic() - started < 3 * KAFKA_MEASURE_TIMEOUT_S + 2
        finally:
            kafka.all_up()


@pytest.fixture
def on_ray(crashray: RunningCrashray) -> Iterator[Harness]:
    """A harness whose API reads the running Crashray's ClickHouse (its owner actor), where
    consumer actors in Ray store."""
    store = OwnerStore(crashray.runtime.clickhouse_dsn)
    yield from harness(cast(ClickHouseStore, store), "crashray_kafka_pool")


def test_the_pool_autoscaler_grows_a_kafka_pool_on_the_groups_lag(
        crashray: RunningCrashray, on_ray: Harness, settings: KafkaSettings,
        producer: KafkaHandoff, corpus_dir: Path) -> None:
    """Real Ray: an empty consumer pool on the Kafka hand-off (librdkafka's mock broker,
    not Apache Kafka) with 300 events waiting. The autoscaler measures the consumer
    group's lag, grows the pool (never past the 4 partitions, though its maximum says 8),
    the Ray consumer actors drain the topics, and every event is counted once."""
    h = on_ray
    pool = f"crashray-test-kafka-pool-{uuid.uuid4().hex[:6]}"
    name = f"{pool}-autoscaler"
    projects = add_projects(h, 4)
    producer.enqueue([i for p in projects for i in events(h, corpus_dir, "KafkaPool: lag", 75, p)])
    config = replace(crashray.runtime.consumer_config(), postgres_url=h.url, kafka=settings,
                     idle_poll_s=0.3)
    policy = PoolPolicy(min_consumers=0, max_consumers=8, scale_up_age_s=1.0, quiet_age_s=0.5,
                        min_backlog_items=20, scale_up_cooldown_s=1.0,
                        scale_down_delay_s=600.0, max_step_up=2)
    autoscaler = start_pool_autoscaler(AutoscalerConfig(policy, config, (), interval_s=0.5,
                                                        pool=pool), name=name)
    try:
        wait_until(lambda: organization_counts(h) == (300, 300), 60,
                   "every event counted once")
        stats = ray.get(autoscaler.stats.remote())
        assert stats["max"] == 4
        assert stats["changes"][0]["from"] == 0 and stats["changes"][0]["waiting"] > 0
        assert 1 <= stats["size"] <= 4
    finally:
        stop_pool_autoscaler(60.0, name=name)
        for index in range(8):
            try:
                consumer = ray.get_actor(consumer_name(index, pool), namespace=NAMESPACE)
            except ValueError:
                continue
            with contextlib.suppress(ray.exceptions.RayActorError):
                ray.get(consumer.stop.remote(), timeout=60)
            ray.kill(consumer, no_restart=True)
    assert organization_counts(h) == (300, 300)
