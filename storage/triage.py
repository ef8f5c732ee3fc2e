"""Triage in PostgreSQL: assignees, notes (comments), bookmarks and subscriptions.

Tenant scope: an assignee is looked up among the members and teams of the organization
the issue belongs to (``find_assignee`` takes that organization), so another tenant's
user or team is never found; every write names the issue's project (``ProjectScope``);
bookmarks and subscriptions are per user, read for issues the caller already sees.

Subscriptions follow Sentry's GroupSubscription: a user who is assigned, comments,
is mentioned or resolves an issue is subscribed (``participate``) unless they
unsubscribed from it before (an inactive row is kept and never overwritten by taking part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from storage.issues import ACTIVITY_COLUMNS, Activity, activity_of_row, add_activity
from storage.scope import ProjectScope

#: Ids beyond a bigint cannot exist (and psycopg would refuse to send them).
_MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True)
class Assignee:
    """A user or a team of the issue's organization (Sentry's ``assignedTo``)."""

    type: Literal["user", "team"]
    id: int
    name: str
    email: str | None = None


def find_assignee(conn: psycopg.Connection[Any], organization_id: int,
                  kind: Literal["user_id", "team_id", "name", "team_slug"], value: str
                  ) -> Assignee | None:
    """The member (by user id, username or e-mail) or team (by id or slug) of
    ``organization_id`` that ``value`` names; None when the organization has none such."""
    if kind in ("team_id", "team_slug"):
        column = "id" if kind == "team_id" else "slug"
        if kind == "team_id" and not (value.isdigit() and int(value) <= _MAX_BIGINT):
            return None
        row = conn.execute(f"SELECT id, slug FROM teams WHERE organization_id = %s"
                           f" AND {column} = %s", (organization_id,
                                                   int(value) if kind == "team_id" else value)
                           ).fetchone()
        return None if row is None else Assignee("team", int(row[0]), str(row[1]))
    args: list[Any]
    if kind == "user_id":
        if not (value.isdigit() and int(value) <= _MAX_BIGINT):
            return None
        where, args = "u.id = %s", [int(value)]
    else:
        where, args = "(u.username = %s OR lower(u.email) = lower(%s))", [value, value]
    row = conn.execute("SELECT u.id, u.username, u.email FROM users u JOIN organization_members"
                       " m ON m.user_id = u.id WHERE m.organization_id = %s AND " + where
                       + " ORDER BY u.username = %s DESC LIMIT 1",
                       (organization_id, *args, value)).fetchone()
    return None if row is None else Assignee("user", int(row[0]), str(row[1]), row[2])


def assignees(conn: psycopg.Connection[Any], organization_id: int,
              user_ids: Sequence[int], team_ids: Sequence[int]
              ) -> tuple[dict[int, Assignee], dict[int, Assignee]]:
    """Users and teams by id (the assignees of a page of issues), within the organization."""
    users = {int(r[0]): Assignee("user", int(r[0]), str(r[1]), r[2]) for r in conn.execute(
        "SELECT u.id, u.username, u.email FROM users u JOIN organization_members m"
        " ON m.user_id = u.id WHERE m.organization_id = %s AND u.id = ANY(%s)",
        (organization_id, sorted(set(user_ids)))).fetchall()} if user_ids else {}
    teams = {int(r[0]): Assignee("team", int(r[0]), str(r[1])) for r in conn.execute(
        "SELECT id, slug FROM teams WHERE organization_id = %s AND id = ANY(%s)",
        (organization_id, sorted(set(team_ids)))).fetchall()} if team_ids else {}
    return users, teams


def set_assignee(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                 assignee: Assignee | None, actor: str, actor_user_id: int | None) -> bool:
    """Assign the issue (None: unassign) and record it in its activity, subscribing an
    assigned user; False when it was so already (nothing recorded). Call inside a
    transaction."""
    user_id = assignee.id if assignee is not None and assignee.type == "user" else None
    team_id = assignee.id if assignee is not None and assignee.type == "team" else None
    changed = conn.execute(
        "UPDATE issues SET assignee_user_id = %s, assignee_team_id = %s"
        " WHERE project_id = %s AND id = %s AND (assignee_user_id, assignee_team_id)"
        " IS DISTINCT FROM (%s::bigint, %s::bigint)",
        (user_id, team_id, project.id, issue_id, user_id, team_id)).rowcount
    if not changed:
        return False
    if assignee is None:
        add_activity(conn, issue_id, project.id, "unassigned", {}, actor)
        return True
    data: dict[str, Any] = {"assignee": str(assignee.id), "assigneeType": assignee.type,
                            "assigneeName": assignee.name}
    add_activity(conn, issue_id, project.id, "assigned", data, actor)
    if user_id is not None:
        participate(conn, issue_id, user_id, "assigned")
    return True


# --- subscriptions and bookmarks ----------------------------------------------------------
def participate(conn: psycopg.Connection[Any], issue_id: int, user_id: int, reason: str
                ) -> None:
    """Subscribe a user who took part, unless they unsubscribed from this issue before."""
    conn.execute("INSERT INTO issue_subscriptions (issue_id, user_id, is_active, reason)"
                 " VALUES (%s, %s, true, %s) ON CONFLICT DO NOTHING",
                 (issue_id, user_id, reason))


def set_subscribed(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                   user_id: int, subscribed: bool) -> None:
    """The user's explicit choice (kept: taking part later does not undo an unsubscribe)."""
    conn.execute("INSERT INTO issue_subscriptions (issue_id, user_id, is_active, reason)"
                 " SELECT id, %s, %s, 'explicit' FROM issues WHERE project_id = %s AND id = %s"
                 " ON CONFLICT (issue_id, user_id) DO UPDATE SET is_active = excluded.is_active,"
                 " reason = 'explicit'", (user_id, subscribed, project.id, issue_id))


def set_bookmarked(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                   user_id: int, bookmarked: bool) -> None:
    if bookmarked:
        conn.execute("INSERT INTO issue_bookmarks (issue_id, user_id) SELECT id, %s FROM issues"
                     " WHERE project_id = %s AND id = %s ON CONFLICT DO NOTHING",
                     (user_id, project.id, issue_id))
    else:
        conn.execute("DELETE FROM issue_bookmarks WHERE user_id = %s AND issue_id IN"
                     " (SELECT id FROM issues WHERE project_id = %s AND id = %s)",
                     (user_id, project.id, issue_id))


@dataclass(frozen=True)
class ViewerState:
    """What one user set on some issues: bookmarks, and subscriptions with their reason."""

    bookmarked: frozenset[int]
    subscribed: Mapping[int, str]


def viewer_state(conn: psycopg.Connection[Any], user_id: int | None, issue_ids: Sequence[int]
                 ) -> ViewerState:
    """The user's bookmarks and active subscriptions among ``issue_ids`` (issues the caller
    was already allowed to read); nothing for an organization token (no user)."""
    if user_id is None or not issue_ids:
        return ViewerState(frozenset(), {})
    ids = sorted(set(issue_ids))
    marks = conn.execute("SELECT issue_id FROM issue_bookmarks WHERE user_id = %s"
                         " AND issue_id = ANY(%s)", (user_id, ids)).fetchall()
    subs = conn.execute("SELECT issue_id, reason FROM issue_subscriptions WHERE user_id = %s"
                        " AND issue_id = ANY(%s) AND is_active", (user_id, ids)).fetchall()
    return ViewerState(frozenset(int(r[0]) for r in marks), {int(r[0]): str(r[1]) for r in subs})


def subscribers(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int
                ) -> list[int]:
    """The users following an issue (for notifications: "issue owners / subscribers")."""
    rows = conn.execute("SELECT s.user_id FROM issue_subscriptions s JOIN issues i"
                        " ON i.id = s.issue_id WHERE i.project_id = %s AND s.issue_id = %s"
                        " AND s.is_active ORDER BY s.user_id", (project.id, issue_id)).fetchall()
    return [int(r[0]) for r in rows]


# --- notes (comments) ------------------------------------------------------------------------
def add_note(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
             data: Mapping[str, Any], actor: str, user_id: int | None) -> Activity:
    """A note (Sentry's activity of type ``note``) on the issue, by ``actor``; call inside
    a transaction."""
    row = conn.execute(
        "INSERT INTO issue_activity (issue_id, project_id, type, data, actor, user_id)"
        " SELECT id, project_id, 'note', %s, %s, %s FROM issues WHERE project_id = %s"
        f" AND id = %s RETURNING {ACTIVITY_COLUMNS}",
        (Jsonb(dict(data)), actor, user_id, project.id, issue_id)).fetchone()
    assert row is not None  # the caller resolved the issue in this project
    return activity_of_row(row)


def get_note(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
             note_id: int) -> Activity | None:
    row = conn.execute(f"SELECT {ACTIVITY_COLUMNS} FROM issue_activity WHERE project_id = %s"
                       " AND issue_id = %s AND id = %s AND type = 'note'",
                       (project.id, issue_id, note_id)).fetchone()
    return None if row is None else activity_of_row(row)


def update_note(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                note_id: int, data: Mapping[str, Any]) -> Activity | None:
    row = conn.execute("UPDATE issue_activity SET data = %s, date_updated = now()"
                       " WHERE project_id = %s AND issue_id = %s AND id = %s AND type = 'note'"
                       f" RETURNING {ACTIVITY_COLUMNS}",
                       (Jsonb(dict(data)), project.id, issue_id, note_id)).fetchone()
    return None if row is None else activity_of_row(row)


def delete_note(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                note_id: int) -> bool:
    return bool(conn.execute("DELETE FROM issue_activity WHERE project_id = %s AND issue_id = %s"
                             " AND id = %s AND type = 'note'",
                             (project.id, issue_id, note_id)).rowcount)


def mentioned_users(conn: psycopg.Connection[Any], organization_id: int,
                    usernames: Sequence[str], user_ids: Sequence[int],
                    team_slugs: Sequence[str], team_ids: Sequence[int]
                    ) -> tuple[set[int], set[int], set[int]]:
    """Of what a note mentions, the members (by username or id) and teams (by slug or id)
    of ``organization_id``, and the users in those teams: (users, teams, team members)."""
    users = {int(r[0]) for r in conn.execute(
        "SELECT u.id FROM users u JOIN organization_members m ON m.user_id = u.id"
        " WHERE m.organization_id = %s AND (u.username = ANY(%s) OR u.id = ANY(%s))",
        (organization_id, list(usernames), [i for i in user_ids if i <= _MAX_BIGINT])
    ).fetchall()}
    teams = {int(r[0]) for r in conn.execute(
        "SELECT id FROM teams WHERE organization_id = %s AND (slug = ANY(%s) OR id = ANY(%s))",
        (organization_id, list(team_slugs), [i for i in team_ids if i <= _MAX_BIGINT])
    ).fetchall()}
    members = {int(r[0]) for r in conn.execute(
        "SELECT m.user_id FROM team_members tm JOIN organization_members m"
        " ON m.id = tm.member_id WHERE m.organization_id = %s AND tm.team_id = ANY(%s)",
        (organization_id, sorted(teams))).fetchall()} if teams else set()
    return users, teams, members
