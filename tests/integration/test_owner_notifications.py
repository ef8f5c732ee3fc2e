"""Sentry's e-mail alert action to "Issue Owners" and to a "Team": whom a fired rule's
delivery is addressed to (storage/notifications.py ``enqueue``). An issue's owners are its
assignee (Crashray's ownership rules assign new issues to their owner): the member, or the
team's members; nobody owning it, the action's ``fallthroughType`` decides (every member,
or no one, and then no delivery at all). The tenant line: an issue or team of another
organization never adds its people.

Real parts: a scratch PostgreSQL database built by the migrations; the rows are made with
storage/tenancy.py as the API makes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from events.grouping import DEFAULT_GROUPING_CONFIG
from events.notify import SENTRY_EMAIL_ACTION
from storage import notifications as store
from storage import postgres, tenancy, triage
from storage.scope import ProjectScope
from tests.support import scratch_database

pytestmark = pytest.mark.integration


@dataclass
class World:
    url: str
    org: int
    project: int
    issues: dict[str, int]  # "ada", "ops", "nobody" → an issue assigned so
    ops: int  # the team of bob and cy
    rival_team: int  # a team of another organization (eve)
    rival_issue: int  # an issue of another organization, assigned to eve


def issue(conn: psycopg.Connection[Any], project: int, user: int | None = None,
          team: int | None = None) -> int:
    row = conn.execute(
        "INSERT INTO issues (project_id, title, first_seen, last_seen, assignee_user_id,"
        " assignee_team_id) VALUES (%s, 'ValueError', now(), now(), %s, %s) RETURNING id",
        (project, user, team)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with scratch_database("crashray_owner_mail") as url:
        postgres.migrate(url)
        with psycopg.connect(url) as conn:
            org = tenancy.create_organization(conn, "acme", "Acme", None)
            people = {name: tenancy.create_user(conn, name, f"{name}@acme.example",
                                                "correct horse") for name in ("ada", "bob", "cy")}
            people["dan"] = tenancy.create_user(conn, "dan", None, "correct horse")  # no address
            for user in people.values():
                tenancy.add_member(conn, org, user, "member")
            ops = tenancy.create_team(conn, org, "ops", "Ops")
            for name in ("bob", "cy", "dan"):
                tenancy.add_team_member(conn, ops, org, people[name])
            project = tenancy.create_project(conn, org, "backend", "Backend",
                                             DEFAULT_GROUPING_CONFIG).id
            rivals = tenancy.create_organization(conn, "rivals", "Rivals", None)
            eve = tenancy.create_user(conn, "eve", "eve@rivals.example", "correct horse")
            tenancy.add_member(conn, rivals, eve, "owner")
            rival_team = tenancy.create_team(conn, rivals, "red", "Red")
            tenancy.add_team_member(conn, rival_team, rivals, eve)
            rival_project = tenancy.create_project(conn, rivals, "app", "App",
                                                   DEFAULT_GROUPING_CONFIG).id
            issues = {"ada": issue(conn, project, user=people["ada"]),
                      "ops": issue(conn, project, team=ops),
                      "nobody": issue(conn, project)}
            rival_issue = issue(conn, rival_project, user=eve)
            conn.commit()
        yield World(url, org, project, issues, ops, rival_team, rival_issue)


def addressed(w: World, action: dict[str, Any], issue_id: int | None
              ) -> list[tuple[str, str, str | None]]:
    """Enqueue one delivery of ``action`` for the issue; its rows' (destination, status,
    error)."""
    delivery = store.NewDelivery(w.org, w.project, 1, issue_id, uuid.uuid4().hex,
                                 {"id": SENTRY_EMAIL_ACTION, **action}, {"title": "x"})
    with psycopg.connect(w.url) as conn, conn.transaction():
        ids = store.enqueue(conn, [delivery])
        rows = conn.execute("SELECT destination, status, last_error FROM"
                            " notification_deliveries WHERE id = ANY(%s) ORDER BY id",
                            (ids,)).fetchall()
        conn.execute("DELETE FROM notification_deliveries")
        conn.execute("DELETE FROM notification_destination_health")
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def test_issue_owners_are_the_assigned_member(world: World) -> None:
    assert addressed(world, {"targetType": "IssueOwners"}, world.issues["ada"]) == [
        ("email:ada@acme.example", "pending", None)]


def test_issue_owners_are_the_assigned_teams_members_with_an_address(world: World) -> None:
    assert addressed(world, {"targetType": "IssueOwners"}, world.issues["ops"]) == [
        ("email:bob@acme.example,cy@acme.example", "pending", None)]


def test_an_unowned_issue_falls_through_to_every_member_by_default(world: World) -> None:
    everyone = ("email:ada@acme.example,bob@acme.example,cy@acme.example", "pending", None)
    assert addressed(world, {"targetType": "IssueOwners"}, world.issues["nobody"]) == [
        everyone]
    assert addressed(world, {"targetType": "IssueOwners", "fallthroughType": "AllMembers"},
                     world.issues["nobody"]) == [everyone]


def test_an_unowned_issue_falling_through_to_no_one_sends_nothing(world: World) -> None:
    assert addressed(world, {"targetType": "IssueOwners", "fallthroughType": "NoOne"},
                     world.issues["nobody"]) == []
    # An owned issue is still sent to its owner.
    assert addressed(world, {"targetType": "IssueOwners", "fallthroughType": "NoOne"},
                     world.issues["ada"])[0][0] == "email:ada@acme.example"


def test_a_team_action_addresses_the_teams_members(world: World) -> None:
    assert addressed(world, {"targetType": "Team", "targetIdentifier": str(world.ops)},
                     world.issues["nobody"]) == [
        ("email:bob@acme.example,cy@acme.example", "pending", None)]


def test_another_organizations_issue_or_team_adds_none_of_its_people(world: World) -> None:
    # A delivery of our project naming their issue: it owns nothing here, so the action
    # falls through to our members, never to eve.
    rows = addressed(world, {"targetType": "IssueOwners"}, world.rival_issue)
    assert rows and "eve@" not in rows[0][0]
    (row,) = addressed(world, {"targetType": "Team",
                               "targetIdentifier": str(world.rival_team)}, None)
    assert row[1] == "failed" and "eve@" not in row[0]
    assert row[2] is not None and f"team {world.rival_team} is no team" in row[2]


def user_id(w: World, name: str) -> int:
    with psycopg.connect(w.url) as conn:
        row = conn.execute("SELECT id FROM users WHERE username = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_issue_subscribers_are_the_members_who_follow_the_issue(world: World) -> None:
    """Crashray's "IssueSubscribers": who subscribed, or took part (assigned, commented,
    resolved), and did not unsubscribe; a user of another organization who somehow holds a
    subscription to our issue is no member here and gets nothing."""
    scope = ProjectScope(world.org, world.project)
    followed = world.issues["nobody"]
    with psycopg.connect(world.url) as conn, conn.transaction():
        triage.participate(conn, followed, user_id(world, "cy"), "comment")
        triage.set_subscribed(conn, scope, followed, user_id(world, "ada"), True)
        triage.set_subscribed(conn, scope, followed, user_id(world, "bob"), True)
        triage.set_subscribed(conn, scope, followed, user_id(world, "bob"), False)
        conn.execute("INSERT INTO issue_subscriptions (issue_id, user_id, is_active, reason)"
                     " VALUES (%s, %s, true, 'explicit')", (followed, user_id(world, "eve")))
    assert addressed(world, {"targetType": "IssueSubscribers"}, followed) == [
        ("email:ada@acme.example,cy@acme.example", "pending", None)]
    # Nobody follows the issue: nothing to send, and no failed delivery either.
    assert addressed(world, {"targetType": "IssueSubscribers"}, world.issues["ada"]) == []
    # Our delivery naming another organization's issue reaches none of its followers.
    with psycopg.connect(world.url) as conn, conn.transaction():
        conn.execute("INSERT INTO issue_subscriptions (issue_id, user_id, is_active, reason)"
                     " VALUES (%s, %s, true, 'explicit')",
                     (world.rival_issue, user_id(world, "eve")))
    assert addressed(world, {"targetType": "IssueSubscribers"}, world.rival_issue) == []
