"""Crashray's metrics on Ray's Prometheus endpoint (real Ray, the integration suite's):
after a known load, the series carry the right values. Ray's metrics agent collects what
the workers record every few seconds (~10 s measured), so each check polls.

Each test reads the series of one process only (Ray's ``WorkerId`` label, which the
actors' ``stats()`` report), so the running Crashray's own actors never add to them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics_sampler import SAMPLER_NAME, SamplerConfig, start_metrics_sampler
from actors.notifier import start_notifier
from actors.shared_process import find
from cluster.deploy_cli import metrics_url
from events.notify import WEBHOOK_ACTION
from storage.queue import QueuedItem
from tests.integration.conftest import RunningCrashray
from tests.integration.test_notifier import Db, config, enqueue, new_delivery, receiver, settled
from tests.support import (
    corpus_event,
    envelope_bytes,
    gzip_bytes,
    migrated_project_database,
    python_sdk_headers,
    wait_until,
)

pytestmark = pytest.mark.integration

#: Seconds to wait for a value to reach the endpoint (Ray exports every few seconds).
EXPORT_WAIT_S = 60


@pytest.fixture
def metrics_db() -> Iterator[Db]:
    with migrated_project_database("crashray_metrics") as (url, scope):
        yield Db(url, scope, scope)


def endpoint() -> str:
    """This node's metrics URL, as ``crashray status`` prints it."""
    node_id = ray.get_runtime_context().get_node_id()
    [node] = [n for n in ray.nodes()  # type: ignore[no-untyped-call]
              if n["NodeID"] == node_id]
    return metrics_url(node["NodeManagerAddress"], node["MetricsExportPort"])


def series(name: str, worker_id: str, **labels: str) -> float | None:
    """The value of ``name`` recorded by one worker with ``labels``; None when absent."""
    text = httpx.get(endpoint(), timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("WorkerId") == worker_id and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def reaches(name: str, worker_id: str, expected: float, **labels: str) -> Any:
    def check() -> bool:
        return series(name, worker_id, **labels) == expected
    return check


def test_the_metrics_endpoint_serves_crashray_series(crashray: RunningCrashray) -> None:
    # The running Crashray's sampler reports the consumers it finds answering.
    sampler: Any = find(SAMPLER_NAME)  # on one node, a part of the shared process
    worker: str = ray.get(sampler.stats.remote(), timeout=30)["worker_id"]
    wait_until(lambda: (series("ray_crashray_consumers_alive", worker) or 0) >= 1,
               EXPORT_WAIT_S, interval_s=1.0,
               what="the consumers-alive gauge on Ray's endpoint")
    assert series("ray_crashray_queue_oldest_age_seconds", worker) is not None
    free = series("ray_crashray_data_disk_free_bytes", worker)
    assert free is not None and free > 0


def test_delivered_notifications_and_a_restart_are_counted(
        crashray: RunningCrashray, metrics_db: Db) -> None:
    actor = start_notifier(config(metrics_db, lease_s=2.0),
                           name=f"crashray-test-notifier-{uuid.uuid4().hex[:6]}")
    try:
        with receiver() as server:
            action = {"id": WEBHOOK_ACTION, "url": server.url("/hook")}
            ids = enqueue(metrics_db, *[new_delivery(metrics_db.project, action)
                                        for _ in range(3)])
            wait_until(settled(metrics_db, ids), 30, "three deliveries")
            first: str = ray.get(actor.stats.remote(), timeout=30)["worker_id"]
            wait_until(reaches("ray_crashray_notifications_total", first, 3.0, kind="webhook",
                               outcome="delivered"),
                       EXPORT_WAIT_S, interval_s=1.0,
                       what="3 delivered webhooks on Ray's endpoint")
            assert series("ray_crashray_notification_send_seconds_count", first,
                          kind="webhook") == 3.0
            # Its first start is no restart.
            assert series("ray_crashray_actor_restarts_total", first, actor="notifier") is None

            ray.kill(actor, no_restart=False)
            second = wait_until(lambda: _new_worker(actor, first), 60,
                                "the notifier restarted by Ray")
            wait_until(reaches("ray_crashray_actor_restarts_total", second, 1.0,
                               actor="notifier"),
                       EXPORT_WAIT_S, interval_s=1.0,
                       what="the notifier's restart on Ray's endpoint")
    finally:
        ray.get(actor.stop.remote(), timeout=60)
        ray.kill(actor, no_restart=True)


def test_sampler_reports_dead_letters_and_queue(crashray: RunningCrashray,
                                                metrics_db: Db) -> None:
    scope = metrics_db.project
    with psycopg.connect(metrics_db.url) as conn:
        for item_id, item_type in ((1, "event"), (2, "event"), (3, "transaction")):
            conn.execute(
                "INSERT INTO ingest_dead_letters (id, project_id, organization_id, item_type,"
                " received_at, meta, payload, attempts, error)"
                " VALUES (%s, %s, %s, %s, now(), '{}', '', 3, 'poison')",
                (item_id, scope.id, scope.organization_id, item_type))
        for _ in range(4):
            conn.execute("INSERT INTO ingest_queue (project_id, organization_id, item_type,"
                         " received_at, meta, payload) VALUES (%s, %s, 'event',"
                         " now() - interval '90 seconds', '{}', '')",
                         (scope.id, scope.organization_id))
    name = f"crashray-test-sampler-{uuid.uuid4().hex[:6]}"
    sampler = start_metrics_sampler(SamplerConfig(
        metrics_db.url, interval_s=0.5, queue_count_cap=1000,
        data_dir=str(crashray.settings.data_dir), consumer_pool="crashray-test-nopool"),
        name=name)
    try:
        worker: str = ray.get(sampler.stats.remote(), timeout=30)["worker_id"]
        wait_until(reaches("ray_crashray_dead_letters", worker, 2.0, item_type="event"),
                   EXPORT_WAIT_S, interval_s=1.0,
                   what="2 event dead letters on Ray's endpoint")
        assert series("ray_crashray_dead_letters", worker, item_type="transaction") == 1.0
        assert series("ray_crashray_queue_waiting_items", worker) == 4.0
        age = series("ray_crashray_queue_oldest_age_seconds", worker)
        assert age is not None and 90 <= age < 90 + EXPORT_WAIT_S + 30
        assert series("ray_crashray_consumers_alive", worker) == 0.0

        with psycopg.connect(metrics_db.url) as conn:  # replayed away: the gauge reads 0
            conn.execute("DELETE FROM ingest_dead_letters WHERE item_type = 'transaction'")
        wait_until(reaches("ray_crashray_dead_letters", worker, 0.0, item_type="transaction"),
                   EXPORT_WAIT_S, interval_s=1.0,
                   what="the transaction dead letters back to 0")
    finally:
        ray.get(sampler.stop.remote(), timeout=60)
        ray.kill(sampler, no_restart=True)


def _new_worker(actor: Any, before: str) -> str | None:
    try:
        worker: str = ray.get(actor.stats.remote(), timeout=5)["worker_id"]
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None
    return worker if worker != before else None


@ray.remote(num_cpus=0)
def _answer_requests() -> str:
    """What ingest records for: 2 accepted envelopes (an event; an event and a 10-byte
    attachment), one whose transaction a quota refused while its event was queued, and
    one refused as too large before its items were read."""
    import time

    from events.errors import PayloadTooLarge, RateLimited
    from events.quotas import RateLimit
    from serve_apps.ingest_metrics import endpoint_of, record_answer

    def item(item_type: str, size: int = 2) -> QueuedItem:
        return QueuedItem(1, 1, 1, item_type, None, dt.datetime.now(dt.UTC), b"x" * size)

    endpoint = endpoint_of("/api/1/envelope/")
    record_answer(endpoint, time.perf_counter(), [item("event")])
    record_answer(endpoint, time.perf_counter(), [item("event"), item("attachment", 10)])
    limit = RateLimit(frozenset({"transaction"}), "project", "quota", 60)
    record_answer(endpoint, time.perf_counter(), [item("event"), item("transaction")],
                  [limit], RateLimited("rate limited", 60, "60:transaction:project"))
    record_answer(endpoint_of("/api/1/store/"), time.perf_counter(), [],
                  error=PayloadTooLarge("too large"))
    return str(ray.get_runtime_context().get_worker_id())


def test_ingest_answers_are_counted_by_outcome_reason_and_category(
        crashray: RunningCrashray) -> None:
    worker = ray.get(_answer_requests.remote(), timeout=60)
    wait_until(reaches("ray_crashray_ingest_requests_total", worker, 2.0,
                       endpoint="envelope", outcome="accepted", reason=""),
               EXPORT_WAIT_S, interval_s=1.0, what="2 accepted envelopes on Ray's endpoint")
    expected = {
        ("ray_crashray_ingest_requests_total", (("endpoint", "envelope"),
                                                ("outcome", "refused"),
                                                ("reason", "rate_limited"))): 1.0,
        ("ray_crashray_ingest_requests_total", (("endpoint", "store"), ("outcome", "refused"),
                                                ("reason", "too_large"))): 1.0,
        ("ray_crashray_ingest_items_total", (("category", "error"), ("outcome", "accepted"),
                                             ("reason", ""))): 3.0,
        ("ray_crashray_ingest_items_total", (("category", "attachment"),
                                             ("outcome", "accepted"), ("reason", ""))): 10.0,
        ("ray_crashray_ingest_items_total", (("category", "transaction"),
                                             ("outcome", "refused"),
                                             ("reason", "rate_limited"))): 1.0,
        ("ray_crashray_ingest_accept_seconds_count", (("endpoint", "envelope"),
                                                      ("outcome", "accepted"))): 2.0,
    }
    seen = {key: series(key[0], worker, **dict(key[1])) for key in expected}
    assert seen == expected


def totals(name: str, **labels: str) -> float:
    """``name`` summed over every worker's series with ``labels``."""
    text = httpx.get(endpoint(), timeout=10).text
    return sum(float(sample.value) for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name
               and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_sent_events_are_counted_from_ingest_to_clickhouse(crashray: RunningCrashray,
                                                            corpus_dir: Path) -> None:
    accepted = {"endpoint": "envelope", "outcome": "accepted", "reason": ""}
    before = {"requests": totals("ray_crashray_ingest_requests_total", **accepted),
              "rows": totals("ray_crashray_clickhouse_insert_rows_total", table="events"),
              **{stage: totals("ray_crashray_stage_seconds_count", stage=stage)
                 for stage in ("normalize", "scrub", "group", "insert")}}
    for _ in range(3):
        response = httpx.post(f"{crashray.base_url}/api/1/envelope/",
                              content=gzip_bytes(envelope_bytes(corpus_event(corpus_dir))),
                              headers=python_sdk_headers(crashray.public_key), timeout=10)
        assert response.status_code == 200, response.text
    wait_until(lambda: totals("ray_crashray_clickhouse_insert_rows_total", table="events")
               - before["rows"] == 3, EXPORT_WAIT_S, interval_s=1.0,
               what="3 event rows inserted, on Ray's endpoint")
    wait_until(lambda: totals("ray_crashray_ingest_requests_total", **accepted)
               - before["requests"] == 3, EXPORT_WAIT_S, interval_s=1.0,
               what="3 accepted envelopes, on Ray's endpoint")
    # Each worker's figures reach the endpoint on their own schedule: the consumer's may
    # come a few seconds after the ClickHouse owner's.
    for stage in ("normalize", "scrub", "group", "insert"):
        wait_until(_timed(stage, before[stage]), EXPORT_WAIT_S, interval_s=1.0,
                   what=f"the {stage} stage timed, on Ray's endpoint")
    assert totals("ray_crashray_consumer_items_total", item_type="event",
                  outcome="claimed") >= 3


def _timed(stage: str, before: float) -> Any:
    return lambda: totals("ray_crashray_stage_seconds_count", stage=stage) > before


def test_a_worker_with_metrics_disabled_records_nothing(crashray: RunningCrashray) -> None:
    """``CRASHRAY_METRICS_ENABLED=false`` (what bench/ingest.py's on/off comparison sets):
    the same answers recorded in a worker that sees it make no series; the worker beside
    it, with the setting absent, does. Last in this file: its task workers, once idle, are
    ended by Ray and take their series with them, which would move the totals the tests
    above compare."""
    off = _answer_requests.options(  # type: ignore[attr-defined]
        runtime_env={"env_vars": {"CRASHRAY_METRICS_ENABLED": "false"}})
    worker = ray.get(off.remote(), timeout=120)
    # A worker of its own (an env var nothing reads): a task worker an earlier test used
    # already holds that test's 2 answers, and would show 4.
    fresh = _answer_requests.options(  # type: ignore[attr-defined]
        runtime_env={"env_vars": {"CRASHRAY_TEST_FRESH_WORKER": uuid.uuid4().hex}})
    on = ray.get(fresh.remote(), timeout=120)
    assert worker != on
    wait_until(reaches("ray_crashray_ingest_requests_total", on, 2.0,
                       endpoint="envelope", outcome="accepted", reason=""),
               EXPORT_WAIT_S, interval_s=1.0, what="the enabled worker's answers exported")
    assert series("ray_crashray_ingest_requests_total", worker, endpoint="envelope",
                  outcome="accepted", reason="") is None
