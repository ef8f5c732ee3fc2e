"""Releases and their files, as sentry-cli 2.x and older bundler plugins use them.

    GET  /api/0/organizations/{org}/releases/              project:read  ?project=<id>,
                                                           health=1, summaryStatsPeriod=14d,
                                                           query=<part of a version>
    POST /api/0/organizations/{org}/releases/              project:releases or :write
                                                           {version, projects, url?,
                                                            dateReleased?}
    GET  /api/0/projects/{org}/{project}/releases/         project:read
    POST /api/0/projects/{org}/{project}/releases/         project:releases or :write
                                                           {version, url?, dateReleased?}
    GET  /api/0/projects/{org}/{project}/releases/{version}/   project:read, ?health=1
    PUT  /api/0/projects/{org}/{project}/releases/{version}/   as the organization's PUT
    GET  /api/0/organizations/{org}/releases/{version}/    project:read  ?health=1,
                                                           summaryStatsPeriod=14d
    GET  /api/0/organizations/{org}/releases/{version}/new-issues/   event:read
    PUT  /api/0/organizations/{org}/releases/{version}/    project:releases or :write
                                                           {dateReleased?, url?, projects?}
    GET  /api/0/projects/{org}/{project}/releases/{version}/files/   project:read
    POST /api/0/projects/{org}/{project}/releases/{version}/files/   project:releases or
         :write; multipart: ``file``, ``name`` (``~/app.min.js``), ``dist``, ``header``
         (``Sourcemap:app.min.js.map``, repeatable)
    DELETE /api/0/projects/{org}/{project}/releases/{version}/files/{file_id}/
         project:releases or :write; 204, or 404 when the project's release has no such file

A release lists its new issues (``newGroups``: issues first seen in it, PostgreSQL), its
events (``firstEvent``, ``lastEvent``, ``eventCount``: ClickHouse) and, with ``health=1``,
each project's ``healthData`` (crash-free sessions and users, storage/release_health.py).
Releases named by events are created as the events are stored (migration 0032).

``sentry-cli releases finalize`` is the PUT with ``dateReleased``. A file whose name and
dist the release already has answers 409, as Sentry (sentry-cli then skips it). Files are
stored as one-file bundles (storage/artifacts.py) and found by URL like bundles are.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from events.errors import BadRequest, Conflict, PayloadTooLarge, not_found
from events.issue_stream import link_header, parse_page
from serve_apps.api.artifacts import UPLOAD_SCOPES, UploadAccess, expire_organization
from serve_apps.api.deps import ProjectAccess, Services, Svc, org_access, project_access
from serve_apps.api.shapes import MAX_BIGINT, Body, iso, page_url
from storage import artifacts as artifact_store
from storage import release_health as health_store
from storage import releases as release_store
from storage.artifacts import BlobStore, ReleaseFile
from storage.projects import find_project, project_by_id
from storage.release_health import ReleaseEvents, ReleaseHealth
from storage.releases import Release
from storage.tenancy import Access

router = APIRouter(tags=["releases"])

#: Sentry's limit on a release version (and a file name) is 200 characters.
Version = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^/\s]")]
MAX_HEADERS: Final = 20


def release_json(r: Release, stats: ReleaseStats | None = None) -> dict[str, Any]:
    """A release in Sentry's shape; with ``stats``, its new issues and events, and (when
    they were asked for) each project's ``healthData``."""
    stats = stats or ReleaseStats()
    events = stats.events.get(r.version)
    projects = []
    for (slug, name), project_id in zip(r.projects, r.project_ids, strict=True):
        health = stats.health.get((r.version, project_id))
        shown: dict[str, Any] = {
            "id": project_id, "slug": slug, "name": name,
            "newGroups": stats.new_groups.get((r.version, project_id), 0),
            "hasHealthData": health is not None}
        if stats.with_health:
            shown["healthData"] = health_json(health)
        projects.append(shown)
    return {"version": r.version, "shortVersion": r.version, "url": r.url,
            "dateCreated": iso(r.date_added),
            "dateReleased": iso(r.date_released) if r.date_released else None,
            "newGroups": sum(p["newGroups"] for p in projects),
            "firstEvent": iso(events.first) if events else None,
            "lastEvent": iso(events.last) if events else None,
            # Not in Sentry's serializer: the release page's event column.
            "eventCount": events.count if events else 0,
            "projects": projects}


def health_json(h: ReleaseHealth | None) -> dict[str, Any]:
    """Sentry's ``healthData`` of one project's release (rates in percent; null without
    sessions, as Sentry)."""
    return {"hasHealthData": h is not None,
            "crashFreeSessions": h.crash_free_sessions if h else None,
            "crashFreeUsers": h.crash_free_users if h else None,
            "totalSessions": h.sessions if h else 0,
            "totalUsers": h.users if h else 0,
            "sessionsCrashed": h.sessions_crashed if h else 0,
            "sessionsAbnormal": h.sessions_abnormal if h else 0,
            "usersCrashed": h.users_crashed if h else 0}


@dataclass(frozen=True)
class ReleaseStats:
    """What the release JSON adds to the stored release, read for a page at once."""

    new_groups: Mapping[tuple[str, int], int] = field(default_factory=dict)
    events: Mapping[str, ReleaseEvents] = field(default_factory=dict)
    health: Mapping[tuple[str, int], ReleaseHealth] = field(default_factory=dict)
    with_health: bool = False


def release_stats(svc: Services, organization_id: int, found: Sequence[Release],
                  health_since: dt.datetime | None) -> ReleaseStats:
    """New issues (PostgreSQL, by first release), events and, with ``health_since``,
    sessions (ClickHouse) of these releases in their listed projects: one query each for
    the whole page."""
    versions = [r.version for r in found]
    project_ids = {p for r in found for p in r.project_ids}
    if not versions:
        return ReleaseStats(with_health=health_since is not None)
    with svc.pool.connection() as conn:
        new_groups = release_store.new_issue_counts(conn, organization_id, project_ids,
                                                    versions)
    events = health_store.release_events(svc.clickhouse, organization_id, project_ids,
                                         versions)
    health = {} if health_since is None else health_store.release_health(
        svc.clickhouse, organization_id, project_ids, versions, health_since)
    return ReleaseStats(new_groups, events, health, health_since is not None)


def health_since(health: str | None, period: str | None) -> dt.datetime | None:
    """When ``health=1``, the start of the period health is computed over (Sentry's
    ``summaryStatsPeriod``: ``24h``, ``14d``, …; 14 days by default); None otherwise."""
    if health not in ("1", "true"):
        return None
    span = health_store.DEFAULT_HEALTH_PERIOD
    if period is not None:
        match = _PERIOD.fullmatch(period)
        if match is None or int(match[1]) == 0:
            raise BadRequest(f"summaryStatsPeriod: {period[:40]!r} is not a period; give a"
                             " number and a unit such as 24h or 14d (at most 90d)")
        span = min(dt.timedelta(seconds=int(match[1]) * _UNIT_S[match[2]]),
                   MAX_HEALTH_PERIOD)
    return dt.datetime.now(dt.UTC) - span


_PERIOD: Final = re.compile(r"(\d{1,5})([mhdw])")
_UNIT_S: Final = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
#: Sessions are kept 90 days by default (CRASHRAY_SESSIONS_DAYS): no longer period exists.
MAX_HEALTH_PERIOD: Final = dt.timedelta(days=90)


class NewRelease(Body):
    version: Version
    projects: Annotated[list[str | int], Field(min_length=1, max_length=100)]
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    dateReleased: Annotated[str, StringConstraints(max_length=64)] | None = None


class UpdatedRelease(Body):
    projects: Annotated[list[str | int], Field(max_length=100)] | None = None
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    dateReleased: Annotated[str, StringConstraints(max_length=64)] | None = None


#: Releases per page when the request names no ``limit`` (Sentry's release list pages).
RELEASES_PAGE: Final = 25


@router.get("/organizations/{org}/releases/")
def list_releases(request: Request,
                  access: Annotated[Access, Depends(org_access("project:read"))], svc: Svc,
                  project: int | None = None, health: str | None = None,
                  summaryStatsPeriod: str | None = None, query: str | None = None
                  ) -> JSONResponse:
    """Newest first, a page at a time (``limit``, ``cursor`` and the ``Link`` header);
    ``health=1`` adds each project's crash-free rates, ``query`` keeps the versions
    containing it (Sentry's release search)."""
    params = request.query_params.multi_items()
    limit, offset = parse_page(params, RELEASES_PAGE, svc.config.max_page_size)
    found: list[Release] = []
    since = health_since(health, summaryStatsPeriod)
    if project is None or project in access.project_ids:
        with svc.pool.connection() as conn:
            found = release_store.list_releases(conn, access.organization_id,
                                                access.project_ids, limit + 1, project,
                                                _version_text(query), offset)
    return _page(request, params, offset, limit, found, lambda page: [
        release_json(r, stats) for stats in [release_stats(
            svc, access.organization_id, page, since)] for r in page])


@router.get("/projects/{org}/{project}/releases/")
def project_releases(request: Request,
                     scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                     svc: Svc, health: str | None = None,
                     summaryStatsPeriod: str | None = None, query: str | None = None
                     ) -> JSONResponse:
    params = request.query_params.multi_items()
    limit, offset = parse_page(params, RELEASES_PAGE, svc.config.max_page_size)
    since = health_since(health, summaryStatsPeriod)
    with svc.pool.connection() as conn:
        found = release_store.list_releases(conn, scope.access.organization_id,
                                            scope.access.project_ids, limit + 1,
                                            scope.project.id, _version_text(query), offset)
    found = [_only_project(r, scope.project.id) for r in found]
    return _page(request, params, offset, limit, found, lambda page: [
        release_json(r, stats) for stats in [release_stats(
            svc, scope.access.organization_id, page, since)] for r in page])


def _page(request: Request, params: Sequence[tuple[str, str]], offset: int, limit: int,
          found: Sequence[Release], shown: Callable[[Sequence[Release]], list[Any]]
          ) -> JSONResponse:
    """A page of releases (``found`` holds one more when there is a next page) with
    Sentry's ``Link`` header."""
    has_more, page = len(found) > limit, found[:limit]
    return JSONResponse(shown(page) if page else [], headers={
        "Link": link_header(page_url(request), params, offset, limit, has_more)})


def _version_text(query: str | None) -> str | None:
    """A release search: part of a version (at most 200 characters, Sentry's limit on a
    version); None searches nothing."""
    if query and ("\x00" in query or len(query) > 200):
        raise BadRequest(f"query: {query[:40]!r} is no part of a version: at most 200"
                         " characters, no NUL (\\u0000)")
    return query.strip() or None if query else None


def _only_project(r: Release, project_id: int) -> Release:
    """A release as one project's list shows it: its counts are that project's."""
    kept = [i for i, p in enumerate(r.project_ids) if p == project_id]
    return replace(r, projects=tuple(r.projects[i] for i in kept),
                   project_ids=tuple(r.project_ids[i] for i in kept))


@router.post("/organizations/{org}/releases/", status_code=201)
def create_release(body: NewRelease, access: UploadAccess, svc: Svc,
                   response: Response) -> dict[str, Any]:
    """201 for a new release, 208 for one that existed (its projects added), as Sentry."""
    with svc.pool.connection() as conn:
        ids = _project_ids(conn, access, body.projects)
    return _save(svc, access, body.version, ids, body.url, body.dateReleased, response)


class NewProjectRelease(Body):
    version: Version
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    dateReleased: Annotated[str, StringConstraints(max_length=64)] | None = None


@router.post("/projects/{org}/{project}/releases/", status_code=201)
def create_project_release(body: NewProjectRelease, response: Response, svc: Svc, scope:
                           Annotated[ProjectAccess, Depends(project_access(*UPLOAD_SCOPES))]
                           ) -> dict[str, Any]:
    """sentry-cli 2.x creates a release of one project here."""
    return _save(svc, scope.access, body.version, [scope.project.id], body.url,
                 body.dateReleased, response)


def _save(svc: Services, access: Access, version: str, ids: list[int], url: str | None,
          date_released: str | None, response: Response) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        created = release_store.save_release(conn, access.organization_id, version, ids,
                                             url, _when(date_released))
        found = release_store.find_release(conn, access.organization_id, version,
                                           access.project_ids)
    assert found is not None  # saved just now with a visible project
    if not created:
        response.status_code = 208
    return release_json(found)


@router.get("/organizations/{org}/releases/{version}/")
def get_release(version: str, access: Annotated[Access, Depends(org_access("project:read"))],
                svc: Svc, health: str | None = None, summaryStatsPeriod: str | None = None
                ) -> dict[str, Any]:
    """A release of a project the caller sees (404 otherwise, as for a release that does
    not exist), its new issues, events and, with ``health=1``, health."""
    since = health_since(health, summaryStatsPeriod)
    with svc.pool.connection() as conn:
        found = release_store.find_release(conn, access.organization_id, version,
                                           access.project_ids)
    if found is None:
        raise not_found(f"release {version!r} not found")
    return release_json(found, release_stats(svc, access.organization_id, [found], since))


@router.get("/projects/{org}/{project}/releases/{version}/")
def get_project_release(version: str, scope: Annotated[
        ProjectAccess, Depends(project_access("project:read"))], svc: Svc,
        health: str | None = None, summaryStatsPeriod: str | None = None) -> dict[str, Any]:
    """The release as one project's: its counts are that project's (404 when the project
    has no such release)."""
    since = health_since(health, summaryStatsPeriod)
    with svc.pool.connection() as conn:
        found = release_store.find_release(conn, scope.access.organization_id, version,
                                           [scope.project.id])
    if found is None:
        raise not_found(f"release {version!r} not found for project {scope.project.slug}")
    return release_json(found, release_stats(svc, scope.access.organization_id, [found],
                                             since))


@router.get("/organizations/{org}/releases/{version}/new-issues/")
def release_new_issues(version: str,
                       access: Annotated[Access, Depends(org_access("event:read"))],
                       svc: Svc) -> list[dict[str, Any]]:
    """The issues first seen in the release (Sentry's release page lists them through the
    issue search ``firstRelease:<version>``; this is that list without the search), in
    the projects the caller sees, most recently seen first."""
    with svc.pool.connection() as conn:
        found = release_store.find_release(conn, access.organization_id, version,
                                           access.project_ids)
        if found is None:
            raise not_found(f"release {version!r} not found")
        issues = release_store.new_issues(conn, access.organization_id, found.project_ids,
                                          version, svc.config.max_page_size)
    slugs = dict(zip(found.project_ids, (s for s, _ in found.projects), strict=True))
    return [{"id": str(i.id), "shortId": f"{slugs[i.project_id].upper()}-{i.id}",
             "title": i.title, "culprit": i.culprit, "level": i.level, "status": i.status,
             "count": str(i.times_seen), "firstSeen": iso(i.first_seen),
             "lastSeen": iso(i.last_seen),
             "project": {"id": str(i.project_id), "slug": slugs[i.project_id]}}
            for i in issues]


@router.put("/organizations/{org}/releases/{version}/")
def update_release(version: str, body: UpdatedRelease, access: UploadAccess,
                   svc: Svc) -> dict[str, Any]:
    return _update(svc, access, version, body, None)


@router.put("/projects/{org}/{project}/releases/{version}/")
def update_project_release(version: str, body: UpdatedRelease, svc: Svc, scope: Annotated[
        ProjectAccess, Depends(project_access(*UPLOAD_SCOPES))]) -> dict[str, Any]:
    """sentry-cli 2.x finalizes a release of one project here."""
    return _update(svc, scope.access, version, body, scope.project.id)


def _update(svc: Services, access: Access, version: str, body: UpdatedRelease,
            project: int | None) -> dict[str, Any]:
    visible = access.project_ids if project is None else [project]
    with svc.pool.connection() as conn:
        if release_store.find_release(conn, access.organization_id, version,
                                      visible) is None:
            raise not_found(f"release {version!r} not found")
        ids = _project_ids(conn, access, body.projects) if body.projects else []
        release_store.save_release(conn, access.organization_id, version, ids, body.url,
                                   _when(body.dateReleased))
        found = release_store.find_release(conn, access.organization_id, version,
                                           access.project_ids)
    assert found is not None
    return release_json(found)


def _when(value: str | None) -> dt.datetime | None:
    """An ISO 8601 time as sentry-cli writes it (``2024-06-01T12:00:00.123Z``)."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"dateReleased: {value[:40]!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _project_ids(conn: Any, access: Access, projects: list[str | int]) -> list[int]:
    ids = []
    for project in projects:
        ref = project_by_id(conn, access.organization_id, project) \
            if isinstance(project, int) else find_project(conn, access.organization_id, project)
        if ref is None or ref.id not in access.project_ids:
            raise BadRequest(f"projects: there is no project {project!r} in organization"
                             f" {access.organization_slug} that this token sees")
        ids.append(ref.id)
    return ids


# --- release files -----------------------------------------------------------------------
def file_json(f: ReleaseFile) -> dict[str, Any]:
    return {"id": str(f.id), "name": f.name, "dist": f.dist, "sha1": f.sha1,
            "size": f.size_bytes, "headers": f.headers, "dateCreated": iso(f.date_added)}


@router.get("/projects/{org}/{project}/releases/{version}/files/")
def list_release_files(version: str, scope: Annotated[
        ProjectAccess, Depends(project_access("project:read"))], svc: Svc
        ) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        files = artifact_store.list_release_files(conn, scope.project, version,
                                                  svc.config.max_page_size)
    return [file_json(f) for f in files]


@router.post("/projects/{org}/{project}/releases/{version}/files/", status_code=201)
async def upload_release_file(version: str, request: Request, scope: Annotated[
        ProjectAccess, Depends(project_access(*UPLOAD_SCOPES))], svc: Svc
        ) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=MAX_HEADERS + 2)
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise BadRequest("file: send the file as the multipart part \"file\"")
        content = await part.read()
        name = _text(form.get("name")) or part.filename or ""
        dist = _text(form.get("dist")) or None
        headers = _headers(form.getlist("header"))
    finally:
        await form.close()
    if not name or len(name) > 200 or "\x00" in name or (dist and len(dist) > 64):
        raise BadRequest("name: give the file's URL (like ~/app.min.js), at most 200"
                         " characters; dist at most 64")
    if len(content) > svc.config.artifacts.max_request_bytes:
        raise PayloadTooLarge("file: larger than CRASHRAY_ARTIFACT_MAX_REQUEST_BYTES")
    return await _store_release_file(svc, scope, version, name, dist, content, headers)


async def _store_release_file(svc: Services, scope: ProjectAccess, version: str, name: str,
                              dist: str | None, content: bytes, headers: dict[str, str]
                              ) -> dict[str, Any]:
    def store() -> ReleaseFile | None:
        expire_organization(svc, scope.access.organization_id)
        with svc.pool.connection() as conn:
            if release_store.find_release(conn, scope.access.organization_id, version,
                                          [scope.project.id]) is None:
                raise not_found(f"release {version!r} not found for project"
                                f" {scope.project.slug}; create it first")
            return artifact_store.store_release_file(
                conn, BlobStore(Path(svc.config.artifacts.blob_dir)), scope.project, version,
                dist, name, content, headers)
    stored = await run_in_threadpool(store)
    if stored is None:
        raise Conflict("A file matching this name already exists for the given release")
    return file_json(stored)


@router.delete("/projects/{org}/{project}/releases/{version}/files/{file_id}/",
               status_code=204)
def delete_release_file(version: str, file_id: int, scope: Annotated[
        ProjectAccess, Depends(project_access(*UPLOAD_SCOPES))], svc: Svc) -> None:
    """The dashboard's delete of an uploaded file (Sentry's release file DELETE); symbolication
    stops finding it at once. A file of another project or release is 404, as Sentry."""
    if not 0 < file_id <= MAX_BIGINT:
        raise not_found()
    with svc.pool.connection() as conn:
        if not artifact_store.delete_release_file(conn, scope.project, version, file_id):
            raise not_found()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _headers(values: list[Any]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, rest = _text(value).partition(":")
        if not sep or not key.strip() or "\x00" in value:
            raise BadRequest(f"header: {str(value)[:60]!r} must be \"Name: value\"")
        headers[key.strip().lower()] = rest.strip()
    return headers
