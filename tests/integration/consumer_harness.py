"""A consumer and the Web API over a database of their own, for tests that drive
``BatchConsumer`` batch by batch (as tests/integration/test_delivery.py does) and then ask
what a user would see: the issue list and its ``stats``, a project's stats, ``stats_v2``.

Real parts throughout: a scratch PostgreSQL database built by the migrations and the
bootstrap, the session's in-process ClickHouse engine (chDB, migrated), Crashray's FastAPI
app served in-process. The scratch database numbers its organizations, projects and
issues from a random base, so its rows never meet another test's in the shared engine.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from actors.clickhouse import OWNER_ACTOR_NAME, RemoteStore
from actors.consumer import BatchConsumer, ConsumerConfig
from actors.shared_process import find
from events.grouping import DEFAULT_GROUPING_CONFIG
from events.process import Symbolicator
from serve_apps.api.app import create_app
from serve_apps.api.config import ApiConfig
from serve_apps.api.deps import Services
from storage import postgres
from storage.bootstrap import bootstrap
from storage.clickhouse import ClickHouseStore, EventStore
from storage.queue import PostgresQueue, QueuedItem
from tests.support import scratch_database

#: Tables whose ids the scratch database starts at a random base (ClickHouse rows carry
#: organization, project and issue ids).
NUMBERED_TABLES = ("organizations", "projects", "issues", "project_keys")


@dataclass
class Harness:
    url: str
    clickhouse: ClickHouseStore
    organization_id: int
    organization_slug: str
    project_id: int
    project_slug: str
    key_id: int
    api: TestClient
    token: str
    consumers: list[BatchConsumer] = field(default_factory=list)

    def consumer(self, store: EventStore | None = None, symbolicator: Symbolicator | None = None,
                 **config: Any) -> BatchConsumer:
        """A consumer of this database; ``store`` wraps the real engine to fail on cue;
        ``symbolicator`` replaces the one ``config["symbolication"]`` would make."""
        settings: dict[str, Any] = {
            "postgres_url": self.url, "clickhouse_dsn": self.clickhouse.dsn,
            "batch_items": 100, "lease_s": 0.5, "max_attempts": 3, "retention_days": 90,
            "idle_poll_s": 0.1, "batch_wait_s": 0.0, "dedup_window_s": 86_400,
            "outbox_sweep_s": 0.0, **config}
        consumer = BatchConsumer(ConsumerConfig(**settings),
                                 store=store if store is not None else self.clickhouse,
                                 symbolicator=symbolicator)
        self.consumers.append(consumer)
        return consumer

    def event_item(self, event: dict[str, Any], event_id: str | None = None,
                   project_id: int | None = None) -> QueuedItem:
        event_id = event_id or uuid.uuid4().hex
        return QueuedItem(project_id or self.project_id, self.organization_id, self.key_id,
                          "event", event_id, dt.datetime.now(dt.UTC),
                          orjson.dumps({**event, "event_id": event_id}), {})

    def item(self, item_type: str, payload: bytes, event_id: str | None = None,
             meta: dict[str, Any] | None = None) -> QueuedItem:
        return QueuedItem(self.project_id, self.organization_id, self.key_id, item_type,
                          event_id, dt.datetime.now(dt.UTC), payload, meta or {})

    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        queue = PostgresQueue(self.url)
        queue.enqueue(items)
        queue.close()

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params,
                                headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return response.json()

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    # --- what a user sees ------------------------------------------------------------------
    def issues(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(
            f"/projects/{self.organization_slug}/{self.project_slug}/issues/",
            statsPeriod="24h")
        return found

    def project_stats_total(self) -> int:
        buckets = self.get(f"/projects/{self.organization_slug}/{self.project_slug}/stats/")
        return sum(n for _, n in buckets)

    def outcome_totals(self, category: str) -> dict[tuple[str, str], int]:
        """stats_v2: sum(quantity) of the last day per (outcome, reason) in ``category``."""
        body = self.get(f"/organizations/{self.organization_slug}/stats_v2/",
                        field="sum(quantity)", statsPeriod="1d", interval="1h",
                        category=category, groupBy=["outcome", "reason"])
        return {(g["by"]["outcome"], g["by"]["reason"]): g["totals"]["sum(quantity)"]
                for g in body["groups"]}

    def queue_size(self) -> int:
        return int(self.sql("SELECT count(*) FROM ingest_queue")[0][0])

    def dead_letters(self) -> list[tuple[Any, ...]]:
        return self.sql("SELECT id, event_id, error FROM ingest_dead_letters ORDER BY id")


def counts_seen(h: Harness) -> dict[str, int]:
    """Every count of the project's events a user can read: the issues' ``count`` (from
    PostgreSQL), their ``stats["24h"]`` and the project's stats (the hourly rollup), and
    the accepted errors of ``stats_v2`` (outcomes)."""
    issues = h.issues()
    return {"count": sum(int(i["count"]) for i in issues),
            "stats_24h": sum(n for i in issues for _, n in i["stats"]["24h"]),
            "project_stats": h.project_stats_total(),
            "accepted": h.outcome_totals("error").get(("accepted", ""), 0)}


@dataclass
class Counted:
    """A store that counts the calls the consumer makes, passing them to the real one."""

    store: Any
    calls: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)
        return call


def harness(clickhouse: ClickHouseStore, prefix: str) -> Iterator[Harness]:
    """A fixture body: yields a ``Harness``, drops its database afterwards."""
    with scratch_database(prefix) as url:
        postgres.migrate(url)
        base = random.randrange(10**6, 10**12)
        with postgres.connect(url) as conn:
            for table in NUMBERED_TABLES:
                conn.execute(f"ALTER SEQUENCE {table}_id_seq RESTART WITH {base}")
            conn.commit()
            boot = bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
            row = conn.execute("SELECT organization_id FROM projects WHERE id = %s",
                               (boot.project_id,)).fetchone()
            key = conn.execute("SELECT id FROM project_keys WHERE public_key = %s",
                               (boot.public_key,)).fetchone()
        assert row is not None and key is not None and boot.api_token is not None
        config = ApiConfig(postgres_url=url, clickhouse_dsn=clickhouse.dsn,
                           base_url="http://testserver", max_page_size=100)
        pool: ConnectionPool[Any] = ConnectionPool(url, min_size=1, max_size=2, open=True)
        app = create_app()
        app.state.services = Services(config, pool, clickhouse)
        h = Harness(url, clickhouse, int(row[0]), boot.organization_slug, boot.project_id,
                    boot.project_slug, int(key[0]), TestClient(app), boot.api_token)
        try:
            yield h
        finally:
            for consumer in h.consumers:
                consumer.close()
            pool.close()


class OwnerStore(RemoteStore):
    """A running Crashray's ClickHouse (its owner: an actor, or a part of the shared
    process), for consumers in Ray actors and for the harness's API; ``dsn`` as the
    harness reads it."""

    def __init__(self, dsn: str) -> None:
        super().__init__(find(OWNER_ACTOR_NAME))
        self.dsn = dsn
