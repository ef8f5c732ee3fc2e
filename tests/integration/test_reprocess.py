"""``crashray reprocess`` (pipelines/reprocess.py) on the shared running Crashray: real Ray
(the job is a Ray Data pipeline on the instance's cluster), PostgreSQL and the ClickHouse
engine through its owner actor. Events go in through the ingest endpoint and are read back
through the API, as a user sees them: a fingerprint rule added afterwards merges the
issues it names with exact counts, a source map uploaded afterwards symbolicates the
stored events, an interrupted job re-run finishes with nothing duplicated, and another
project's events stay as they were."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from actors.clickhouse import clickhouse_store
from actors.grouping import IssueResolver
from events.access import ROLE_SCOPES
from events.grouping import DEFAULT_GROUPING_CONFIG
from pipelines.reprocess import (
    ReprocessContext,
    ReprocessJobSpec,
    ReprocessLimits,
    ReprocessOptions,
    ReprocessResult,
    project_grouping,
    regroup_slice,
    run_reprocess,
    run_slice,
)
from storage.bootstrap import bootstrap
from storage.postgres import create_api_token
from storage.projects import grouping_settings
from storage.regroup import PROJECTION_TABLE_PREFIX
from storage.reprocess import ReprocessConflict, running_job
from storage.scope import ProjectScope
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, error_event, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration

SOURCEMAPS = Path(__file__).parent.parent / "fixtures" / "sourcemaps"
RELEASE = "shop@2.0.0"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Tenant:
    org: str
    organization_id: int
    project_id: int
    public_key: str
    token: str


def new_tenant(c: RunningCrashray) -> Tenant:
    """An organization of its own with one project, ``web``, and an owner's token."""
    slug = f"rp-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(c.runtime.postgres_url) as conn:
        made = bootstrap(conn, org_slug=slug, project_slug="web",
                         grouping_config=DEFAULT_GROUPING_CONFIG)
        row = conn.execute("SELECT id FROM organizations WHERE slug = %s", (slug,)).fetchone()
        assert row is not None
        token = create_api_token(conn, int(row[0]), "reprocess",
                                 sorted(ROLE_SCOPES["owner"]))
    return Tenant(slug, int(row[0]), made.project_id, made.public_key, token)


def api(c: RunningCrashray, t: Tenant, method: str, path: str, **kwargs: Any
        ) -> httpx.Response:
    return httpx.request(method, f"{c.base_url}/api/0/{path}", timeout=30,
                         headers={"Authorization": f"Bearer {t.token}"}, **kwargs)


def send(c: RunningCrashray, t: Tenant, event: dict[str, Any]) -> str:
    event_id = uuid.uuid4().hex
    response = httpx.post(f"{c.base_url}/api/{t.project_id}/envelope/",
                          content=envelope_bytes(event, event_id),
                          headers=python_sdk_headers(t.public_key, gzipped=False), timeout=10)
    assert response.status_code == 200, response.text
    return event_id


def issues(c: RunningCrashray, t: Tenant) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api(
        c, t, "GET", f"projects/{t.org}/web/issues/?query=&statsPeriod=14d").json()
    return found


def counts(c: RunningCrashray, t: Tenant) -> dict[str, int]:
    """Issue title → its count, as the issue stream shows it."""
    return {i["title"]: int(i["count"]) for i in issues(c, t)}


def wait_for_counts(c: RunningCrashray, t: Tenant, expected: dict[str, int]
                    ) -> dict[str, int]:
    def reached() -> dict[str, int] | None:
        seen = counts(c, t)
        return seen if seen == expected else None

    return wait_until(reached, 30, f"issue counts {expected}")


def event_groups(c: RunningCrashray, t: Tenant) -> dict[str, str]:
    """Event id → its issue, from the project's event list."""
    return {e["eventID"]: e["groupID"] for e in
            api(c, t, "GET", f"projects/{t.org}/web/events/?limit=100").json()}


def reprocess(c: RunningCrashray, t: Tenant, slice_events: int = 20_000,
              max_slices: int | None = None, **options: Any) -> ReprocessResult:
    return run_reprocess(
        ReprocessContext(c.runtime.postgres_url, c.runtime.clickhouse_dsn, t.organization_id,
                         t.project_id, c.runtime.consumer_config().symbolication),
        ReprocessOptions(**options),
        # A short pause bound: the tasks ask the ingest queue after each slice.
        ReprocessLimits(1, 0.5, slice_events, max_slices, yield_max=0.05))


def stored_rows(c: RunningCrashray, t: Tenant) -> list[tuple[Any, ...]]:
    """Every stored row of the project (not de-duplicated): (event id, group id, version)."""
    return clickhouse_store(c.runtime.clickhouse_dsn).query_rows(
        "SELECT replaceAll(toString(event_id), '-', ''), group_id, row_version FROM events"
        " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}",
        {"org": t.organization_id, "project": t.project_id})


def set_fingerprint_rule(c: RunningCrashray, t: Tenant, rule: str) -> None:
    saved = api(c, t, "PUT", f"projects/{t.org}/web/", json={"fingerprintingRules": rule})
    assert saved.status_code == 200, saved.text


def two_issues(c: RunningCrashray, t: Tenant, corpus_dir: Path, marker: str,
               hours_ago: tuple[int, ...] = (0, 0, 0)) -> tuple[list[str], dict[str, int]]:
    """Issue A with two events and B with one (their timestamps ``hours_ago``)."""
    titles = [f"Fp{marker}A: a", f"Fp{marker}A: a", f"Fp{marker}B: b"]
    ids = []
    for title, ago in zip(titles, hours_ago, strict=True):
        event = {**error_event(corpus_dir, title), "release": "shop@1"}
        event["timestamp"] = time.time() - ago * 3600
        ids.append(send(c, t, event))
    return ids, wait_for_counts(c, t, {titles[0]: 2, titles[2]: 1})


def test_a_fingerprint_rule_added_later_merges_the_stored_issues_with_exact_counts(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    t, other = new_tenant(crashray), new_tenant(crashray)
    marker = uuid.uuid4().hex[:8]
    event_ids, _ = two_issues(crashray, t, corpus_dir, marker)
    other_ids, other_counts = two_issues(crashray, other, corpus_dir, marker)
    before = {i["title"]: i["id"] for i in issues(crashray, t)}
    other_rows = sorted(stored_rows(crashray, other))
    set_fingerprint_rule(crashray, t, f'type:Fp{marker}* -> fp-{marker} title="Fp {marker}"')

    result = reprocess(crashray, t)

    assert (result.finished, result.events_read, result.events_moved) == (True, 3, 3)
    assert len(result.issues_created) == 1 and len(result.issues_merged) == 2
    assert result.issues_emptied == []
    survivor = str(result.issues_created[0])
    assert counts(crashray, t) == {f"Fp {marker}": 3}
    assert set(event_groups(crashray, t).values()) == {survivor}
    shown = api(crashray, t, "GET", f"issues/{survivor}/").json()
    assert shown["count"] == "3"
    kinds = [a["type"] for a in shown["activity"]]
    assert "merge" in kinds
    for old in before.values():  # the emptied issues redirect to the one that took them
        moved = api(crashray, t, "GET", f"issues/{old}/", follow_redirects=False)
        assert moved.status_code == 302
        assert moved.headers["location"] == f"/api/0/issues/{survivor}/"
    rows = stored_rows(crashray, t)
    assert sorted(r[0] for r in rows) == sorted(event_ids)  # one row per event
    assert {(r[1], r[2]) for r in rows} == {(int(survivor), result.job_id)}
    # The other tenant's project: the same events, untouched.
    assert counts(crashray, other) == other_counts
    assert sorted(stored_rows(crashray, other)) == other_rows
    assert {r[2] for r in other_rows} == {0} and sorted(r[0] for r in other_rows) == sorted(
        other_ids)

    again = reprocess(crashray, t)  # nothing left to change
    assert (again.events_read, again.events_changed, again.issues_created) == (3, 0, [])
    assert counts(crashray, t) == {f"Fp {marker}": 3}
    assert len(stored_rows(crashray, t)) == 3


def test_an_interrupted_reprocess_resumed_finishes_with_nothing_duplicated(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    t = new_tenant(crashray)
    marker = uuid.uuid4().hex[:8]
    event_ids, _ = two_issues(crashray, t, corpus_dir, marker, hours_ago=(1, 3, 5))
    set_fingerprint_rule(crashray, t, f"type:Fp{marker}* -> fp-{marker}")

    first = reprocess(crashray, t, slice_events=1, max_slices=1)  # one hour of three

    assert (first.finished, first.slices_done, first.slices_total) == (False, 1, 3)
    assert first.events_moved == 1
    with pytest.raises(ReprocessConflict, match="unfinished"):
        reprocess(crashray, t, slice_events=1, release="shop@1")
    assert len(stored_rows(crashray, t)) == 3
    die_halfway_through_a_slice(crashray, t)  # its new row written, the old one not deleted
    assert len(stored_rows(crashray, t)) == 4
    assert projection_tables(crashray, t) == []  # the dying slice dropped its own
    leave_a_projection_table(crashray, t)  # as a process killed outright would
    assert len(projection_tables(crashray, t)) == 1

    resumed = reprocess(crashray, t, slice_events=1)

    assert (resumed.resumed, resumed.finished, resumed.job_id) == (True, True, first.job_id)
    assert (resumed.events_read, resumed.events_moved, resumed.events_this_run) == (3, 3, 2)
    assert len(resumed.issues_created) == 1 and len(resumed.issues_merged) == 2
    rows = stored_rows(crashray, t)
    assert sorted(r[0] for r in rows) == sorted(event_ids)
    assert list(counts(crashray, t).values()) == [3]
    issue = api(crashray, t, "GET", f"issues/{resumed.issues_created[0]}/").json()
    assert issue["count"] == "3"
    assert projection_tables(crashray, t) == []  # dropped when the job finished


def projection_tables(c: RunningCrashray, t: Tenant) -> list[str]:
    """The tables of projection hashes (storage/regroup.py) the tenant's slices left."""
    return [str(r[0]) for r in clickhouse_store(c.runtime.clickhouse_dsn).query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase()"
        " AND startsWith(name, {prefix:String})",
        {"prefix": f"{PROJECTION_TABLE_PREFIX}{t.organization_id}_{t.project_id}_"})]


def next_slice(c: RunningCrashray, t: Tenant, conn: psycopg.Connection[Any]
               ) -> tuple[ReprocessJobSpec, int, dt.datetime, dt.datetime]:
    """The running job's spec, and its next unfinished slice: index, start, end."""
    job = running_job(conn, ProjectScope(t.organization_id, t.project_id))
    assert job is not None
    index = min(set(range(len(job.slices))) - job.finished_slices)
    spec = ReprocessJobSpec(
        job.id, c.runtime.clickhouse_dsn, c.runtime.postgres_url, t.organization_id,
        t.project_id, project_grouping(grouping_settings(conn, [t.project_id])[
            t.project_id]), None, None, None)
    start, end = (EPOCH + dt.timedelta(microseconds=us) for us in job.slices[index])
    return spec, index, start, end


def leave_a_projection_table(c: RunningCrashray, t: Tenant) -> None:
    """Fill the table of the job's next unfinished slice, and leave it there."""
    with psycopg.connect(c.runtime.postgres_url, autocommit=True) as conn:
        spec, _, start, end = next_slice(c, t, conn)
    where = regroup_slice(spec, start, end, None)
    assert where is not None
    clickhouse_store(c.runtime.clickhouse_dsn).regroup_projection_groups(where)


class DiesAfterInsert:
    """The real store, but the slice's process dies between inserting the replacement
    rows and deleting the old ones (a killed task, a lost node)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def replace_events(self, org: int, project: int, rows: Any, version: int,
                       event_ids: list[str]) -> int:
        self.store.replace_events(org, project, rows, version, [])
        raise RuntimeError("killed between the insert and the delete")

    def regroup_move_events(self, where: Any, moves: Any) -> int:
        self.store.regroup_move_events(where, moves)
        raise RuntimeError("killed between the insert and the delete")


def die_halfway_through_a_slice(c: RunningCrashray, t: Tenant) -> None:
    """Run the job's next unfinished slice in this process until it dies after its insert."""
    with psycopg.connect(c.runtime.postgres_url, autocommit=True) as conn:
        spec, index, start, end = next_slice(c, t, conn)
        with pytest.raises(RuntimeError, match="killed"):
            run_slice(spec, index, start, end,
                      DiesAfterInsert(clickhouse_store(c.runtime.clickhouse_dsn)),
                      IssueResolver(conn, 1000).issue_ids_for, None)


def node_event() -> dict[str, Any]:
    thrown = json.loads((SOURCEMAPS / "build" / "exception.json").read_bytes())
    return {"platform": "node", "release": RELEASE, "level": "error",
            "exception": {"values": [{"type": thrown["type"], "value": thrown["value"],
                                      "stacktrace": {"frames": thrown["frames"]}}]}}


def crash_frame(shown: dict[str, Any], raw: bool = False) -> dict[str, Any]:
    exception = next(e for e in shown["entries"] if e["type"] == "exception")
    value = exception["data"]["values"][0]
    frame: dict[str, Any] = value["rawStacktrace" if raw else "stacktrace"]["frames"][-1]
    return frame


def test_a_source_map_uploaded_later_symbolicates_the_stored_events(
        crashray: RunningCrashray) -> None:
    t = new_tenant(crashray)
    event_id = send(crashray, t, node_event())
    wait_until(lambda: len(issues(crashray, t)) == 1 or None, 30, "the event's issue")
    path = f"projects/{t.org}/web/events/{event_id}/"
    minified = api(crashray, t, "GET", path).json()
    assert crash_frame(minified)["filename"].endswith("app.min.js")
    assert [e["type"] for e in minified["errors"]] == ["js_no_source"]
    created = api(crashray, t, "POST", f"organizations/{t.org}/releases/",
                  json={"version": RELEASE, "projects": ["web"]})
    # 208: the event named the release, which created it (as Sentry answers then).
    assert created.status_code in (201, 208), created.text
    for name in ("app.min.js", "app.min.js.map"):
        uploaded = api(crashray, t, "POST", f"projects/{t.org}/web/releases/{RELEASE}/files/",
                       data={"name": f"~/build/{name}"},
                       files={"file": (name, (SOURCEMAPS / "build" / name).read_bytes())})
        assert uploaded.status_code == 201, uploaded.text

    result = reprocess(crashray, t)

    assert (result.events_read, result.events_changed) == (1, 1)
    shown = api(crashray, t, "GET", path).json()
    frame = crash_frame(shown)
    assert (frame["filename"], frame["lineNo"]) == ("/src/orders.js", 9)
    assert [9, '      throw new TypeError("unknown coupon " + coupon);'] in frame["context"]
    raw = crash_frame(shown, raw=True)
    assert raw["lineNo"] == 1 and raw["absPath"].endswith("/app.min.js")
    assert shown["errors"] == []
    assert len(stored_rows(crashray, t)) == 1
    assert [int(i["count"]) for i in issues(crashray, t)] == [1]


def test_release_since_and_issue_select_exactly_their_events(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    t = new_tenant(crashray)
    marker = uuid.uuid4().hex[:8]
    sent: dict[str, str] = {}  # name → event id
    for name, title, release, hours_ago in (
            ("old-1", f"Fp{marker}A: a", "shop@1", 5), ("old-2", f"Fp{marker}A: a", "shop@2", 5),
            ("new-2", f"Fp{marker}A: a", "shop@2", 0), ("b-2", f"Fp{marker}B: b", "shop@2", 0)):
        event = {**error_event(corpus_dir, title), "release": release,
                 "timestamp": time.time() - hours_ago * 3600}
        sent[name] = send(crashray, t, event)
    wait_for_counts(crashray, t, {f"Fp{marker}A: a": 3, f"Fp{marker}B: b": 1})
    issue_a = event_groups(crashray, t)[sent["old-1"]]
    set_fingerprint_rule(crashray, t, f"type:Fp{marker}* -> fp-{marker}")

    def moved() -> set[str]:
        versions = {r[0]: r[2] for r in stored_rows(crashray, t)}
        return {name for name, event_id in sent.items() if versions[event_id] != 0}

    by_release = reprocess(crashray, t, release="shop@1")
    assert (by_release.events_read, by_release.events_moved) == (1, 1)
    assert moved() == {"old-1"}
    survivor = str(by_release.issues_created[0])

    by_time = reprocess(crashray, t,
                        since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    assert (by_time.events_read, by_time.events_moved) == (2, 2)
    assert moved() == {"old-1", "new-2", "b-2"}

    by_issue = reprocess(crashray, t, issue_id=int(issue_a))
    assert (by_issue.events_read, by_issue.events_moved) == (1, 1)
    assert moved() == set(sent)
    assert set(event_groups(crashray, t).values()) == {survivor}, (
        sent, stored_rows(crashray, t), event_groups(crashray, t), by_release, by_time, by_issue)
    assert counts(crashray, t) == {f"Fp{marker}A: a": 4}
