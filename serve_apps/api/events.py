"""Events: a project's events, one event, an issue's events, and why an event grouped.

    GET /api/0/projects/{org}/{project}/events/                        event:read  cursor
    GET /api/0/projects/{org}/{project}/events/{event_id}/             event:read
    GET /api/0/projects/{org}/{project}/events/{event_id}/grouping-info/  event:read
    GET /api/0/issues/{issue_id}/events/                               event:read  ?query
    GET /api/0/issues/{issue_id}/events/{latest|oldest|event_id}/      event:read
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from events.envelope import normalize_event_id
from events.errors import BadRequest, NotFound
from events.grouping import group_hashes_for_event
from events.grouping.rules import grouping_rules_from_text
from events.issue_stream import link_header, parse_page
from events.search import event_filters, parse_search
from serve_apps.api.deps import (
    IssueAccess,
    ProjectAccess,
    Services,
    Svc,
    issue_access,
    project_access,
)
from serve_apps.api.issue_views import issue_hash_list
from serve_apps.api.shapes import iso, page_url
from serve_apps.event_json import event_json
from storage import issues as issue_store
from storage import projects as project_store
from storage import releases as release_store
from storage.clickhouse import EventSummary
from storage.projects import ProjectRef

router = APIRouter(tags=["events"])

#: Events per page unless ``limit`` says otherwise (Sentry's event lists answer 100 / 50).
PROJECT_EVENTS_LIMIT: Final = 100
ISSUE_EVENTS_LIMIT: Final = 50
EVENT_NOT_FOUND: Final = "Event not found"


def summary_json(e: EventSummary, project_id: int, group_id: int) -> dict[str, Any]:
    return {"id": e.event_id, "eventID": e.event_id, "groupID": str(group_id),
            "projectID": str(project_id), "dateCreated": iso(e.timestamp), "title": e.title,
            "message": e.message, "culprit": e.culprit, "platform": e.platform,
            "tags": [{"key": k, "value": v} for k, v in _with_level(e)]}


def _with_level(e: EventSummary) -> list[tuple[str, str]]:
    """The event's tags; events stored before ``level`` was a tag get it from its column."""
    return e.tags if any(k == "level" for k, _ in e.tags) else [("level", e.level), *e.tags]


@router.get("/projects/{org}/{project}/events/")
def list_events(request: Request,
                scope: Annotated[ProjectAccess, Depends(project_access("event:read"))],
                svc: Svc) -> JSONResponse:
    """The project's events, newest first, a page at a time (``limit``, ``cursor`` and the
    ``Link`` header, as every Sentry list)."""
    params = request.query_params.multi_items()
    limit, offset = parse_page(params, PROJECT_EVENTS_LIMIT, svc.config.max_page_size)
    project = scope.project
    rows = svc.clickhouse.list_events(project.organization_id, project.id, limit + 1, offset)
    has_more, rows = len(rows) > limit, rows[:limit]
    with svc.pool.connection() as conn:
        # Merges and unmerges move hashes, not ClickHouse rows: an event belongs to the
        # issue its primary hash points to now (else to where its group was merged).
        by_hash = issue_store.issues_of_hashes(conn, project,
                                               list({e.primary_hash for e in rows}))
        issue_of = issue_store.merged_into(conn, project, list({e.group_id for e in rows}))
    body = [summary_json(e, project.id, by_hash.get(e.primary_hash)
                         or issue_of.get(e.group_id, e.group_id)) for e in rows]
    return JSONResponse(body, headers={
        "Link": link_header(page_url(request), params, offset, limit, has_more)})


@router.get("/projects/{org}/{project}/events/{event_id}/")
def event_detail(event_id: str, scope: Annotated[ProjectAccess, Depends(project_access("event:read"))],
                 svc: Svc) -> dict[str, Any]:
    return _event(svc, scope.project, event_id)


@router.get("/projects/{org}/{project}/events/{event_id}/grouping-info/")
def grouping_info(event_id: str, scope: Annotated[ProjectAccess, Depends(project_access("event:read"))],
                  svc: Svc) -> dict[str, Any]:
    """Why an event grouped as it did, recomputed from the stored (normalized) event under
    the project's current grouping version and rules."""
    project = scope.project
    body = svc.clickhouse.event_body(project.organization_id, project.id,
                                     _event_id(event_id))
    if body is None:
        raise NotFound(EVENT_NOT_FOUND)
    with svc.pool.connection() as conn:
        grouping = project_store.grouping_settings(conn, [project.id])[project.id]
    rules = grouping_rules_from_text(grouping.fingerprinting_rules,
                                     grouping.grouping_enhancements)
    return group_hashes_for_event(orjson.loads(body), grouping.config,
                                  rules=rules).to_json_dict()


@router.get("/issues/{issue_id}/events/")
def issue_events(request: Request,
                 scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
                 svc: Svc, query: str = "") -> JSONResponse:
    """An issue's events, newest first, narrowed by Sentry's search syntax (its event side:
    tags, fields, free text), a page at a time."""
    params = request.query_params.multi_items()
    limit, offset = parse_page(params, ISSUE_EVENTS_LIMIT, svc.config.max_page_size)
    project, row = scope.project, scope.issue
    with svc.pool.connection() as conn:
        filters = event_filters(release_store.resolve_latest(
            conn, project.organization_id, [project.id],
            parse_search(query, dt.datetime.now(dt.UTC))))
    found = svc.clickhouse.issue_events(project.organization_id, project.id,
                                        issue_hash_list(svc, project, row.id), filters,
                                        limit + 1, offset)
    has_more, found = len(found) > limit, found[:limit]
    return JSONResponse([summary_json(e, project.id, row.id) for e in found], headers={
        "Link": link_header(page_url(request), params, offset, limit, has_more)})


@router.get("/issues/{issue_id}/events/{which}/")
def issue_event(which: str, scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
                svc: Svc) -> dict[str, Any]:
    """``latest``, ``oldest`` or an event id, of one issue."""
    project, row = scope.project, scope.issue
    hashes = issue_hash_list(svc, project, row.id)
    event_id = which
    if which in ("latest", "oldest"):
        found = svc.clickhouse.latest_event_id(project.organization_id, project.id, hashes,
                                               oldest=which == "oldest")
        if found is None:
            raise NotFound(EVENT_NOT_FOUND)
        event_id = found
    return _event(svc, project, event_id, (row.id, hashes))


def _event_id(raw: str) -> str:
    """The event id in its canonical form; anything else cannot be an event of ours."""
    try:
        normalized = normalize_event_id(raw)
    except BadRequest:
        normalized = None
    if normalized is None:
        raise NotFound(EVENT_NOT_FOUND)
    return normalized


def _event(svc: Services, project: ProjectRef, raw_id: str,
           issue: tuple[int, list[str]] | None = None) -> dict[str, Any]:
    """One stored event in Sentry's shape, with its neighbours within its issue."""
    event_id = _event_id(raw_id)
    org = project.organization_id
    found = svc.clickhouse.event_timestamp(org, project.id, event_id)
    body = None if found is None else svc.clickhouse.event_body(org, project.id, event_id)
    if found is None or body is None:
        raise NotFound(EVENT_NOT_FOUND)
    timestamp, primary_hash = found
    if issue is None:
        with svc.pool.connection() as conn:
            owner = issue_store.issues_of_hashes(conn, project, [primary_hash])
        issue_id = owner.get(primary_hash, 0)
        hashes = issue_hash_list(svc, project, issue_id) if issue_id else [primary_hash]
    else:
        issue_id, hashes = issue
        if primary_hash not in hashes:
            raise NotFound(EVENT_NOT_FOUND)
    previous_id, next_id = svc.clickhouse.event_neighbours(org, project.id, hashes, event_id,
                                                           timestamp)
    event = orjson.loads(body)
    return event_json(event, event_id=event_id, project_id=project.id, group_id=issue_id,
                      date_created=iso(timestamp), previous_id=previous_id, next_id=next_id)
