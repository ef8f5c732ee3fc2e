"""What a new instance starts with, created on the first ``crashray up`` (and completed on
later starts of instances made before a part was added):

* organization ``crashray``,
* team ``crashray`` (as Sentry's first organization has a team of its name), which owns
* project ``default`` with a DSN key,
* and an API token with an owner's scopes (``team:*`` and ``member:*`` included), so the
  printed token can list teams and create projects under them as Sentry's API expects.

Later starts find them and create nothing new (``api_token`` is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg

from events.access import ROLE_SCOPES
from storage.keys import add_project_key
from storage.postgres import create_api_token

#: pg_advisory_xact_lock id serializing concurrent first starts ("crashray" + 1).
_BOOTSTRAP_LOCK_ID: Final = 0x63726174


@dataclass(frozen=True)
class BootstrapResult:
    organization_slug: str
    team_slug: str
    project_slug: str
    project_id: int
    public_key: str
    api_token: str | None


def bootstrap(conn: psycopg.Connection[Any], *, org_slug: str = "crashray",
              project_slug: str = "default", grouping_config: str) -> BootstrapResult:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK_ID,))
        org = conn.execute("SELECT id FROM organizations WHERE slug = %s", (org_slug,)).fetchone()
        token: str | None = None
        if org is None:
            org_id = _insert_id(conn, "INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                                " RETURNING id", (org_slug, org_slug.capitalize()))
            token = create_api_token(conn, org_id, "owner (created by crashray up)",
                                     sorted(ROLE_SCOPES["owner"]))
        else:
            org_id = int(org[0])
        team_id = _ensure_team(conn, org_id, org_slug)
        project_id, public_key = ensure_project(conn, org_id, project_slug, grouping_config,
                                                team_id)
    return BootstrapResult(org_slug, org_slug, project_slug, project_id, public_key, token)


def _ensure_team(conn: psycopg.Connection[Any], org_id: int, slug: str) -> int:
    row = conn.execute("SELECT id FROM teams WHERE organization_id = %s AND slug = %s",
                       (org_id, slug)).fetchone()
    if row is not None:
        return int(row[0])
    return _insert_id(conn, "INSERT INTO teams (organization_id, slug, name) VALUES"
                      " (%s, %s, %s) RETURNING id", (org_id, slug, slug.capitalize()))


def ensure_project(conn: psycopg.Connection[Any], org_id: int, slug: str,
                   grouping_config: str, team_id: int | None = None) -> tuple[int, str]:
    """The project ``slug`` of ``org_id`` and its first active key, created if missing (a new
    project groups with ``grouping_config``, the newest version); a project without a team
    joins ``team_id``."""
    row = conn.execute("SELECT id FROM projects WHERE organization_id = %s AND slug = %s",
                       (org_id, slug)).fetchone()
    if row is None:
        project_id = _insert_id(
            conn, "INSERT INTO projects (organization_id, slug, name, grouping_config)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (org_id, slug, slug, grouping_config))
    else:
        project_id = int(row[0])
    if team_id is not None:
        conn.execute("INSERT INTO project_teams (project_id, team_id) SELECT %s, %s"
                     " WHERE NOT EXISTS (SELECT 1 FROM project_teams WHERE project_id = %s)",
                     (project_id, team_id, project_id))
    key = conn.execute("SELECT public_key FROM project_keys WHERE project_id = %s"
                       " AND is_active ORDER BY id LIMIT 1", (project_id,)).fetchone()
    if key is not None:
        return project_id, str(key[0])
    return project_id, add_project_key(conn, project_id)


def _insert_id(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])
