"""Sentry's standard tags in a running Crashray (real Ray, Serve, PostgreSQL, chDB): derived
when events are processed, searchable in the issue stream, faceted on an issue and shown
on the event; and the facet query on the real ClickHouse engine over old and new rows."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from events.rows import EVENTS_SCHEMA
from storage import postgres
from storage.bootstrap import ensure_project
from storage.clickhouse import ClickHouseStore
from tests.integration.conftest import RunningCrashray
from tests.support import corpus_event, envelope_bytes, gzip_bytes, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration

SDK = Path(__file__).parents[1] / "fixtures" / "sdk"
#: A real Chrome 120 on Windows 10 User-Agent header, as @sentry/browser reports it.
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
             " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")


@dataclass(frozen=True)
class Project:
    slug: str
    browser_issue: dict[str, Any]
    python_issue: dict[str, Any]


def browser_event(marker: str) -> dict[str, Any]:
    """An uncaught error as @sentry/browser sends it from a checkout page."""
    return {
        "platform": "javascript", "level": "error", "environment": "production",
        "release": "shop@2.4.1", "transaction": "/checkout",
        "request": {"url": "https://shop.example.com/checkout?step=2",
                    "headers": {"User-Agent": CHROME_UA}},
        "user": {"id": "4711"},
        "exception": {"values": [{
            "type": "TypeError", "value": f"cart.total is not a function {marker}",
            "mechanism": {"type": "onerror", "handled": False},
            "stacktrace": {"frames": [{"filename": "https://shop.example.com/app.js",
                                       "function": "pay", "lineno": 10, "colno": 5,
                                       "in_app": True}]}}]},
        "sdk": {"name": "sentry.javascript.browser", "version": "8.40.0"},
    }


def get(c: RunningCrashray, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{c.base_url}/api/0/{path}", params=params, timeout=10,
                     headers={"Authorization": f"Bearer {c.info.api_token}"})


def issues(c: RunningCrashray, slug: str, query: str) -> list[dict[str, Any]]:
    response = get(c, f"projects/crashray/{slug}/issues/", query=query)
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.fixture(scope="module")
def project(crashray: RunningCrashray) -> Iterator[Project]:
    marker = uuid.uuid4().hex[:6]
    slug = f"tags-{marker}"
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, slug, "v2")
        conn.commit()
    with httpx.Client(timeout=10) as client:
        for body in (browser_event(marker), corpus_event(SDK)):
            wait_until(lambda b=body: client.post(
                f"{crashray.base_url}/api/{project_id}/envelope/",
                content=gzip_bytes(envelope_bytes(b)),
                headers=python_sdk_headers(key)).status_code == 200, 15, "accepted")
    found = wait_until(lambda: (i := issues(crashray, slug, "")) and len(i) == 2 and i,
                       30, "two issues")
    by_platform = {i["platform"]: i for i in found}
    yield Project(slug, by_platform["javascript"], by_platform["python"])


@pytest.mark.parametrize(("query", "platforms"), [
    ("browser:Chrome*", ["javascript"]),
    ('browser:"Chrome 120.0.0"', ["javascript"]),
    ("os.name:Windows", ["javascript"]),
    ("handled:no", ["javascript"]),
    ("url:*checkout*", ["javascript"]),
    ('user:"id:4711"', ["javascript"]),
    ("handled:yes", ["python"]),
    ("runtime:CPython*", ["python"]),
    ("!has:browser", ["python"]),
    ("mechanism:[onerror, generic]", ["javascript", "python"]),
])
def test_derived_tags_are_searchable_in_the_issue_stream(crashray: RunningCrashray,
                                                        project: Project, query: str,
                                                        platforms: list[str]) -> None:
    assert sorted(i["platform"] for i in issues(crashray, project.slug, query)) == platforms


def test_issue_tag_facets_include_derived_tags_once_each(crashray: RunningCrashray,
                                                        project: Project) -> None:
    response = get(crashray, f"issues/{project.browser_issue['id']}/tags/")
    assert response.status_code == 200, response.text
    facets = response.json()
    keys = [f["key"] for f in facets]
    assert len(keys) == len(set(keys)), keys
    by_key = {f["key"]: f for f in facets}
    expected = {"browser": "Chrome 120.0.0", "browser.name": "Chrome", "os.name": "Windows",
                "handled": "no", "mechanism": "onerror", "user": "id:4711",
                "url": "https://shop.example.com/checkout", "level": "error",
                "environment": "production", "release": "shop@2.4.1",
                "transaction": "/checkout"}
    for key, value in expected.items():
        assert by_key[key]["totalValues"] == 1, key
        assert by_key[key]["topValues"] == [
            {"key": key, "name": value, "value": value, "count": 1}], key
    assert by_key["os"]["topValues"][0]["value"].startswith("Windows ")


def test_event_api_shows_derived_tags_title_culprit_and_no_internal_user_fields(
        crashray: RunningCrashray, project: Project) -> None:
    latest = get(crashray, f"issues/{project.browser_issue['id']}/events/latest/").json()
    tags = {t["key"]: t["value"] for t in latest["tags"]}
    assert (tags["browser"], tags["handled"], tags["user"]) == ("Chrome 120.0.0", "no",
                                                               "id:4711")
    assert latest["title"] == project.browser_issue["title"]
    assert latest["title"].startswith("TypeError: cart.total is not a function")
    # Relay keeps the URL in abs_path and the path as filename: the location.
    assert latest["culprit"] == "/checkout" and latest["location"] == "/app.js"
    assert latest["user"]["id"] == "4711" and "sentry_user" not in latest["user"]
    same = get(crashray, f"projects/crashray/{project.slug}/events/{latest['id']}/").json()
    assert (same["tags"], same["title"], same["culprit"]) == (
        latest["tags"], latest["title"], latest["culprit"])
    python = get(crashray, f"issues/{project.python_issue['id']}/events/latest/").json()
    assert python["title"] == "ZeroDivisionError: division by zero"
    assert python["culprit"] and python["location"] == "py_client.py"
    python_tags = {t["key"]: t["value"] for t in python["tags"]}
    assert (python_tags["runtime"], python_tags["server_name"]) == ("CPython 3.11.7", "vm")


# --- the facet query on the real ClickHouse engine, without Ray -------------------------
def row(org: int, name: str, **columns: Any) -> dict[str, Any]:
    values: dict[str, Any] = {f.name: "" for f in EVENTS_SCHEMA if pa.types.is_string(f.type)}
    now = dt.datetime.now(dt.UTC)
    values.update({
        "organization_id": org, "project_id": 1, "group_id": 1, "primary_hash": "1" * 32,
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{org}-{name}")),
        "retention_days": 90, "timestamp": now, "received": now, "type": "error",
        "platform": "python", "tags": [], "exception_types": [], "exception_values": [],
        "frame_functions": [], "frame_modules": [], "frame_filenames": [], "frame_in_app": [],
        "grouping_projection": 0,
    })
    values.update(columns)
    return values


def test_facets_count_level_environment_release_once_for_old_and_new_rows(
        chdb_store: ClickHouseStore) -> None:
    org = 7_400_000 + uuid.uuid4().int % 1_000_000
    old = row(org, "old", level="error", environment="prod", release="1.0",
              tags=[("server_name", "vm")])  # stored before these were tags too
    new = row(org, "new", level="warning", environment="prod", release="1.0",
              tags=[("level", "warning"), ("environment", "prod"), ("release", "1.0"),
                    ("server_name", "vm"), ("browser", "Chrome 120.0.0")])
    # Where the map has the key, it is the event's value: the column is not counted again.
    mapped = row(org, "mapped", level="error", tags=[("level", "fatal")])
    chdb_store.insert("events", pa.Table.from_pylist([old, new, mapped], schema=EVENTS_SCHEMA))
    facets = {k: (events, distinct, values) for k, events, distinct, values in
              chdb_store.tag_facets(org, 1, ["1" * 32], None, 10)}
    assert sorted(facets) == ["browser", "environment", "level", "release", "server_name"]
    assert facets["level"] == (3, 3, [("error", 1), ("fatal", 1), ("warning", 1)])
    assert facets["environment"] == (2, 1, [("prod", 2)])
    assert facets["release"] == (2, 1, [("1.0", 2)])
    assert facets["browser"] == (1, 1, [("Chrome 120.0.0", 1)])
    only = chdb_store.tag_facets(org, 1, ["1" * 32], "environment", 10)
    assert only == [("environment", 2, 1, [("prod", 2)])]
