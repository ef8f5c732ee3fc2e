"""Releases as a Sentry user reads them: the releases a project's events name, each with
its new issues (``newGroups``), its events and, with ``health=1``, crash-free sessions and
users; an issue's ``firstRelease`` / ``lastRelease``; ``release:latest`` and
``firstRelease:latest`` in the issue search. The tenant line: another organization with a
release of the same version sees only its own, and none of ours.

Real parts: the consumer harness (tests/integration/consumer_harness.py: scratch
PostgreSQL, chDB, ``BatchConsumer``, the FastAPI app) fed with the envelopes the real
Python ``sentry-sdk`` makes (events and application-mode sessions), captured by an
in-process transport instead of sent over HTTP."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sentry_sdk.utils import event_from_exception

from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from storage.queue import QueuedItem
from tests.integration.consumer_harness import Harness, harness

pytestmark = pytest.mark.integration


class Captured(Transport):
    """The SDK's envelopes, kept in memory (what it would have sent to the DSN)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


def sdk_items(release: str, run: Callable[[], None], project_id: int,
              organization_id: int) -> list[QueuedItem]:
    """What the real SDK sends while ``run`` runs with ``release``, as ingest queues it."""
    transport = Captured()
    sentry_sdk.init(dsn="http://public@crashray.invalid/1", transport=transport,
                    release=release, environment="production")
    try:
        run()
        sentry_sdk.flush(10)
    finally:
        sentry_sdk.get_client().close()
    items = []
    for envelope in transport.envelopes:
        for item in envelope.items:
            kind = str(item.headers.get("type"))
            payload = item.payload.get_bytes()
            event_id = orjson.loads(payload).get("event_id") if kind == "event" else None
            items.append(QueuedItem(project_id, organization_id, None, kind, event_id,
                                    dt.datetime.now(dt.UTC), payload, {}))
    return items


def error(name: str, *, crash: bool = False) -> None:
    """One error of its own class; ``crash``: unhandled (the SDK marks the session crashed)."""
    try:
        raise type(name, (ValueError,), {})("it broke")
    except ValueError:
        if crash:
            event, hint = event_from_exception(
                sys.exc_info(), client_options=sentry_sdk.get_client().options,
                mechanism={"type": "excepthook", "handled": False})
            sentry_sdk.capture_event(event, hint=hint)
        else:
            sentry_sdk.capture_exception()


def session(user: str, *errors: tuple[str, bool]) -> None:
    """One application-mode session of ``user`` with these (error, crash) in it."""
    scope = sentry_sdk.get_isolation_scope()
    scope.set_user({"id": user})
    scope.start_session(session_mode="application")
    for name, crash in errors:
        error(name, crash=crash)
    scope.end_session()


def first_release() -> None:
    """shop@1.0: four sessions of three users; u1's second one crashes on Beta."""
    session("u1", ("Alpha", False))
    session("u1", ("Beta", True))
    session("u2")
    session("u3")


def second_release() -> None:
    """shop@2.0: Alpha again (not new) and Gamma (new); two sessions, none crashed."""
    session("u1", ("Alpha", False))
    session("u4", ("Gamma", False))


@dataclass
class World:
    h: Harness
    issues: dict[str, int]  # error type → issue id
    eve: str  # the owner of another organization, which has its own shop@1.0

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        response: httpx.Response = self.h.api.get(
            path, params=params, headers={"Authorization": f"Bearer {token or self.h.token}"})
        return response

    def ok(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    @property
    def releases(self) -> str:
        return f"/organizations/{self.h.organization_slug}/releases/"

    def search(self, query: str) -> list[str]:
        found = self.ok(f"/projects/{self.h.organization_slug}/{self.h.project_slug}/issues/",
                        query=query, statsPeriod="24h")
        return sorted(i["metadata"]["type"] for i in found)


def run(h: Harness, items: list[QueuedItem]) -> None:
    h.enqueue(items)
    consumer = h.consumer(project_settings_refresh_s=0.0)
    while consumer.run_once():
        pass


@pytest.fixture
def world(chdb_store: ClickHouseStore) -> Iterator[World]:
    for h in harness(chdb_store, "crashray_releases"):
        with postgres.connect(h.url) as conn:
            rivals = tenancy.create_organization(conn, "rivals", "Rivals", None)
            eve = tenancy.create_user(conn, "eve", "eve@example.com", "correct horse")
            tenancy.add_member(conn, rivals, eve, "owner")
            rival = tenancy.create_project(conn, rivals, "rival", "Rival",
                                           DEFAULT_GROUPING_CONFIG)
            eve_token = tenancy.create_token(conn, "eve's", ["project:read", "event:read"],
                                             user=eve)
            conn.commit()
        # Each release in a consumer run of its own: shop@2.0 is created after shop@1.0.
        run(h, sdk_items("shop@1.0", first_release, h.project_id, h.organization_id))
        run(h, sdk_items("shop@2.0", second_release, h.project_id, h.organization_id))
        # The other organization's shop@1.0: one crashed session, one issue of its own.
        run(h, sdk_items("shop@1.0", lambda: session("x", ("Rival", True)), rival.id,
                         rivals))
        found = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/issues/",
                      statsPeriod="24h")
        issues = {i["metadata"]["type"]: int(i["id"]) for i in found}
        assert sorted(issues) == ["Alpha", "Beta", "Gamma"]
        yield World(h, issues, eve_token)


def test_releases_named_by_events_are_listed_newest_first_with_new_issues_and_events(
        world: World) -> None:
    listed = world.ok(world.releases)
    assert [r["version"] for r in listed] == ["shop@2.0", "shop@1.0"]
    newest, oldest = listed
    assert (oldest["newGroups"], oldest["eventCount"]) == (2, 2)  # Alpha and Beta
    assert (newest["newGroups"], newest["eventCount"]) == (1, 2)  # Gamma; Alpha is not new
    assert oldest["projects"] == [{"id": world.h.project_id, "slug": world.h.project_slug,
                                   "name": oldest["projects"][0]["name"], "newGroups": 2,
                                   "hasHealthData": False}]
    assert oldest["firstEvent"] <= oldest["lastEvent"] < newest["firstEvent"]
    detail = world.ok(f"{world.releases}shop@1.0/")
    assert detail == oldest
    project_list = world.ok(f"/projects/{world.h.organization_slug}/{world.h.project_slug}"
                            "/releases/")
    assert [(r["version"], r["newGroups"]) for r in project_list] == [("shop@2.0", 1),
                                                                      ("shop@1.0", 2)]
    one = world.ok(f"/projects/{world.h.organization_slug}/{world.h.project_slug}/releases/"
                   "shop@1.0/", health="1")
    assert (one["newGroups"], one["projects"][0]["healthData"]["totalSessions"]) == (2, 4)


def test_the_list_searches_versions_by_a_part_in_any_case(world: World) -> None:
    def versions(query: str) -> list[str]:
        return [r["version"] for r in world.ok(world.releases, query=query)]
    assert versions("@2.") == ["shop@2.0"]
    assert versions("SHOP@1") == ["shop@1.0"]
    assert versions("shop") == ["shop@2.0", "shop@1.0"]
    assert versions("%") == versions("_") == []  # LIKE's wildcards are plain characters
    response = world.get(world.releases, query="a\x00b")
    assert response.status_code == 400 and "query" in response.json()["detail"]


def test_the_lists_come_a_page_at_a_time_with_sentrys_link_header(world: World) -> None:
    """``limit`` and ``cursor`` as every Sentry list: one release a page, newest first, the
    ``Link`` header saying whether there is more (the releases page's pager follows it)."""
    project_list = f"/projects/{world.h.organization_slug}/{world.h.project_slug}/releases/"
    for path in (world.releases, project_list):
        first = world.get(path, limit="1")
        assert first.status_code == 200, first.text
        assert [r["version"] for r in first.json()] == ["shop@2.0"]
        assert first.links["next"]["results"] == "true"
        second = world.get(path, limit="1", cursor=first.links["next"]["cursor"])
        assert [r["version"] for r in second.json()] == ["shop@1.0"]
        assert second.links["next"]["results"] == "false"
        assert second.links["previous"]["results"] == "true"
    assert world.get(world.releases, limit="0").status_code == 400


def test_a_release_lists_its_new_issues(world: World) -> None:
    new = world.ok(f"{world.releases}shop@1.0/new-issues/")
    assert sorted(i["title"].split(":")[0] for i in new) == ["Alpha", "Beta"]
    assert {i["id"] for i in new} == {str(world.issues["Alpha"]), str(world.issues["Beta"])}
    assert all(i["project"]["slug"] == world.h.project_slug for i in new)


def test_an_issue_shows_the_first_and_last_release_it_was_seen_in(world: World) -> None:
    alpha = world.ok(f"/issues/{world.issues['Alpha']}/")
    assert alpha["firstRelease"]["version"] == "shop@1.0"
    assert alpha["lastRelease"]["version"] == "shop@2.0"
    assert alpha["firstRelease"]["dateCreated"] < alpha["lastRelease"]["dateCreated"]
    gamma = world.ok(f"/issues/{world.issues['Gamma']}/")
    assert gamma["firstRelease"]["version"] == gamma["lastRelease"]["version"] == "shop@2.0"


def test_release_latest_and_first_release_latest_search_the_newest_release(
        world: World) -> None:
    assert world.search("release:latest") == ["Alpha", "Gamma"]
    assert world.search("firstRelease:latest") == ["Gamma"]
    assert world.search("!firstRelease:latest") == ["Alpha", "Beta"]
    assert world.search("release:[latest, shop@1.0]") == ["Alpha", "Beta", "Gamma"]
    assert world.search("firstRelease:shop@1.0") == ["Alpha", "Beta"]


def test_an_issues_events_search_release_latest_as_the_issue_stream_does(world: World
                                                                         ) -> None:
    """Alpha happened in shop@1.0 and shop@2.0: its events narrowed by ``release:latest``
    are those of shop@2.0, ``!release:latest`` those of shop@1.0."""
    def ids(query: str) -> list[str]:
        found = world.ok(f"/issues/{world.issues['Alpha']}/events/", query=query)
        return sorted(e["eventID"] for e in found)

    latest, older = ids("release:shop@2.0"), ids("release:shop@1.0")
    assert len(latest) == 1 and len(older) == 1 and latest != older
    assert ids("release:latest") == latest
    assert ids("!release:latest") == older


def test_health_gives_crash_free_sessions_and_users_of_the_sdks_sessions(
        world: World) -> None:
    listed = {r["version"]: r for r in world.ok(world.releases, health="1")}
    (first,) = listed["shop@1.0"]["projects"]
    health = first["healthData"]
    # Four sessions, one crashed; three users (u1, u2, u3), one of them (u1) crashed.
    assert (health["totalSessions"], health["sessionsCrashed"]) == (4, 1)
    assert (health["totalUsers"], health["usersCrashed"]) == (3, 1)
    assert health["crashFreeSessions"] == pytest.approx(75.0)
    assert health["crashFreeUsers"] == pytest.approx(100 * 2 / 3)
    assert first["hasHealthData"] is True
    (second,) = listed["shop@2.0"]["projects"]
    assert second["healthData"]["crashFreeSessions"] == 100.0
    assert second["healthData"]["totalUsers"] == 2
    # Without health=1 there is no healthData; a period with no sessions has null rates.
    assert "healthData" not in world.ok(world.releases)[0]["projects"][0]
    detail = world.ok(f"{world.releases}shop@1.0/", health="1", summaryStatsPeriod="24h")
    assert detail["projects"][0]["healthData"] == health


def test_a_bad_health_period_is_refused_naming_the_parameter(world: World) -> None:
    response = world.get(world.releases, health="1", summaryStatsPeriod="forever")
    assert response.status_code == 400
    assert "summaryStatsPeriod" in response.json()["detail"]


def test_another_organization_sees_only_its_own_release_of_the_same_version(
        world: World) -> None:
    ours = f"/organizations/{world.h.organization_slug}/releases/"
    # Our organization's URLs are not found for eve, whatever the release.
    assert world.get(ours, token=world.eve).status_code == 404
    assert world.get(f"{ours}shop@1.0/", token=world.eve).status_code == 404
    # Her own shop@1.0 counts her issue and session only; shop@2.0 does not exist there.
    theirs = "/organizations/rivals/releases/"
    # Through her own project's URL, only her project's release is found.
    assert world.get("/projects/rivals/rival/releases/shop@2.0/", token=world.eve
                     ).status_code == 404
    assert world.get(f"/projects/{world.h.organization_slug}/{world.h.project_slug}"
                     "/releases/shop@1.0/", token=world.eve).status_code == 404
    assert world.get(f"{theirs}shop@2.0/", token=world.eve).status_code == 404
    assert world.get(f"{theirs}shop@2.0/new-issues/", token=world.eve).status_code == 404
    mine = world.get(f"{theirs}shop@1.0/", token=world.eve, health="1").json()
    assert (mine["newGroups"], mine["eventCount"]) == (1, 1)
    assert [p["slug"] for p in mine["projects"]] == ["rival"]
    assert mine["projects"][0]["healthData"]["totalSessions"] == 1
    assert mine["projects"][0]["healthData"]["crashFreeSessions"] == 0.0
    new = world.get(f"{theirs}shop@1.0/new-issues/", token=world.eve).json()
    assert [i["title"].split(":")[0] for i in new] == ["Rival"]
    # And our shop@1.0 did not count hers.
    assert world.ok(f"{ours}shop@1.0/", health="1")["projects"][0]["healthData"][
        "totalSessions"] == 4
