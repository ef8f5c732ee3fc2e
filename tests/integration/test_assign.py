"""Assignees, bookmarks and subscriptions through the Web API as Sentry clients send them
(``PUT /api/0/issues/{id}/``, the bulk ``PUT …/issues/?id=``), the triage search terms over
real PostgreSQL, and the tenant line: another organization's users and teams are never
assignable, and its users see nothing. Real parts: see tests/integration/triage_world.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storage.clickhouse import ClickHouseStore
from tests.integration.triage_world import World, build_world

pytestmark = pytest.mark.integration


@pytest.fixture
def w(chdb_store: ClickHouseStore) -> Iterator[World]:
    yield from build_world(chdb_store, "crashray_assign")


def assign(w: World, issue_id: int, value: object, who: str = "ada") -> dict[str, Any]:
    response = w.call(who, "PUT", f"/issues/{issue_id}/", json={"assignedTo": value})
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


def test_assigning_by_username_shows_sentrys_assigned_to_activity_and_subscribes(
        w: World) -> None:
    alpha = w.issues["Alpha"]
    shown = assign(w, alpha, "bob")
    assert shown["assignedTo"] == {"type": "user", "id": str(w.user_ids["bob"]), "name": "bob",
                                   "email": "bob@example.com"}
    activity = shown["activity"]
    assert isinstance(activity, list)
    assert activity[0]["type"] == "assigned" and activity[0]["user"]["name"] == "ada"
    assert activity[0]["data"]["assignee"] == str(w.user_ids["bob"])
    as_bob = w.issue("bob", alpha)
    assert as_bob["isSubscribed"] and as_bob["subscriptionDetails"] == {"reason": "assigned"}
    assert not w.issue("ada", alpha)["isSubscribed"]
    # Assigning again changes nothing and records nothing.
    assert len(assign(w, alpha, f"user:{w.user_ids['bob']}")["activity"]) == len(activity)


@pytest.mark.parametrize("form", ["user:{bob}", "{bob}", "bob@example.com", "BOB@example.com"])
def test_every_user_form_sentry_accepts_names_the_same_member(w: World, form: str) -> None:
    shown = assign(w, w.issues["Beta"], form.format(bob=w.user_ids["bob"]))
    assert shown["assignedTo"] == {"type": "user", "id": str(w.user_ids["bob"]),
                                   "name": "bob", "email": "bob@example.com"}


@pytest.mark.parametrize("form", ["team:{team}", "#backend"])
def test_a_team_is_assigned_by_id_or_slug_and_unassigned_with_empty_or_null(
        w: World, form: str) -> None:
    gamma = w.issues["Gamma"]
    shown = assign(w, gamma, form.format(team=w.backend_team))
    assert shown["assignedTo"] == {"type": "team", "id": str(w.backend_team), "name": "backend"}
    assert assign(w, gamma, "")["assignedTo"] is None
    assign(w, gamma, "#backend")
    unassigned = assign(w, gamma, None)
    assert unassigned["assignedTo"] is None
    activity = unassigned["activity"]
    assert isinstance(activity, list)
    assert [a["type"] for a in activity[:2]] == ["unassigned", "assigned"]


@pytest.mark.parametrize("value", ["eve", "eve@example.com", "user:{eve}", "team:{rivals}",
                                   "#intruders", "nobody", "user:99999999999999999999"])
def test_another_organizations_people_are_refused_with_a_400_naming_the_value(
        w: World, value: str) -> None:
    alpha = w.issues["Alpha"]
    assign(w, alpha, "bob")
    named = value.format(eve=w.user_ids["eve"], rivals=w.rival_team)
    response = w.call("ada", "PUT", f"/issues/{alpha}/", json={"assignedTo": named})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith("assignedTo:") and repr(named) in detail
    assert "no member or team of this organization" in detail or "numeric id" in detail
    assert w.issue("ada", alpha)["assignedTo"]["name"] == "bob"  # unchanged


def test_another_organizations_user_can_neither_read_nor_assign_the_issue(w: World) -> None:
    alpha = w.issues["Alpha"]
    assert w.call("eve", "GET", f"/issues/{alpha}/").status_code == 404
    assert w.call("eve", "PUT", f"/issues/{alpha}/",
                  json={"assignedTo": "eve"}).status_code == 404
    assert w.call("eve", "PUT", f"/projects/{w.h.organization_slug}/{w.h.project_slug}/"
                  f"issues/?id={alpha}", json={"assignedTo": "eve"}).status_code == 404


def test_bulk_update_assigns_several_issues_and_echoes_the_assignee(w: World) -> None:
    ids = [w.issues["Alpha"], w.issues["Beta"]]
    response = w.call("ada", "PUT", f"/projects/{w.h.organization_slug}/{w.h.project_slug}/"
                      "issues/", params={"id": ids}, json={"assignedTo": "#backend"})
    assert response.status_code == 200, response.text
    assert response.json() == {"assignedTo": {"type": "team", "id": str(w.backend_team),
                                              "name": "backend"}}
    assert w.search("ada", "assigned:#backend") == sorted(ids)
    refused = w.call("ada", "PUT", f"/projects/{w.h.organization_slug}/{w.h.project_slug}/"
                     "issues/", params={"id": ids}, json={"assignedTo": "#intruders"})
    assert refused.status_code == 400


def test_triage_search_terms_find_the_issues_they_name(w: World) -> None:
    alpha, beta, gamma = w.issues["Alpha"], w.issues["Beta"], w.issues["Gamma"]
    assign(w, alpha, "bob")
    assign(w, beta, "#backend")
    assert w.search("bob", "assigned:me") == [alpha]
    assert w.search("ada", "assigned:me") == []
    assert w.search("ada", "assigned:bob") == [alpha]
    assert w.search("ada", "assigned:bob@example.com") == [alpha]
    assert w.search("ada", "assigned:#backend") == [beta]
    assert w.search("bob", "assigned:my_teams") == [beta]
    assert w.search("bob", "assigned:[me, my_teams]") == sorted([alpha, beta])
    assert w.search("ada", "is:assigned") == sorted([alpha, beta])
    assert w.search("ada", "is:unassigned") == [gamma]
    assert w.search("ada", "!is:assigned") == [gamma]
    assert w.search("ada", "assigned:[none, bob]") == sorted([alpha, gamma])
    assert w.search("ada", "!assigned:bob") == sorted([beta, gamma])
    # Names outside the organization match nothing, even where they exist elsewhere.
    assert w.search("ada", "assigned:eve") == []
    assert w.search("ada", "assigned:#intruders") == []


def test_assigned_me_with_an_organization_token_is_a_400_saying_to_name_the_user(
        w: World) -> None:
    response = w.call("org-token", "GET", f"/projects/{w.h.organization_slug}/"
                      f"{w.h.project_slug}/issues/", params={"query": "assigned:me"})
    assert response.status_code == 400
    assert "assigned:<username>" in response.json()["detail"]
    assert w.call("org-token", "GET", f"/projects/{w.h.organization_slug}/"
                  f"{w.h.project_slug}/issues/", params={"query": "assigned:bob"}
                  ).status_code == 200


def test_bookmarks_are_per_user_and_searchable(w: World) -> None:
    alpha = w.issues["Alpha"]
    response = w.call("ada", "PUT", f"/issues/{alpha}/", json={"isBookmarked": True})
    assert response.status_code == 200 and response.json()["isBookmarked"] is True
    assert w.issue("bob", alpha)["isBookmarked"] is False
    assert w.search("ada", "is:bookmarked") == [alpha]
    assert w.search("ada", "bookmarks:me") == [alpha]
    assert w.search("bob", "bookmarks:ada") == [alpha]
    assert w.search("bob", "is:bookmarked") == []
    assert w.search("bob", "bookmarks:eve") == []
    w.call("ada", "PUT", f"/issues/{alpha}/", json={"isBookmarked": False})
    assert w.search("ada", "is:bookmarked") == []
    stream = w.call("ada", "GET", f"/projects/{w.h.organization_slug}/{w.h.project_slug}/"
                    "issues/").json()
    assert {i["isBookmarked"] for i in stream} == {False}
    assert all("assignedTo" in i and "isSubscribed" in i for i in stream)


def test_an_explicit_unsubscribe_outlasts_taking_part_and_resolving_subscribes(
        w: World) -> None:
    alpha, beta = w.issues["Alpha"], w.issues["Beta"]
    w.call("bob", "PUT", f"/issues/{alpha}/", json={"isSubscribed": False})
    assign(w, alpha, "bob")
    assert w.issue("bob", alpha)["isSubscribed"] is False
    resolved = w.call("bob", "PUT", f"/issues/{beta}/", json={"status": "resolved"})
    assert resolved.status_code == 200
    assert resolved.json()["subscriptionDetails"] == {"reason": "status_change"}
    assert w.search("bob", "subscribed:me") == [beta]
    w.call("bob", "PUT", f"/issues/{alpha}/", json={"isSubscribed": True})
    assert w.search("bob", "subscribed:me") == sorted([alpha, beta])


def test_an_organization_token_cannot_bookmark_and_an_empty_update_is_refused(
        w: World) -> None:
    alpha = w.issues["Alpha"]
    response = w.call("org-token", "PUT", f"/issues/{alpha}/", json={"isBookmarked": True})
    assert response.status_code == 400 and "isBookmarked" in response.json()["detail"]
    empty = w.call("ada", "PUT", f"/issues/{alpha}/", json={})
    assert empty.status_code == 400 and "assignedTo" in empty.json()["detail"]
    # Sentry's dashboard marks an issue seen: accepted, nothing changes.
    seen = w.call("ada", "PUT", f"/issues/{alpha}/", json={"hasSeen": True})
    assert seen.status_code == 200 and seen.json()["status"] == "unresolved"
