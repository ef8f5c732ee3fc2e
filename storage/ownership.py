"""Ownership rules of projects (``project_ownership``), and the owners they name looked up
within the project's organization.

Tenant scope: every function takes the project (``ProjectScope``) or, for the consumers'
settings load, project ids fixed at ingest; owners are members and teams of the project's
own organization only (``unknown_owners`` tells the API which are not).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from events.ownership import Owner
from storage.scope import ProjectScope


@dataclass(frozen=True)
class Ownership:
    raw: str
    fallthrough: bool
    auto_assignment: bool
    date_updated: dt.datetime | None


def get_ownership(conn: psycopg.Connection[Any], project: ProjectScope) -> Ownership:
    """The project's rules (none yet: empty, Sentry's defaults)."""
    row = conn.execute(
        "SELECT o.raw, o.fallthrough, o.auto_assignment, o.date_updated FROM project_ownership o"
        " JOIN projects p ON p.id = o.project_id WHERE o.project_id = %s"
        " AND p.organization_id = %s", (project.id, project.organization_id)).fetchone()
    if row is None:
        return Ownership("", True, True, None)
    return Ownership(str(row[0]), bool(row[1]), bool(row[2]), row[3])


def put_ownership(conn: psycopg.Connection[Any], project: ProjectScope, raw: str,
                  fallthrough: bool, auto_assignment: bool) -> Ownership:
    row = conn.execute(
        "INSERT INTO project_ownership (project_id, raw, fallthrough, auto_assignment)"
        " SELECT id, %s, %s, %s FROM projects WHERE id = %s AND organization_id = %s"
        " ON CONFLICT (project_id) DO UPDATE SET raw = excluded.raw,"
        " fallthrough = excluded.fallthrough, auto_assignment = excluded.auto_assignment,"
        " date_updated = now() RETURNING raw, fallthrough, auto_assignment, date_updated",
        (raw, fallthrough, auto_assignment, project.id, project.organization_id)).fetchone()
    assert row is not None  # the caller resolved the project in its organization
    return Ownership(str(row[0]), bool(row[1]), bool(row[2]), row[3])


def unknown_owners(conn: psycopg.Connection[Any], project: ProjectScope,
                   owners: Sequence[Owner]) -> list[Owner]:
    """The owners that are no member (by e-mail or username) or team (by slug) of the
    project's organization."""
    users = [o.name for o in owners if o.kind == "user"]
    teams = [o.name for o in owners if o.kind == "team"]
    org = project.organization_id
    known_users = {str(r[0]) for r in conn.execute(
        "SELECT n FROM unnest(%s::text[]) AS n WHERE EXISTS (SELECT 1 FROM users u JOIN"
        " organization_members m ON m.user_id = u.id WHERE m.organization_id = %s AND"
        " (u.username = n OR lower(u.email) = lower(n)))", (users, org)).fetchall()}
    known_teams = {str(r[0]) for r in conn.execute(
        "SELECT slug FROM teams WHERE organization_id = %s AND slug = ANY(%s)",
        (org, teams)).fetchall()}
    return [o for o in owners if o.name not in (known_users if o.kind == "user"
                                                 else known_teams)]


def auto_assigned_rules(conn: psycopg.Connection[Any], project_ids: Sequence[int]
                        ) -> dict[int, str]:
    """The rules text of those of ``project_ids`` that auto-assign (for the consumers'
    settings load); a project without rules is left out."""
    rows = conn.execute("SELECT project_id, raw FROM project_ownership WHERE"
                        " project_id = ANY(%s) AND auto_assignment AND raw <> ''",
                        (list(project_ids),)).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}
