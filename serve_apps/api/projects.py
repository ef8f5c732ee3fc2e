"""Projects: listing, creation under a team, settings, DSN keys and event counts.

    GET    /api/0/projects/                               the caller  projects it sees
    GET    /api/0/organizations/{org}/projects/           project:read
    POST   /api/0/teams/{org}/{team}/projects/            project:write {"slug", "name",
                                                                         "platform"} → DSN
    GET    /api/0/projects/{org}/{project}/               project:read
    PUT    /api/0/projects/{org}/{project}/               project:write (settings below)
    GET    /api/0/projects/{org}/{project}/keys/          project:read
    POST   /api/0/projects/{org}/{project}/keys/          project:write {"name"}
    PUT    /api/0/projects/{org}/{project}/keys/{key}/    project:write {"name", "isActive",
                                                            "rateLimit": {"window", "count"}}
    DELETE /api/0/projects/{org}/{project}/keys/{key}/    project:write
    GET    /api/0/projects/{org}/{project}/stats/         project:read  ?resolution=1h|1d
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field, StringConstraints

from events.errors import BadRequest, not_found
from serve_apps.api.deps import (
    ProjectAccess,
    Services,
    Svc,
    TeamAccess,
    caller_access,
    org_access,
    project_access,
    team_access,
)
from serve_apps.api.project_settings import ProjectSettingsBody, settings_json
from serve_apps.api.shapes import MAX_INTEGER, Body, dsn, iso, key_json
from storage import keys as key_store
from storage import projects as project_store
from storage import tenancy
from storage.projects import ProjectSummary
from storage.tenancy import Access, Caller

router = APIRouter(tags=["projects"])

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
#: Most buckets one stats request answers.
MAX_STATS_BUCKETS = 1000


def project_json(p: ProjectSummary) -> dict[str, Any]:
    return {"id": str(p.ref.id), "slug": p.ref.slug, "name": p.name, "platform": p.platform,
            "dateCreated": iso(p.date_added),
            "organization": {"slug": p.ref.organization_slug}}


@router.get("/projects/")
def my_projects(who: Annotated[Caller, Depends(caller_access())],
                svc: Svc) -> list[dict[str, Any]]:
    """Every project the caller sees, in all its organizations (Sentry's project index)."""
    found: list[ProjectSummary] = []
    with svc.pool.connection() as conn:
        for slug in tenancy.caller_organizations(conn, who):
            access = tenancy.caller_access(conn, who, slug)
            if access is not None and "project:read" in access.scopes:
                found += project_store.list_projects(conn, access.organization_id,
                                                     sorted(access.project_ids))
    return [project_json(p) for p in found]


@router.get("/organizations/{org}/projects/")
def organization_projects(access: Annotated[Access, Depends(org_access("project:read"))],
                          svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        found = project_store.list_projects(conn, access.organization_id,
                                            sorted(access.project_ids))
    return [project_json(p) for p in found]


class NewProject(Body):
    slug: Text | None = None
    name: Text | None = None
    platform: Annotated[str, StringConstraints(max_length=64)] | None = None


@router.post("/teams/{org}/{team}/projects/", status_code=201)
def create_project(body: NewProject, team: Annotated[TeamAccess, Depends(team_access("project:write"))],
                   svc: Svc) -> dict[str, Any]:
    """A project owned by the team, with a DSN key (answered as ``dsn``)."""
    raw = body.slug or body.name
    if raw is None:
        raise BadRequest("name: give the project a name (or a slug)")
    slug = raw.strip().lower().replace(" ", "-")
    name = (body.name or slug).strip()
    access = team.access
    with svc.pool.connection() as conn, conn.transaction():
        project = tenancy.create_project(conn, access.organization_id, slug, name,
                                         svc.config.default_grouping_config,
                                         team=team.team_id, platform=body.platform)
    return {"id": str(project.id), "slug": project.slug, "name": name,
            "platform": body.platform, "team": {"slug": team.slug},
            "dsn": dsn(svc.config.base_url, project.public_key, project.id),
            "organization": {"slug": access.organization_slug}}


@router.get("/projects/{org}/{project}/")
def project_detail(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                   svc: Svc) -> dict[str, Any]:
    return settings_json(_settings(svc, scope))


@router.put("/projects/{org}/{project}/")
def update_project(body: ProjectSettingsBody,
                   scope: Annotated[ProjectAccess, Depends(project_access("project:write"))],
                   svc: Svc) -> dict[str, Any]:
    """Settings, all or nothing: name, platform, data scrubbing, grouping version and rules,
    spike protection, source fetching (serve_apps/api/project_settings.py)."""
    with svc.pool.connection() as conn, conn.transaction():
        current = project_store.spike_protection(conn, [scope.project.id],
                                                 svc.config.spike_defaults)[scope.project.id]
        project_store.update_project(conn, scope.project, body.update(current),
                                     svc.config.grouping_transition_s)
    return settings_json(_settings(svc, scope))


def _settings(svc: Services, scope: ProjectAccess) -> project_store.ProjectSettings:
    with svc.pool.connection() as conn:
        found = project_store.project_settings(conn, scope.project, svc.config.spike_defaults)
    if found is None:
        raise not_found()
    return found


@router.get("/projects/{org}/{project}/keys/")
def project_keys(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                 svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        found = key_store.project_keys(conn, scope.project)
    return [key_json(k, svc.config.base_url) for k in found]


class NewKey(Body):
    name: Text | None = None


@router.post("/projects/{org}/{project}/keys/", status_code=201)
def create_key(body: NewKey, scope: Annotated[ProjectAccess, Depends(project_access("project:write"))],
               svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn, conn.transaction():
        public_key = key_store.add_project_key(conn, scope.project.id,
                                               (body.name or "Default").strip())
        key = key_store.find_key(conn, scope.project, public_key)
    assert key is not None  # just added, in this transaction
    return key_json(key, svc.config.base_url)


class RateLimit(Body):
    """Sentry's key rate limit; both null clears it, as Sentry's UI sends."""

    window: Annotated[int, Field(ge=1, le=MAX_INTEGER)] | None = None
    count: Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None = None


class KeyUpdate(Body):
    name: Text | None = None
    isActive: bool | None = None
    rateLimit: RateLimit | None = None


@router.put("/projects/{org}/{project}/keys/{key_id}/")
def update_key(key_id: str, body: KeyUpdate,
               scope: Annotated[ProjectAccess, Depends(project_access("project:write"))],
               svc: Svc) -> dict[str, Any]:
    rate_limit: tuple[int, int] | bool | None = False  # absent: keep as it is
    if "rateLimit" in body.model_fields_set:
        rate_limit = _rate_limit(body.rateLimit)
    with svc.pool.connection() as conn, conn.transaction():
        key = key_store.find_key(conn, scope.project, key_id)
        if key is None:
            raise not_found()
        key_store.update_key(conn, key, label=body.name, is_active=body.isActive,
                             rate_limit=rate_limit)
        updated = key_store.find_key(conn, scope.project, key.public_key)
    assert updated is not None
    return key_json(updated, svc.config.base_url)


def _rate_limit(limit: RateLimit | None) -> tuple[int, int] | None:
    if limit is None or (limit.window is None and limit.count is None):
        return None
    if limit.window is None or limit.count is None:
        raise BadRequest("rateLimit: give both window (seconds ≥ 1) and count (≥ 0), or"
                         " null to remove the limit")
    return limit.window, limit.count


@router.delete("/projects/{org}/{project}/keys/{key_id}/", status_code=204)
def delete_key(key_id: str, scope: Annotated[ProjectAccess, Depends(project_access("project:write"))],
               svc: Svc) -> None:
    with svc.pool.connection() as conn, conn.transaction():
        key = key_store.find_key(conn, scope.project, key_id)
        if key is None:
            raise not_found()
        key_store.delete_key(conn, key)


@router.get("/projects/{org}/{project}/stats/")
def project_stats(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                  svc: Svc,
                  resolution: str = "1h", since: str | None = None,
                  until: str | None = None) -> list[list[int]]:
    """Stored events of a project per hour or day (Sentry's project ``stats/``:
    ``resolution=1h|1d``, ``since``/``until`` unix seconds; default the last 24 hours or
    30 days), from the ClickHouse rollup."""
    bucket_s = {"1h": 3600, "1d": 86_400}.get(resolution)
    if bucket_s is None:
        raise BadRequest(f"resolution must be 1h or 1d; got {resolution!r}")
    first, end = _stats_window(bucket_s, since, until)
    project = scope.project
    counts = svc.clickhouse.project_counts(project.organization_id, project.id, first, end,
                                           bucket_s)
    buckets, at = [], first
    while at < end:
        buckets.append([int(at.timestamp()), counts.get(at, 0)])
        at += dt.timedelta(seconds=bucket_s)
    return buckets


def _stats_window(bucket_s: int, since: str | None, until: str | None
                  ) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    try:
        end = dt.datetime.fromtimestamp(float(until), dt.UTC) if until else now
        start = dt.datetime.fromtimestamp(float(since), dt.UTC) if since else \
            end - dt.timedelta(seconds=bucket_s * (24 if bucket_s == 3600 else 30))
    except (ValueError, OverflowError, OSError) as exc:
        raise BadRequest("since and until must be unix times in seconds") from exc
    first = dt.datetime.fromtimestamp(start.timestamp() // bucket_s * bucket_s, dt.UTC)
    if (end - first).total_seconds() / bucket_s > MAX_STATS_BUCKETS:
        raise BadRequest(f"at most {MAX_STATS_BUCKETS} buckets; narrow since/until")
    return first, end

