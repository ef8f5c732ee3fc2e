"""librdkafka's mock cluster, for the Kafka tests: NOT Apache Kafka.

No Apache Kafka broker can be installed on these machines. The librdkafka inside the
confluent-kafka wheel (``confluent_kafka.libs/librdkafka-*.so``) carries a mock cluster that
speaks the Kafka protocol on real TCP ports (produce, fetch, consumer groups, offsets,
idempotent producers); ``rd_kafka_mock_cluster_new`` starts it inside the process that
calls it. Its partitions live in memory (a few MB each) and it enforces no retention:
``delete_records`` stands in for retention deleting old segments.

``MockKafkaCluster`` starts it in a process of its own (``python -m tests.support_kafka``),
so that a test can take its brokers down and up while its own clients keep running, and
so that librdkafka's mock threads never share the test process. The two talk over the
child's stdin/stdout, one command per line, each answered ``ok <librdkafka error code>``.

Mock-cluster functions used (rdkafka_mock.h): ``rd_kafka_mock_cluster_new``,
``_cluster_bootstraps``, ``_cluster_destroy``, ``_broker_set_down`` / ``_up``,
``_topic_create``, ``_partition_delete_records``, ``_push_request_errors_array``,
``_group_initial_rebalance_delay_ms``.
"""

from __future__ import annotations

import ctypes
import glob
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import confluent_kafka

if TYPE_CHECKING:
    from storage.kafka import KafkaHandoff
    from storage.queue import QueuedItem

#: librdkafka's ``rd_kafka_type_t`` RD_KAFKA_PRODUCER.
_RD_KAFKA_PRODUCER = 0
#: The mock cluster's wait before a new consumer group's first assignment.
INITIAL_REBALANCE_DELAY_MS = 100
#: Seconds the mock cluster's process may take to print its bootstrap servers.
START_TIMEOUT_S = 30.0
#: Seconds a producer may take to deliver again once every broker is back up. librdkafka
#: reconnects and refreshes its metadata after backoffs of its own: measured here, the
#: first batch after 10 s down was acknowledged 1.0-2.0 s after the brokers came back,
#: and longer on a busy CI machine, past one ``enqueue``'s bound.
RECOVERY_S = 15.0
#: Between two tries of ``enqueue_once_back`` (a refusal can come at once: a full buffer).
RETRY_PAUSE_S = 0.2


def librdkafka_path() -> str:
    """The librdkafka shared object bundled in the confluent-kafka wheel (what
    ``ldd cimpl.so`` resolves), which holds the mock cluster."""
    package = Path(confluent_kafka.__file__).parent
    found = sorted(glob.glob(str(package.parent / "confluent_kafka.libs" / "librdkafka*.so*")))
    if not found:
        raise RuntimeError(f"no librdkafka in {package.parent / 'confluent_kafka.libs'}: the"
                           " confluent-kafka wheel should bundle it (pip install"
                           " confluent-kafka==2.16.1)")
    return found[0]


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    vp, cp, i32, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int64
    signatures: dict[str, tuple[object, list[object]]] = {
        "rd_kafka_conf_new": (vp, []),
        "rd_kafka_conf_set": (ctypes.c_int, [vp, cp, cp, cp, ctypes.c_size_t]),
        "rd_kafka_new": (vp, [ctypes.c_int, vp, cp, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_new": (vp, [vp, ctypes.c_int]),
        "rd_kafka_mock_cluster_destroy": (None, [vp]),
        "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
        "rd_kafka_mock_broker_set_down": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_broker_set_up": (ctypes.c_int, [vp, i32]),
        "rd_kafka_mock_topic_create": (ctypes.c_int, [vp, cp, ctypes.c_int, ctypes.c_int]),
        "rd_kafka_mock_partition_delete_records": (ctypes.c_int, [vp, cp, i32, i64]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [vp, i32]),
        "rd_kafka_mock_push_request_errors_array": (
            None, [vp, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def serve(broker_count: int) -> None:
    """The mock cluster's process: start it, print its bootstrap servers, then run the
    commands read from stdin until ``quit`` or end of input, and destroy it."""
    lib = _bind(ctypes.CDLL(librdkafka_path()))
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    # The handle only hosts the cluster: keep its logs quiet.
    lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, 512)
    rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, 512)
    if not rk:
        raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
    mcluster = lib.rd_kafka_mock_cluster_new(rk, broker_count)
    if not mcluster:
        raise RuntimeError("rd_kafka_mock_cluster_new failed")
    # The mock waits 3 s (Kafka's group.initial.rebalance.delay.ms) before a new group's
    # first assignment; tests join groups often.
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, INITIAL_REBALANCE_DELAY_MS)
    print(lib.rd_kafka_mock_cluster_bootstraps(mcluster).decode(), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            print(f"ok {_run(lib, mcluster, words)}", flush=True)
    finally:
        lib.rd_kafka_mock_cluster_destroy(mcluster)
        lib.rd_kafka_destroy(rk)


def _run(lib: ctypes.CDLL, mcluster: int, words: Sequence[str]) -> int:
    command, args = words[0], words[1:]
    if command == "down":
        return int(lib.rd_kafka_mock_broker_set_down(mcluster, int(args[0])))
    if command == "up":
        return int(lib.rd_kafka_mock_broker_set_up(mcluster, int(args[0])))
    if command == "topic":
        return int(lib.rd_kafka_mock_topic_create(mcluster, args[0].encode(), int(args[1]),
                                                  int(args[2])))
    if command == "delete_records":
        return int(lib.rd_kafka_mock_partition_delete_records(
            mcluster, args[0].encode(), int(args[1]), int(args[2])))
    if command == "errors":
        codes = [int(c) for c in args[1:]]
        array = (ctypes.c_int * len(codes))(*codes)
        lib.rd_kafka_mock_push_request_errors_array(mcluster, int(args[0]), len(codes), array)
        return 0
    raise ValueError(f"unknown mock cluster command {command!r}")


class MockKafkaCluster:
    """librdkafka's mock cluster (not Apache Kafka) in a process of its own; brokers are
    numbered 1 to ``broker_count``."""

    def __init__(self, broker_count: int = 3) -> None:
        self.broker_count = broker_count
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support_kafka", str(broker_count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line:
            self._process.kill()
            raise RuntimeError("librdkafka's mock cluster did not start (see stderr above)")
        #: ``host:port,…`` of the mock brokers, for ``bootstrap.servers``.
        self.bootstrap = line

    def _command(self, *words: object) -> int:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(" ".join(str(w) for w in words) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline().split()
        if answer[:1] != ["ok"]:
            raise RuntimeError(f"mock cluster command {words} failed: {answer}")
        return int(answer[1])

    def set_down(self, broker_id: int) -> None:
        """The broker closes its connections and refuses new ones until ``set_up``."""
        self._command("down", broker_id)

    def set_up(self, broker_id: int) -> None:
        self._command("up", broker_id)

    def all_down(self) -> None:
        for broker_id in range(1, self.broker_count + 1):
            self.set_down(broker_id)

    def all_up(self) -> None:
        for broker_id in range(1, self.broker_count + 1):
            self.set_up(broker_id)

    def create_topic(self, topic: str, partitions: int, replication_factor: int = 1) -> int:
        return self._command("topic", topic, partitions, replication_factor)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete a partition's records below ``before_offset``: what retention does to
        old segments (the low watermark moves up)."""
        return self._command("delete_records", topic, partition, before_offset)

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        """The next requests of ``api_key`` (Kafka protocol ApiKey) fail with ``errors``."""
        self._command("errors", api_key, *errors)

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write("quit\n")
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()


def mock_kafka_cluster(broker_count: int = 3) -> Iterator[MockKafkaCluster]:
    """Fixture body: a mock cluster (librdkafka's, not Apache Kafka) for one test."""
    cluster = MockKafkaCluster(broker_count)
    try:
        yield cluster
    finally:
        cluster.close()


def enqueue_once_back(producer: KafkaHandoff, items: Sequence[QueuedItem],
                      within_s: float = RECOVERY_S) -> None:
    """Once the brokers are back, hand ``items`` off as an SDK does after a 503: again, the
    same items, until they are acknowledged; fail if that takes more than ``within_s``."""
    from storage.kafka import HandOffUnavailable
    from tests.support import wait_until

    def handed_off() -> bool:
        try:
            producer.enqueue(items)
        except HandOffUnavailable:
            return False
        return True

    wait_until(handed_off, within_s, "the brokers back to acknowledge the items",
               RETRY_PAUSE_S)


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
