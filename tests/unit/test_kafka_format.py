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
