"""Organizations, teams, members, projects, DSN keys and tokens through the Web API, in
Sentry's shapes; every call is scoped to the caller's access (serve_apps/query.py resolves
it) and checks the scope its role grants (events/access.py).

Routes (registered by ``serve_apps/query.py``)::

    POST   /api/0/organizations/                        a user: {"slug", "name"} → owner
    GET    /api/0/organizations/{org}/teams/            team:read
    POST   /api/0/organizations/{org}/teams/            team:write   {"slug", "name"}
    GET    /api/0/organizations/{org}/members/          member:read
    POST   /api/0/organizations/{org}/members/          member:write {"username", "role",
                                                                      "teams": [slug]}
    PUT    /api/0/teams/{org}/{team}/                   team:write   {"name"}
    POST   /api/0/teams/{org}/{team}/projects/          project:write {"slug", "name",
                                                                       "platform"}
    POST   /api/0/projects/{org}/{project}/keys/        project:write {"name"}
    DELETE /api/0/projects/{org}/{project}/keys/{key}/  project:write
    GET    /api/0/api-tokens/                           a user: its tokens (no secrets)
    POST   /api/0/api-tokens/                           a user: {"scopes", "name"} → shown once
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException
from psycopg_pool import ConnectionPool

from events.access import ROLES, AccessError, check_scopes
from serve_apps.quota_api import key_json, need, need_project_write
from storage import quotas as quota_store
from storage import tenancy
from storage.postgres import ProjectRef, add_project_key
from storage.tenancy import Access, Caller

NOT_FOUND = "The requested resource does not exist"


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _text(body: Any, field: str, required: bool = True) -> str | None:
    value = body.get(field) if isinstance(body, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise HTTPException(400, f"{field} must be non-empty text")
    return value.strip()


@contextmanager
def http_errors(not_found: str | None = None) -> Iterator[None]:
    """storage.tenancy's refusals as HTTP: a name taken is 409, something missing 404 (with
    ``not_found`` instead of the store's text where that text would say too much), any other
    refusal 400."""
    try:
        yield
    except tenancy.NameTaken as exc:
        raise HTTPException(409, str(exc)) from exc
    except tenancy.NotFound as exc:
        raise HTTPException(404, not_found or str(exc)) from exc
    except tenancy.TenancyError as exc:
        raise HTTPException(400, str(exc)) from exc


class TenancyApi:
    def __init__(self, pool: ConnectionPool[Any], base_url: str, grouping_config: str
                 ) -> None:
        self.pool = pool
        self.base_url = base_url
        self.grouping_config = grouping_config

    def create_organization(self, caller: Caller, body: Any) -> dict[str, Any]:
        if caller.user_id is None:
            raise HTTPException(403, "only a user (a user token or a login) creates"
                                     " organizations; it becomes their owner")
        slug = _text(body, "slug")
        assert slug is not None
        name = _text(body, "name", required=False) or slug
        with self.pool.connection() as conn, conn.transaction(), http_errors():
            org_id = tenancy.create_organization(conn, slug, name, caller.user_id)
        return {"id": str(org_id), "slug": slug, "name": name}

    def update_organization(self, scope: Access, body: Any) -> dict[str, Any]:
        """``name`` and ``openMembership`` (Sentry's "Open Membership": members see every
        project, not only their teams')."""
        need(scope, "org:write")
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        name = _text(body, "name", required=False)
        open_membership = body.get("openMembership")
        if open_membership is not None and not isinstance(open_membership, bool):
            raise HTTPException(400, "openMembership must be true or false")
        with self.pool.connection() as conn, conn.transaction():
            if name is not None:
                conn.execute("UPDATE organizations SET name = %s WHERE id = %s",
                             (name, scope.organization_id))
            if open_membership is not None:
                conn.execute("UPDATE organizations SET open_membership = %s WHERE id = %s",
                             (open_membership, scope.organization_id))
            row = conn.execute("SELECT slug, name, open_membership FROM organizations"
                               " WHERE id = %s", (scope.organization_id,)).fetchone()
        assert row is not None
        return {"id": str(scope.organization_id), "slug": row[0], "name": row[1],
                "openMembership": row[2]}

    def teams(self, scope: Access) -> list[dict[str, Any]]:
        need(scope, "team:read")
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT t.id, t.slug, t.name, t.date_added, count(tm.member_id)"
                " FROM teams t LEFT JOIN team_members tm ON tm.team_id = t.id"
                " WHERE t.organization_id = %s GROUP BY t.id ORDER BY t.slug",
                (scope.organization_id,)).fetchall()
        return [{"id": str(r[0]), "slug": r[1], "name": r[2], "dateCreated": iso(r[3]),
                 "memberCount": int(r[4])} for r in rows]

    def create_team(self, scope: Access, body: Any) -> dict[str, Any]:
        need(scope, "team:write")
        slug = _text(body, "slug")
        assert slug is not None
        name = _text(body, "name", required=False) or slug
        with self.pool.connection() as conn, conn.transaction(), http_errors():
            team_id = tenancy.create_team(conn, scope.organization_id, slug, name)
        return {"id": str(team_id), "slug": slug, "name": name}

    def update_team(self, scope: Access, team_slug: str, body: Any) -> dict[str, Any]:
        """A team's ``name`` (its slug stays)."""
        need(scope, "team:write")
        name = _text(body, "name")
        with self.pool.connection() as conn, conn.transaction():
            found = conn.execute("SELECT id FROM teams WHERE organization_id = %s AND"
                                 " slug = %s", (scope.organization_id, team_slug)).fetchone()
            if found is None:
                raise HTTPException(404, NOT_FOUND)
            if not scope.may_change_team(int(found[0])):
                raise HTTPException(403, "an admin changes only its own teams")
            row = conn.execute("UPDATE teams SET name = %s WHERE id = %s RETURNING id",
                               (name, int(found[0]))).fetchone()
        assert row is not None
        return {"id": str(row[0]), "slug": team_slug, "name": name}

    def members(self, scope: Access) -> list[dict[str, Any]]:
        need(scope, "member:read")
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT m.id, u.username, u.email, m.role, m.date_added,"
                " coalesce(array_agg(t.slug ORDER BY t.slug) FILTER (WHERE t.slug IS NOT"
                " NULL), '{}') FROM organization_members m JOIN users u ON u.id = m.user_id"
                " LEFT JOIN team_members tm ON tm.member_id = m.id"
                " LEFT JOIN teams t ON t.id = tm.team_id WHERE m.organization_id = %s"
                " GROUP BY m.id, u.username, u.email ORDER BY u.username",
                (scope.organization_id,)).fetchall()
        # No e-mail addresses: members are added without their consent (no invitations
        # yet), so an organization must not learn a user's address by adding them.
        return [{"id": str(r[0]), "user": {"username": r[1]}, "role": r[3],
                 "orgRole": r[3], "dateCreated": iso(r[4]), "teams": list(r[5])}
                for r in rows]

    def add_member(self, scope: Access, body: Any) -> dict[str, Any]:
        """Adds an existing user (Crashray has no e-mail invitations yet)."""
        need(scope, "member:write")
        username = _text(body, "username")
        role = body.get("role", "member") if isinstance(body, dict) else "member"
        if role not in ROLES:
            raise HTTPException(400, f"role must be one of {', '.join(ROLES)}")
        if role == "owner" and "org:admin" not in scope.scopes:
            raise HTTPException(403, "only owners make owners")
        teams = body.get("teams", []) if isinstance(body, dict) else []
        if not isinstance(teams, list) or not all(isinstance(t, str) for t in teams):
            raise HTTPException(400, "teams must be a list of team slugs")
        with self.pool.connection() as conn, conn.transaction(), http_errors():
            user = tenancy.user_id(conn, str(username))
            current = conn.execute(
                "SELECT role FROM organization_members WHERE organization_id = %s"
                " AND user_id = %s", (scope.organization_id, user)).fetchone()
            if current is not None and current[0] == "owner" and role != "owner":
                if "org:admin" not in scope.scopes:
                    raise HTTPException(403, "only owners change an owner's role")
                owners = conn.execute(
                    "SELECT count(*) FROM organization_members WHERE organization_id = %s"
                    " AND role = 'owner'", (scope.organization_id,)).fetchone()
                if owners is not None and int(owners[0]) <= 1:
                    raise HTTPException(400, "an organization keeps at least one owner")
            member = tenancy.add_member(conn, scope.organization_id, user, role)
            for slug in teams:
                tenancy.add_team_member(conn, tenancy.team_id(
                    conn, scope.organization_id, slug), scope.organization_id, user)
        return {"id": str(member), "user": {"username": username}, "role": role,
                "teams": sorted(teams)}

    def create_project(self, scope: Access, team_slug: str, body: Any) -> dict[str, Any]:
        need(scope, "project:write")
        slug = _text(body, "slug", required=False) or _text(body, "name")
        assert slug is not None
        slug = slug.lower().replace(" ", "-")
        name = _text(body, "name", required=False) or slug
        platform = body.get("platform") if isinstance(body, dict) else None
        if platform is not None and not isinstance(platform, str):
            raise HTTPException(400, "platform must be text, e.g. python")
        with self.pool.connection() as conn, conn.transaction(), \
                http_errors(not_found=NOT_FOUND):
            team = tenancy.team_id(conn, scope.organization_id, team_slug)
            if not scope.may_change_team(team):
                raise HTTPException(403, "an admin creates projects only in its teams")
            project = tenancy.create_project(conn, scope.organization_id, slug, name,
                                             self.grouping_config, team=team,
                                             platform=platform)
        dsn = f"{self.base_url.replace('://', f'://{project.public_key}@', 1)}/{project.id}"
        return {"id": str(project.id), "slug": project.slug, "name": name,
                "platform": platform, "team": {"slug": team_slug}, "dsn": dsn,
                "organization": {"slug": scope.organization_slug}}

    def create_key(self, scope: Access, project: ProjectRef, body: Any) -> dict[str, Any]:
        need_project_write(scope, project)
        label = _text(body, "name", required=False) or "Default"
        with self.pool.connection() as conn, conn.transaction():
            public_key = add_project_key(conn, project.id, label)
            key = quota_store.find_key(conn, project.id, public_key)
        assert key is not None
        return key_json(key, self.base_url)

    def delete_key(self, scope: Access, project: ProjectRef, key_ref: str) -> None:
        need_project_write(scope, project)
        with self.pool.connection() as conn, conn.transaction():
            key = quota_store.find_key(conn, project.id, key_ref)
            if key is None:
                raise HTTPException(404, NOT_FOUND)
            conn.execute("DELETE FROM project_keys WHERE id = %s", (key.id,))

    def tokens(self, caller: Caller) -> list[dict[str, Any]]:
        if caller.user_id is None:
            raise HTTPException(403, "an organization token has no user tokens")
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT id, name, scopes, date_added FROM api_tokens"
                                " WHERE user_id = %s AND organization_id IS NULL ORDER BY id",
                                (caller.user_id,)).fetchall()
        return [{"id": str(r[0]), "name": r[1], "scopes": list(r[2]),
                 "dateCreated": iso(r[3])} for r in rows]

    def create_token(self, caller: Caller, body: Any) -> dict[str, Any]:
        if caller.user_id is None or caller.token_scopes is not None:
            raise HTTPException(403, "user tokens are made from a login session")
        scopes = body.get("scopes") if isinstance(body, dict) else None
        if not isinstance(scopes, list) or not scopes or \
                not all(isinstance(s, str) for s in scopes):
            raise HTTPException(400, 'scopes must be a list such as ["event:read"]')
        name = _text(body, "name", required=False) or "created in the dashboard"
        try:
            check_scopes(scopes)
        except AccessError as exc:
            raise HTTPException(400, str(exc)) from exc
        with self.pool.connection() as conn, conn.transaction():
            token = tenancy.create_token(conn, name, scopes, user=caller.user_id)
        return {"token": token, "name": name, "scopes": sorted(scopes)}
