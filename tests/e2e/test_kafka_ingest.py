"""``crashray up`` with the Kafka hand-off (``CRASHRAY_KAFKA_BOOTSTRAP``): the real Serve
ingest answers 200 only once the brokers acknowledged the items, and 503 with
``Retry-After`` within the delivery bound while they are down; the consumer actors (Ray)
read the topics as one consumer group and the events reach ClickHouse and the API.

The brokers are librdkafka's mock broker (tests/support_kafka.py, the mock cluster in the
librdkafka of the confluent-kafka wheel, in a process of its own), NOT Apache Kafka: no
Apache Kafka broker can be installed on these machines. Some tests also read the events
topic themselves, as members of groups of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from storage.kafka import KafkaItemSource, KafkaSettings
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import envelope_bytes, free_port, python_sdk_headers, scratch_database
from tests.support_kafka import MockKafkaCluster

HERE = Path(__file__).resolve().parent
DELIVERY_TIMEOUT_S = 2.0
#: enqueue's bound (delivery timeout + 1 s) and room for HTTP and a busy machine.
ANSWER_BOUND_S = DELIVERY_TIMEOUT_S + 1.0 + 2.0


@pytest.fixture(scope="module")
def kafka() -> Iterator[MockKafkaCluster]:
    """librdkafka's mock cluster (not Apache Kafka), with Crashray's topics."""
    cluster = MockKafkaCluster(3)
    names = KafkaSettings(bootstrap=cluster.bootstrap)
    for topic in (names.events_topic, names.outcomes_topic, names.dead_letters_topic):
        assert cluster.create_topic(topic, 4, 3) == 0
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def crashray_kafka(kafka: MockKafkaCluster, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[CrashrayProcess]:
    data_dir: Path = tmp_path_factory.mktemp("kafka-e2e")
    with scratch_database("crashray_kafka") as url:
        instance = start_crashray(data_dir, free_port(), env={
            "CRASHRAY_POSTGRES_URL": url, "CRASHRAY_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "CRASHRAY_KAFKA_PARTITIONS": "4",
            "CRASHRAY_KAFKA_DELIVERY_TIMEOUT_S": str(DELIVERY_TIMEOUT_S),
            "CRASHRAY_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "CRASHRAY_CONSUMERS": "2", "CRASHRAY_DETECTORS": "[]"})
        try:
            yield instance
        finally:
            code = stop_crashray(instance)
            assert code == 0, "".join(instance.output[-40:])


def api(c: CrashrayProcess, path: str) -> Any:
    request = urllib.request.Request(f"{c.base_url}/api/0/projects/crashray/default/{path}",
                                     headers={"Authorization": f"Bearer {c.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def readyz(c: CrashrayProcess) -> Any:
    try:
        with urllib.request.urlopen(f"{c.base_url}/readyz", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def wait_for(what: str, found: Any, timeout_s: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def post_event(c: CrashrayProcess) -> tuple[int, dict[str, str], bytes, float]:
    """POST one envelope as the Python SDK frames it: status, headers (lower-case
    names), body, seconds."""
    public_key = c.dsn.split("//", 1)[1].split("@", 1)[0]
    project = c.dsn.rsplit("/", 1)[1]
    event_id = uuid.uuid4().hex
    request = urllib.request.Request(
        f"{c.base_url}/api/{project}/envelope/", method="POST",
        data=envelope_bytes({"message": "kafka e2e", "level": "error"}, event_id),
        headers=python_sdk_headers(public_key, gzipped=False))
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read(), \
                time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read(), time.monotonic() - started


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def read_event_ids(kafka: MockKafkaCluster, want: set[str], group: str) -> set[str | None]:
    """Event ids on the events topic, read as a member of ``group`` until ``want`` is seen
    (or 20 s)."""
    settings = KafkaSettings(bootstrap=kafka.bootstrap, consumer_group=group,
                             session_timeout_ms=3000)
    source = KafkaItemSource(settings, topics=[settings.events_topic])
    read: set[str | None] = set()
    try:
        deadline = time.monotonic() + 20
        while not want <= read and time.monotonic() < deadline:
            read |= {r.item.event_id for r in source.poll(100, 0.5).items}
    finally:
        source.close()
    return read


def test_real_python_sdk_events_reach_the_events_topic(
        kafka: MockKafkaCluster, crashray_kafka: CrashrayProcess) -> None:
    """The official sentry-sdk (in its own process) sends two exceptions through the Serve
    ingest; both are on the events topic of librdkafka's mock cluster (not Apache Kafka),
    keyed by their project, whole."""
    result = subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"),
                             "kafka-e2e", "2"],
                            env={**os.environ, "CRASHRAY_DSN": crashray_kafka.dsn},
                            capture_output=True, text=True, timeout=60, check=True)
    ids = {i.replace("-", "") for i in json.loads(result.stdout.strip().splitlines()[-1])}
    assert len(ids) == 2
    assert ids <= read_event_ids(kafka, ids, "e2e-sdk-reader")


def test_real_python_sdk_events_through_kafka_reach_clickhouse_and_the_api(
        crashray_kafka: CrashrayProcess) -> None:
    """The official sentry-sdk sends three exceptions; ingest hands them to Kafka
    (librdkafka's mock broker, not Apache Kafka), the consumer actors read them as one
    consumer group, and the API shows one issue counted 3 whose events (from ClickHouse)
    are the SDK's, each once."""
    result = subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"),
                             "via-kafka", "3", "KafkaE2EError"],
                            env={**os.environ, "CRASHRAY_DSN": crashray_kafka.dsn},
                            capture_output=True, text=True, timeout=60, check=True)
    ids = {i.replace("-", "") for i in json.loads(result.stdout.strip().splitlines()[-1])}
    title = "KafkaE2EError: card via-kafka declined"
    issue = wait_for("one issue counted 3", lambda: next(
        (i for i in api(crashray_kafka, "issues/?query=")
         if i["title"] == title and i["count"] == "3"), None))
    events = [e for e in api(crashray_kafka, "events/") if e["groupID"] == issue["id"]]
    assert sorted(e["eventID"] for e in events) == sorted(ids)
    # /readyz measures the consumer group's lag instead of the PostgreSQL queue.
    ready = wait_for("/readyz with the Kafka lag at 0", lambda: (
        body := readyz(crashray_kafka))["checks"].get("kafka", {}).get("backlog") == 0
        and body)
    assert ready["status"] == "ready" and "queue" not in ready["checks"]


def test_serve_ingest_answers_200_after_the_brokers_acknowledged_and_503_when_down(
        kafka: MockKafkaCluster, crashray_kafka: CrashrayProcess) -> None:
    """Through the real Serve ingest, over librdkafka's mock cluster (not Apache Kafka):
    a 200 means the event is already on the events topic; with every broker down the
    answer is 503 with ``Retry-After`` within the bound; once they are back, 200 again."""
    status, _, body, _ = post_event(crashray_kafka)
    assert status == 200, body
    event_id = orjson.loads(body)["id"]
    assert event_id in read_event_ids(kafka, {event_id}, "e2e-reader")
    accepted = {event_id}

    kafka.all_down()
    try:
        status, headers, body, elapsed = post_event(crashray_kafka)
    finally:
        kafka.all_up()
    assert status == 503, body
    assert headers["retry-after"] == "10"
    assert elapsed < ANSWER_BOUND_S
    assert b"CRASHRAY_KAFKA_DELIVERY_TIMEOUT_S" in body or b"Kafka" in body

    deadline = time.monotonic() + 30
    while (answer := post_event(crashray_kafka))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer[0] == 200
    accepted.add(orjson.loads(answer[2])["id"])
    # Nothing acknowledged is lost: the consumers stored both events (ClickHouse, API).
    wait_for("both accepted events in the API", lambda: accepted <= {
        e["eventID"] for e in api(crashray_kafka, "events/")})
