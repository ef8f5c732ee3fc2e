"""At-least-once delivery that loses nothing and counts nothing twice: consumers killed
mid-batch, a crash between the ClickHouse insert and the PostgreSQL commit, sessions and
client reports accounted for."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import ray

from actors.clickhouse import clickhouse_store
from actors.consumer import BatchConsumer, ConsumerConfig
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres
from storage.bootstrap import bootstrap
from storage.queue import PostgresQueue, QueuedItem
from tests.integration.conftest import RunningCrashray
from tests.support import (
    corpus_event,
    envelope_bytes,
    gzip_bytes,
    python_sdk_headers,
    scratch_database,
    wait_until,
)

pytestmark = pytest.mark.integration


def queue_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM ingest_queue").fetchone()
    return int(row[0]) if row else 0


def post_envelope(c: RunningCrashray, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{c.base_url}/api/1/envelope/", content=body, headers=headers, timeout=10)


def send_events(c: RunningCrashray, events: list[tuple[dict[str, Any], str]]) -> list[int]:
    headers = python_sdk_headers(c.public_key)
    with httpx.Client(timeout=30) as client:
        def send(pair: tuple[dict[str, Any], str]) -> int:
            body = gzip_bytes(envelope_bytes(pair[0], pair[1]))
            return client.post(f"{c.base_url}/api/1/envelope/", content=body,
                               headers=headers).status_code
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(send, events))


def stored_counts(c: RunningCrashray, event_ids: list[str]) -> tuple[int, int]:
    """(distinct stored events among ``event_ids``, the issue counters' total for them)."""
    store = clickhouse_store(c.runtime.clickhouse_dsn)
    distinct = store.query_rows(
        "SELECT uniqExact(event_id) FROM events WHERE project_id = 1"
        " AND event_id IN {ids:Array(UUID)}", {"ids": event_ids})[0][0]
    with psycopg.connect(c.runtime.postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM processed_events WHERE project_id = 1"
                           " AND event_id = ANY(%s)", (event_ids,)).fetchone()
    return int(distinct), int(row[0]) if row else 0


def test_killing_a_consumer_mid_batch_loses_and_duplicates_nothing(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:6]
    base = corpus_event(corpus_dir)
    events = [({**base, "exception": {"values": [{"type": f"Kill{marker}{n % 7}",
                                                  "value": "boom"}]}}, uuid.uuid4().hex)
              for n in range(600)]
    issue_before = _times_seen_total(crashray, f"Kill{marker}%")
    victim = ray.get_actor("crashray-consumer-0", namespace="crashray")
    with concurrent.futures.ThreadPoolExecutor(1) as sender:
        sending = sender.submit(send_events, crashray, events)
        # Kill the consumer while it is working through the flood, not between floods.
        wait_until(lambda: not ray.get(victim.stats.remote())["idle"], 30,
                   "the consumer to be busy")
        ray.kill(victim, no_restart=False)  # Ray restarts it; its batch is re-leased
        assert sending.result() == [200] * len(events)
    ids = [event_id for _, event_id in events]
    wait_until(lambda: stored_counts(crashray, ids) == (600, 600), 90,
               "all 600 events stored and counted once")
    assert _times_seen_total(crashray, f"Kill{marker}%") - issue_before == 600
    wait_until(lambda: ray.get(victim.stats.remote(), timeout=30), 60,
               "the killed consumer to be back")


def _times_seen_total(c: RunningCrashray, title_like: str) -> int:
    with psycopg.connect(c.runtime.postgres_url) as conn:
        row = conn.execute("SELECT coalesce(sum(times_seen), 0) FROM issues WHERE title LIKE %s",
                           (title_like,)).fetchone()
    return int(row[0]) if row else 0


class CrashAfterInsert:
    """A real store that 'crashes' (raises) right after the batch's last ClickHouse insert,
    before the consumer can commit to PostgreSQL — the worst moment for duplicates."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:  # everything else: the real store's
        return getattr(self.store, name)

    def insert_batch(self, tables: Any) -> int:
        inserted: int = self.store.insert_batch(tables)
        raise RuntimeError(f"simulated crash after the ClickHouse insert of {inserted} rows")


def test_crash_between_clickhouse_insert_and_commit_counts_each_event_once(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    # A queue of its own (a second database), so the session's consumers leave it alone;
    # ClickHouse is the session's real engine.
    with scratch_database("crashray_crash") as url:
        postgres.migrate(url)
        with postgres.connect(url) as conn:
            bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
        ids = [uuid.uuid4().hex for _ in range(40)]
        event = corpus_event(corpus_dir)
        now = dt.datetime.now(dt.UTC)
        PostgresQueue(url).enqueue([
            *(QueuedItem(1, 1, 1, "event", i, now, orjson.dumps({**event, "event_id": i}), {})
              for i in ids),
            QueuedItem(1, 1, 1, "attachment", ids[0], now, b"log line",
                       {"item_headers": {"type": "attachment", "filename": "app.log"}})])
        real = clickhouse_store(crashray.runtime.clickhouse_dsn)
        config = ConsumerConfig(postgres_url=url, clickhouse_dsn=crashray.runtime.clickhouse_dsn,
                                batch_items=100, lease_s=0.5, max_attempts=5,
                                retention_days=90, idle_poll_s=0.5, batch_wait_s=0.0,
                                dedup_window_s=86_400)
        crashing = BatchConsumer(config, store=CrashAfterInsert(real))
        with pytest.raises(RuntimeError, match="simulated crash"):
            crashing.run_once()
        assert queue_size(url) == 41  # nothing acknowledged
        time.sleep(0.6)  # the crashed consumer's lease runs out
        healthy = BatchConsumer(config)
        assert healthy.run_once() == 41
        assert queue_size(url) == 0
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT sum(times_seen), count(*) FROM issues").fetchone()
        assert row == (40, 1)
        listed = real.list_events(1, 1, 1000)
        assert len([e for e in listed if e.event_id in set(ids)]) == 40  # de-duplicated
        kept = real.query_rows("SELECT count() FROM envelope_items FINAL WHERE project_id = 1"
                               " AND event_id = {id:String}", {"id": ids[0]})
        assert kept == [(1,)]  # the attachment once, though it was inserted twice
        crashing.close()
        healthy.close()


def test_sessions_and_client_reports_are_accounted(crashray: RunningCrashray,
                                                   corpus_dir: Path) -> None:
    session_id = uuid.uuid4().hex
    session = orjson.dumps({"sid": session_id, "init": True, "status": "ok", "errors": 0,
                            "started": dt.datetime.now(dt.UTC).isoformat(),
                            "attrs": {"release": "node@1", "environment": "ci"}})
    reason = f"before_send_{uuid.uuid4().hex[:6]}"
    report = orjson.dumps({"discarded_events": [
        {"reason": reason, "category": "error", "quantity": 3}]})
    body = b"\n".join([b"{}", b'{"type":"session"}', session, b'{"type":"client_report"}',
                       report])
    response = httpx.post(f"{crashray.base_url}/api/1/envelope/?sentry_key="
                          f"{crashray.public_key}&sentry_version=7", content=body)
    assert response.status_code == 200 and response.json() == {}
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    wait_until(lambda: store.query_rows(
        "SELECT count() FROM sessions_raw WHERE project_id = 1 AND session_id = {s:String}",
        {"s": session_id})[0][0] == 1, 15, "the session row")
    wait_until(lambda: store.query_rows(
        "SELECT sum(quantity) FROM outcomes WHERE project_id = 1 AND outcome = 'client_discard'"
        " AND reason = {r:String}", {"r": reason})[0][0] == 3, 15, "the client report outcome")


def test_attachments_and_user_feedback_are_kept_with_their_event(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    attachment = b"80%\r\n!"
    feedback = orjson.dumps({"event_id": event_id, "name": "Ada", "email": "ada@example.com",
                             "comments": "it broke"})
    body = envelope_bytes(corpus_event(corpus_dir), event_id, extra_items=[
        ({"type": "attachment", "filename": "df.txt"}, attachment),
        ({"type": "user_report"}, feedback)])
    response = post_envelope(crashray, gzip_bytes(body), python_sdk_headers(crashray.public_key))
    assert response.status_code == 200 and response.json() == {"id": event_id}
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    rows = wait_until(lambda: store.query_rows(
        "SELECT item_type, headers, payload FROM envelope_items WHERE project_id = 1"
        " AND event_id = {id:String} ORDER BY item_type", {"id": event_id}), 15,
        "the kept items")
    assert [r[0] for r in rows] == ["attachment", "user_report"]
    assert orjson.loads(rows[0][1])["filename"] == "df.txt"
    assert rows[0][2] in (attachment, attachment.decode())
    assert orjson.loads(rows[1][2])["comments"] == "it broke"
    wait_until(lambda: store.query_rows(
        "SELECT sum(quantity) FROM outcomes WHERE project_id = 1 AND outcome = 'accepted'"
        " AND category = 'attachment'", {})[0][0] >= len(attachment), 15,
        "the attachment bytes counted as accepted")


def test_a_poison_item_is_dead_lettered_and_its_batch_mates_are_stored(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    """One item that cannot be stored (its project was deleted after it was accepted) must
    not hold back the good items claimed with it."""
    with scratch_database("crashray_poison") as url:
        postgres.migrate(url)
        with postgres.connect(url) as conn:
            bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
        good = [uuid.uuid4().hex for _ in range(5)]
        poison = uuid.uuid4().hex
        event = corpus_event(corpus_dir)
        now = dt.datetime.now(dt.UTC)
        PostgresQueue(url).enqueue([
            QueuedItem(1 if i != poison else 424242, 1, 1, "event", i, now,
                       orjson.dumps({**event, "event_id": i}), {})
            for i in [*good[:2], poison, *good[2:]]])
        consumer = BatchConsumer(ConsumerConfig(
            postgres_url=url, clickhouse_dsn=crashray.runtime.clickhouse_dsn, batch_items=100,
            lease_s=30, max_attempts=5, retention_days=90, idle_poll_s=0.5, batch_wait_s=0.0,
            dedup_window_s=86_400))
        assert consumer.run_once() == 6
        consumer.close()
        with psycopg.connect(url) as conn:
            assert queue_size(url) == 0
            dead = conn.execute("SELECT event_id, error FROM ingest_dead_letters").fetchall()
            counted = conn.execute("SELECT event_id FROM processed_events").fetchall()
        assert [d[0] for d in dead] == [poison]
        assert "foreign key" in dead[0][1]
        assert sorted(c[0] for c in counted) == sorted(good)


def test_an_event_without_any_event_id_gets_one_at_accept_time(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    event = {k: v for k, v in corpus_event(corpus_dir).items() if k != "event_id"}
    payload = orjson.dumps(event)
    body = b"\n".join([b"{}", orjson.dumps({"type": "event", "length": len(payload)}), payload])
    response = post_envelope(crashray, body, python_sdk_headers(crashray.public_key, False))
    assert response.status_code == 200
    event_id = response.json()["id"]
    assert len(event_id) == 32
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    wait_until(lambda: store.event_body(1, 1, event_id), 15, "the event under the answered id")
