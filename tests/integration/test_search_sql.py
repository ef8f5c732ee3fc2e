"""Issue search on the real ClickHouse engine (chDB, schema from the real migrations; no Ray):
``ClickHouseStore.matching_hashes`` runs parsed searches against an ``events`` table, values
bound server-side, inside the caller's tenant scope."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pyarrow as pa
import pytest

from events.rows import EVENTS_SCHEMA
from events.search import event_filters, parse_search
from storage.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 28, 13, 0, tzinfo=dt.UTC)
#: Organization ids of this module: the engine is shared by the whole pytest process.
_ORG_IDS = itertools.count(7_300_000, 2)
EVIL = "x') OR 1=1 -- '; DROP TABLE events; {p0:String} \\"


@pytest.fixture(scope="module")
def store(chdb_store: ClickHouseStore) -> ClickHouseStore:
    return chdb_store


def event(org: int, name: str, hour: int, **columns: Any) -> dict[str, Any]:
    """An events row; ``name`` becomes the event id (uuid5) so results read by name."""
    row: dict[str, Any] = {f.name: "" for f in EVENTS_SCHEMA if pa.types.is_string(f.type)}
    row.update({
        "organization_id": org, "project_id": 1, "event_id": str(_event_id(name)),
        "group_id": 1, "primary_hash": _hash(name), "retention_days": 90,
        "timestamp": dt.datetime(2026, 11, 28, hour, tzinfo=dt.UTC),
        "received": dt.datetime(2026, 11, 28, hour, tzinfo=dt.UTC),
        "type": "error", "platform": "python", "tags": [],
        "exception_types": [], "exception_values": [], "frame_functions": [],
        "frame_modules": [], "frame_filenames": [], "frame_in_app": [],
        "grouping_projection": 0,
    })
    row.update(columns)
    return row


def _event_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, name)


def _hash(name: str) -> str:
    return _event_id(f"hash-{name}").hex


@pytest.fixture(scope="module")
def org(store: ClickHouseStore) -> int:
    org = next(_ORG_IDS)
    rows = [
        event(org, "e1", 10, level="error", environment="prod", release="1.0",
              title="ValueError: bad thing", culprit="app.models in save",
              user_email="a@b.c", tags=[("browser", "Chrome 120"), ("path", "100%_done"),
                                         ("evil", EVIL)],
              exception_types=["ValueError"], exception_values=["Bad Thing ÜNÏCODE"]),
        event(org, "e2", 11, level="fatal", environment="staging", title="KeyError: 'x'",
              message="Lookup failed", tags=[("browser", "Firefox"), ("path", "100x_done"),
                                             ("win", "C:\\dir\\file"), ("nul", "a\x00b")],
              exception_types=["KeyError"], exception_values=["'x'"]),
        event(org, "e3", 12, level="warning", title="Timeout", culprit="app.views in index",
              message="waited {p0:String}"),
    ]
    # Another tenant's event that matches every query: the caller's scope keeps it out.
    rows.append({**rows[0], "organization_id": org + 1, "event_id": str(_event_id("other"))})
    store.insert("events", pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))
    return org


def matching(store: ClickHouseStore, org: int, query: str) -> set[str]:
    """The events (by name: each has a primary hash of its own) the store finds."""
    hashes = store.matching_hashes(org, [1], event_filters(parse_search(query, NOW)),
                                   NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1), 100)
    names = {_hash(n): n for n in ("e1", "e2", "e3")}
    return {names[h] for h in hashes}


@pytest.mark.parametrize(("query", "expected"), [
    ("", {"e1", "e2", "e3"}),
    ("level:[error, fatal]", {"e1", "e2"}),
    ("!level:error", {"e2", "e3"}),
    ("environment:prod release:1.0 user.email:a@b.c", {"e1"}),
    ("browser:Chrome*", {"e1"}),
    ("!browser:Firefox", {"e1", "e3"}),
    ("tags[browser]:*fox", {"e2"}),
    ("path:100%_done", {"e1"}),
    ("path:100%*", {"e1"}),
    ("path:*x_done", {"e2"}),
    ("path:100_*", set()),
    ("win:C:\\dir*", {"e2"}),
    ('win:"C:\\dir\\file"', {"e2"}),
    ("has:browser", {"e1", "e2"}),
    ("!has:browser", {"e3"}),
    ("has:user", {"e1"}),
    ("has:message", {"e2", "e3"}),
    ("!has:error.type", {"e3"}),
    ("bad THING", {"e1"}),
    ("ünïcode", {"e1"}),
    ("lookup", {"e2"}),
    ("app.views", {"e3"}),
    ('"{p0:String}"', {"e3"}),
    ("message:LOOKUP", {"e2"}),
    ("!message:[lookup, timeout]", {"e1"}),
    ("error.type:Value*", {"e1"}),
    ("error.value:\"'x'\"", {"e2"}),
    ("timestamp:>=2026-11-28T10:30:00", {"e2", "e3"}),
    ("timestamp:<2026-11-28T11:00:00", {"e1"}),
    ("event.timestamp:2026-11-28T11:02:00", {"e2"}),
    ("is:unresolved times_seen:>100 age:-1h level:error", {"e1"}),
])
def test_search_matches_events(store: ClickHouseStore, org: int, query: str,
                               expected: set[str]) -> None:
    assert matching(store, org, query) == expected


def test_injection_values_are_matched_literally_and_harm_nothing(
        store: ClickHouseStore, org: int) -> None:
    escaped = EVIL.replace("\\", "\\\\").replace('"', '\\"')
    assert matching(store, org, f'evil:"{escaped}"') == {"e1"}
    assert matching(store, org, f'"{escaped}"') == set()
    assert matching(store, org, "nul:\"a\x00b\"") == {"e2"}
    assert matching(store, org, "\"x') OR 1=1 --\" 'x'") == set()
    assert matching(store, org, "k:'; DROP TABLE events; --") == set()
    assert len(matching(store, org, "")) == 3  # the table is still there
