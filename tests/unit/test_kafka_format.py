"""The Kafka hand-off's message format (storage/kafka.py, version 1) and its settings; no
broker needed."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from cluster.settings import Settings
from storage.kafka import (
    FORMAT_VERSION,
    KafkaHandoff,
    KafkaSettings,
    UndecodableMessage,
    decode_item,
    encode_item,
    producer_config,
    topic_of,
)
from storage.queue import QueuedItem, UnqueueableData

ITEM = QueuedItem(project_id=42, organization_id=7, key_id=None, item_type="event",
                  event_id="a" * 32,
                  received_at=dt.datetime(2026, 12, 4, 20, 1, 2, 345678, tzinfo=dt.UTC),
                  payload=b'{"message": "boom"}\x00\xff\n',
                  meta={"client_ip": None, "sent_at": "2026-12-04T20:01:00Z",
                        "item_headers": {"type": "event", "length": 22}})


def test_an_item_survives_the_format_whole() -> None:
    value = encode_item(ITEM)
    assert value[0] == FORMAT_VERSION == 1
    assert value.endswith(ITEM.payload)
    assert decode_item(value) == ITEM


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty message value"),
    (b"\x02whatever", "format version 2 is not 1"),
    (b"\x01\x00", "shorter than the framing"),
    (b"\x01\x00\x00\x00\x50{}", "header length 80 but only 2 bytes follow"),
    (b"\x01\x00\x00\x00\x02{}", "KeyError"),
    (b"\x01\x00\x00\x00\x03{x}", "JSONDecodeError"),
])
def test_a_message_that_is_no_item_names_what_is_wrong(value: bytes, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        decode_item(value)


def test_unencodable_meta_is_refused_as_data_before_any_broker_is_asked() -> None:
    """As the PostgreSQL queue refuses it (400, the hand-off's halving finds its request);
    the bootstrap is a closed port: no broker is involved."""
    handoff = KafkaHandoff(KafkaSettings(bootstrap="127.0.0.1:1"))
    try:
        with pytest.raises(UnqueueableData, match="cannot encode"):
            handoff.enqueue([replace(ITEM, meta={"x": 1 << 70})])
    finally:
        handoff.close(0.1)


def test_outcome_tallies_go_to_their_own_topic() -> None:
    settings = KafkaSettings(bootstrap="b:9092")
    assert topic_of(ITEM, settings) == "crashray-events"
    outcomes = QueuedItem(1, 1, None, "outcomes", None, ITEM.received_at, b"[]")
    assert topic_of(outcomes, settings) == "crashray-outcomes"


def test_settings_choose_kafka_only_with_a_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kafka() is None
    monkeypatch.setenv("CRASHRAY_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("CRASHRAY_KAFKA_DELIVERY_TIMEOUT_S", "3")
    monkeypatch.setenv("CRASHRAY_KAFKA_RETENTION_BYTES", str(2 << 30))
    kafka = Settings().kafka()
    assert kafka is not None and kafka.bootstrap == "k1:9092,k2:9092"
    assert kafka.retention_bytes == 2 << 30
    config = producer_config(kafka)
    # The request's wait is bounded by librdkafka's own message timeout.
    assert config["message.timeout.ms"] == 3000
    assert config["enable.idempotence"] is True and config["acks"] == "all"


# --- the consumers' side (actors/kafka_consumer.py, actors/pool_autoscaler.py) ----------

def test_kafka_queue_ids_are_stable_distinct_and_apart_from_postgres_ids() -> None:
    """A message's queue id (what keys its ClickHouse session and raw-item rows across
    re-deliveries) depends only on where it lies, differs for every topic, partition and
    offset, fits ClickHouse's UInt64 and PostgreSQL's bigint, and never meets the
    PostgreSQL queue's ids."""
    from actors.kafka_consumer import KAFKA_QUEUE_ID_BIT, kafka_queue_id

    ids = {kafka_queue_id(t, p, o) for t in (0, 1) for p in (0, 1, 11, 65_535)
           for o in (0, 1, 2**40 - 1)}
    assert len(ids) == 2 * 4 * 3
    assert kafka_queue_id(1, 3, 7) == kafka_queue_id(1, 3, 7)
    assert all(KAFKA_QUEUE_ID_BIT <= i < 2**63 for i in ids)
    with pytest.raises(ValueError, match="offset 1099511627776"):
        kafka_queue_id(0, 0, 2**40)


def test_the_pool_maximum_is_bounded_by_the_partitions_on_kafka() -> None:
    """A consumer group gives each partition to one member: on Kafka the autoscaler's
    maximum is lowered to the partitions (never below its minimum); on the PostgreSQL
    queue it stays."""
    from actors.consumer import ConsumerConfig
    from actors.pool_autoscaler import AutoscalerConfig, kafka_bounded
    from events.pool_scaling import PoolPolicy

    policy = PoolPolicy(min_consumers=2, max_consumers=16, scale_up_age_s=10.0,
                        quiet_age_s=2.0, min_backlog_items=10, scale_up_cooldown_s=5.0,
                        scale_down_delay_s=30.0)
    consumer = ConsumerConfig("postgresql://unused", "chdb:unused", 100, 30.0, 3, 90, 1.0,
                              0.1, 86_400.0)
    on_postgres = AutoscalerConfig(policy, consumer, (), 5.0)
    assert kafka_bounded(on_postgres) == on_postgres
    on_kafka = replace(on_postgres, consumer=replace(
        consumer, kafka=KafkaSettings(bootstrap="k:9092", partitions=6)))
    assert kafka_bounded(on_kafka).policy.max_consumers == 6
    few = replace(on_kafka, consumer=replace(
        consumer, kafka=KafkaSettings(bootstrap="k:9092", partitions=1)))
    assert kafka_bounded(few).policy.max_consumers == 2
