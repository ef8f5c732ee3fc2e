"""The embedded ClickHouse owner actor (real Ray, the real chDB engine): it answers
``EventStore`` through typed calls, and a read does not wait behind a large insert."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray

from actors.clickhouse import ClickHouseOwner, RemoteStore
from events.rows import EVENTS_SCHEMA
from events.search import EventFilters, Key, Pattern, TextFilter, event_filters, parse_search
from storage.clickhouse import EventStore
from tests.integration.conftest import RunningCrashray

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ORG = 7_900_001


def rows(count: int, org: int, level: str = "error") -> pa.Table:
    base: dict[str, Any] = {f.name: "" for f in EVENTS_SCHEMA if pa.types.is_string(f.type)}
    base.update({"organization_id": org, "project_id": 1, "group_id": 1,
                 "primary_hash": "a" * 32, "retention_days": 90, "timestamp": NOW,
                 "received": NOW, "type": "error", "platform": "python", "level": level,
                 "tags": [], "exception_types": [], "exception_values": [],
                 "frame_functions": [], "frame_modules": [], "frame_filenames": [],
                 "frame_in_app": [], "body": "{}", "grouping_projection": 0})
    ids = [str(uuid.uuid4()) for _ in range(count)]
    columns = {name: [value] * count for name, value in base.items()}
    columns["event_id"] = ids
    return pa.Table.from_pydict(columns, schema=EVENTS_SCHEMA)


@pytest.fixture(scope="module")
def owner(crashray: RunningCrashray, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Any]:
    """An owner actor of its own (its own engine and data path, in its own worker) in the
    running instance's Ray."""
    path: Path = tmp_path_factory.mktemp("owner-chdb")
    actor = ClickHouseOwner.options(  # type: ignore[attr-defined]
        name=f"owner-test-{uuid.uuid4().hex[:6]}", namespace="crashray").remote(
            f"chdb://{path}")
    ray.get(actor.ready.remote())
    yield actor
    ray.kill(actor)


def test_remote_store_answers_typed_searches_within_the_tenant(owner: Any) -> None:
    store: EventStore = RemoteStore(owner)
    inserted = store.insert_batch({"events": rows(3, ORG, "fatal")})
    store.insert("events", rows(2, ORG + 1, "fatal"))  # another tenant's
    assert inserted == 3
    fatal = event_filters(parse_search("level:fatal", NOW))
    found = store.matching_hashes(ORG, [1], fatal, NOW - dt.timedelta(hours=1),
                                  NOW + dt.timedelta(hours=1), 10)
    assert found == ["a" * 32]
    none = store.matching_hashes(ORG, [1], EventFilters((TextFilter(
        Key("level"), (Pattern(("debug",)),)),)), NOW - dt.timedelta(hours=1),
        NOW + dt.timedelta(hours=1), 10)
    assert none == []
    events = store.issue_events(ORG, 1, ["a" * 32], fatal, 10)
    assert len(events) == 3 and {e.level for e in events} == {"fatal"}


def test_a_read_is_answered_while_a_large_insert_is_still_running(owner: Any) -> None:
    """The owner runs calls on several threads, reading through a client of the thread's
    own: a read sent after a large insert comes back before that insert has finished."""
    ray.get(owner.insert.remote("events", rows(5, ORG + 3)))
    big = rows(600_000, ORG + 2)
    insert = owner.insert_batch.remote({"events": big})
    ray.get(owner.ready.remote())  # the insert was dispatched first
    read = owner.list_events.remote(ORG + 3, 1, 10)
    done, _ = ray.wait([read, insert], num_returns=1, timeout=120)
    assert done == [read], "the read waited for the insert"
    assert ray.wait([insert], timeout=0)[0] == [], "the insert had already finished"
    assert len(ray.get(read)) == 5
    assert ray.get(insert, timeout=300) == 600_000


def test_slow_searches_on_every_read_thread_do_not_delay_an_insert(owner: Any) -> None:
    """Inserts run in a concurrency group of their own: with every read thread busy with a
    slow query (one tenant's expensive searches), a consumer's insert still completes
    before them."""
    from actors.clickhouse import OWNER_READ_CONCURRENCY

    slow = [owner.query_rows.remote("SELECT sleep(3)", {})
            for _ in range(OWNER_READ_CONCURRENCY)]
    insert = owner.insert_batch.remote({"events": rows(10, ORG + 4)})
    done, _ = ray.wait([insert, *slow], num_returns=1, timeout=120)
    assert done == [insert], "the insert waited for the slow reads"
    assert ray.get(insert) == 10
    ray.get(slow, timeout=120)
