"""Issues: the stream, one issue, status changes, merges and unmerges, activity, tags.

    GET    /api/0/projects/{org}/{project}/issues/      event:read  stream (search, sort,
                                                                    period, env, cursor)
    PUT    /api/0/projects/{org}/{project}/issues/      event:write ?id=…: status, assignedTo,
                                                                    isBookmarked, isSubscribed
                                                                    or merge
    GET    /api/0/organizations/{org}/issues/           event:read  ?project=… (several)
    GET    /api/0/issues/{issue_id}/                    event:read  (302 when merged away)
    PUT    /api/0/issues/{issue_id}/                    event:write {"status", "statusDetails",
                                                                    "assignedTo", "isBookmarked",
                                                                    "isSubscribed"}
    DELETE /api/0/issues/{issue_id}/                    event:admin (hashes tombstoned)
    GET    /api/0/issues/{issue_id}/activity/           event:read
    GET    /api/0/issues/{issue_id}/hashes/             event:read
    DELETE /api/0/issues/{issue_id}/hashes/             event:write ?id=<hash>: unmerge
    GET    /api/0/issues/{issue_id}/tags/               event:read  facets
    GET    /api/0/issues/{issue_id}/tags/{key}/values/  event:read

``assignedTo`` takes a member or team of the issue's organization only (events/triage.py
lists the forms); anyone else is a 400 naming the value. Bookmarks and subscriptions are
the calling user's; an organization token (no user) cannot set them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import JsonValue

from events.errors import BadRequest, not_found
from events.lifecycle import (
    ACTIVITY_FOR_STATUS,
    StatusUpdate,
    needs_user_count,
    parse_status_update,
    stored_details,
)
from events.triage import TriageInputError, parse_assigned_to
from serve_apps.api.deps import (
    IssueAccess,
    ProjectAccess,
    Services,
    Svc,
    caller,
    issue_access,
    org_access,
    project_access,
)
from serve_apps.api.issue_views import (
    activity,
    assigned_to_json,
    issue_detail,
    issue_hash_list,
    issue_stream,
    user_counts,
)
from serve_apps.api.shapes import MAX_BIGINT, Body, page_url
from storage import issues as issue_store
from storage import projects as project_store
from storage import triage as triage_store
from storage.projects import ProjectRef
from storage.tenancy import Access, Caller

router = APIRouter(tags=["issues"])

#: Values shown per tag key on an issue (Sentry shows the top 9; its values endpoint more).
TAG_TOP_VALUES: Final = 9
TAG_VALUES_LIMIT: Final = 100
#: Environments one issue request may name (the dashboard names one).
MAX_ENVIRONMENTS: Final = 100


@router.get("/projects/{org}/{project}/issues/")
def list_issues(request: Request,
                scope: Annotated[ProjectAccess, Depends(project_access("event:read"))],
                who: Annotated[Caller, Depends(caller)], svc: Svc) -> JSONResponse:
    page = issue_stream(svc, scope.project.organization_id, [scope.project],
                        request.query_params.multi_items(), page_url(request), who.user_id)
    return JSONResponse(page.issues, headers={"Link": page.link})


@router.get("/organizations/{org}/issues/")
def organization_issues(request: Request, access: Annotated[Access, Depends(org_access("event:read"))],
                        who: Annotated[Caller, Depends(caller)], svc: Svc) -> JSONResponse:
    """Issues of several projects: ``?project=<id>`` (repeatable; none or -1: every project
    the caller sees; an id it cannot see is simply not there, as in Sentry)."""
    params = request.query_params.multi_items()
    wanted = [v for k, v in params if k == "project"]
    if any(not w.lstrip("-").isdigit() for w in wanted):
        raise BadRequest("project must be project ids, e.g. ?project=1&project=2")
    ids = {int(w) for w in wanted} - {-1}
    chosen = sorted(access.project_ids & ids if ids else access.project_ids)
    with svc.pool.connection() as conn:
        refs = [project_store.project_by_id(conn, access.organization_id, p) for p in chosen]
    page = issue_stream(svc, access.organization_id, [r for r in refs if r is not None],
                        params, page_url(request), who.user_id)
    return JSONResponse(page.issues, headers={"Link": page.link})


class IssueUpdate(Body):
    """Sentry's issue update: a status with its details, an assignee, the caller's
    bookmark and subscription, or (bulk only) a merge; any of them together."""

    status: str | None = None
    statusDetails: dict[str, JsonValue] | None = None
    merge: bool | int | str | None = None
    assignedTo: str | int | None = None
    isBookmarked: bool | None = None
    isSubscribed: bool | None = None
    #: Sentry's dashboard marks an issue seen; accepted and not kept (no "seen by" yet).
    hasSeen: bool | None = None

    def status_update(self) -> StatusUpdate | None:
        if self.status is None and self.statusDetails is None:
            if not self.model_fields_set & (TRIAGE_FIELDS | {"hasSeen"}):
                raise BadRequest("nothing to change: send status (with statusDetails),"
                                 " assignedTo, isBookmarked or isSubscribed")
            return None
        return parse_status_update(self.model_dump(include={"status", "statusDetails"},
                                                   exclude_none=True))


#: The update fields about triage rather than status.
TRIAGE_FIELDS: Final = frozenset({"assignedTo", "isBookmarked", "isSubscribed"})


@dataclass(frozen=True)
class TriageUpdate:
    """A body's triage part, resolved once for every issue it applies to."""

    assign: bool
    assignee: triage_store.Assignee | None
    bookmark: bool | None
    subscribe: bool | None
    user_id: int | None


def triage_update(svc: Services, body: IssueUpdate, organization_id: int, who: Caller
                  ) -> TriageUpdate:
    """The assignee looked up in the issue's organization (400 when it has no such member
    or team), and the caller's bookmark and subscription choices."""
    assignee = None
    assign = "assignedTo" in body.model_fields_set
    ref = parse_assigned_to(body.assignedTo) if assign else None
    if ref is not None:
        with svc.pool.connection() as conn:
            assignee = triage_store.find_assignee(conn, organization_id, ref.kind, ref.value)
        if assignee is None:
            raise TriageInputError(
                f"assignedTo: {body.assignedTo!r} is no member or team of this organization;"
                " assign one of its members (username, e-mail or user:<id>) or teams"
                " (team:<id> or #slug)")
    for field in ("isBookmarked", "isSubscribed"):
        if getattr(body, field) is not None and who.user_id is None:
            raise BadRequest(f"{field}: an organization token is no user; bookmark and"
                             " subscribe with a user token or from the dashboard")
    return TriageUpdate(assign, assignee, body.isBookmarked, body.isSubscribed, who.user_id)


def _apply_triage(conn: Any, project: ProjectRef, issue_id: int, t: TriageUpdate,
                  actor: str) -> None:
    if t.assign:
        triage_store.set_assignee(conn, project, issue_id, t.assignee, actor, t.user_id)
    if t.user_id is None:
        return
    if t.bookmark is not None:
        triage_store.set_bookmarked(conn, project, issue_id, t.user_id, t.bookmark)
    if t.subscribe is not None:
        triage_store.set_subscribed(conn, project, issue_id, t.user_id, t.subscribe)


def _triage_answer(t: TriageUpdate, body: IssueUpdate) -> dict[str, Any]:
    """The triage part of a bulk update's answer, as Sentry echoes what it changed."""
    answer: dict[str, Any] = {}
    if t.assign:
        answer["assignedTo"] = assigned_to_json(t.assignee)
    if body.isBookmarked is not None:
        answer["isBookmarked"] = body.isBookmarked
    if body.isSubscribed is not None:
        answer["isSubscribed"] = body.isSubscribed
    return answer


@router.put("/projects/{org}/{project}/issues/")
def bulk_update(body: IssueUpdate,
                scope: Annotated[ProjectAccess, Depends(project_access("event:write"))],
                who: Annotated[Caller, Depends(caller)],
                svc: Svc, id: Annotated[list[int] | None, Query()] = None) -> dict[str, Any]:
    """Merge the issues named by ``?id=``, or give them one status, assignee, bookmark or
    subscription. Ids outside the project are ignored, as if they did not exist."""
    if not id:
        raise BadRequest("name the issues with ?id=…&id=…")
    ids = sorted({i for i in id if 0 < i <= MAX_BIGINT})  # others cannot exist
    if body.merge in (1, True, "1"):
        return _merge(svc, scope, ids)
    update = body.status_update()
    triage = triage_update(svc, body, scope.project.organization_id, who)
    with svc.pool.connection() as conn, conn.transaction():
        for issue_id in ids:
            row = issue_store.get_issue(conn, scope.project, issue_id)
            if row is not None and row.merged_into is None:
                if update is not None:
                    _apply_status(svc, conn, scope.project, row, update, scope.access.actor,
                                  who.user_id)
                _apply_triage(conn, scope.project, row.id, triage, scope.access.actor)
    answer = _triage_answer(triage, body)
    if update is not None:
        answer.update(status=update.status, statusDetails=dict(update.details))
    return answer


def _merge(svc: Services, scope: ProjectAccess, ids: list[int]) -> dict[str, Any]:
    with svc.pool.connection() as conn, conn.transaction():
        result = issue_store.merge_issues(conn, scope.project, ids, scope.access.actor)
    if result is None:
        raise BadRequest("merging needs at least two unmerged issues of this project")
    survivor, merged = result
    return {"merge": {"parent": str(survivor), "children": [str(m) for m in merged]}}


def _apply_status(svc: Services, conn: Any, project: ProjectRef, row: issue_store.IssueRow,
                  update: StatusUpdate, actor: str, user_id: int | None) -> None:
    """Set one issue's state, its thresholds fixed now (inside the caller's transaction);
    a user who resolves an issue follows it from then on (Sentry subscribes them)."""
    users = user_counts(svc, project, [row.id]).get(row.id, 0) \
        if needs_user_count(update.details) else 0
    details = stored_details(update, row.times_seen, row.last_release, users)
    substatus = "ongoing" if update.status == "unresolved" else None
    issue_store.set_status(conn, project, row.id, update.status, substatus, details,
                           ACTIVITY_FOR_STATUS[update.status],
                           {"status": update.status, **details}, actor)
    if user_id is not None and update.status == "resolved":
        triage_store.participate(conn, row.id, user_id, "status_change")


@router.get("/issues/{issue_id}/", response_model=None)
def get_issue(scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
              who: Annotated[Caller, Depends(caller)], svc: Svc,
              environment: Annotated[list[str] | None, Query(max_length=MAX_ENVIRONMENTS)]
              = None) -> dict[str, Any] | RedirectResponse:
    """``?environment=`` (repeatable, as Sentry): the counts and graphs of its events in
    those environments."""
    if scope.issue.merged_into is not None:  # merged away: Sentry redirects to the survivor
        return RedirectResponse(f"/api/0/issues/{scope.issue.merged_into}/", status_code=302)
    return issue_detail(svc, scope.project, scope.issue, who.user_id,
                        sorted({e for e in environment or [] if e}))


@router.put("/issues/{issue_id}/")
def update_issue(body: IssueUpdate, scope: Annotated[IssueAccess, Depends(issue_access("event:write"))],
                 who: Annotated[Caller, Depends(caller)], svc: Svc) -> dict[str, Any]:
    update = body.status_update()
    triage = triage_update(svc, body, scope.project.organization_id, who)
    with svc.pool.connection() as conn, conn.transaction():
        if update is not None:
            _apply_status(svc, conn, scope.project, scope.issue, update, scope.access.actor,
                          who.user_id)
        _apply_triage(conn, scope.project, scope.issue.id, triage, scope.access.actor)
        row = issue_store.get_issue(conn, scope.project, scope.issue.id)
    if row is None:
        raise not_found()
    return issue_detail(svc, scope.project, row, who.user_id)


@router.delete("/issues/{issue_id}/", status_code=202)
def delete_issue(scope: Annotated[IssueAccess, Depends(issue_access("event:admin"))],
                 svc: Svc) -> None:
    """Sentry answers 202: the issue is gone and its hashes are tombstoned."""
    with svc.pool.connection() as conn, conn.transaction():
        if not issue_store.delete_issue(conn, scope.project, scope.issue.id,
                                        scope.access.actor):
            raise not_found()


@router.get("/issues/{issue_id}/activity/")
def issue_activity(scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
                   svc: Svc) -> list[dict[str, Any]]:
    return activity(svc, scope.project, scope.issue.id)


@router.get("/issues/{issue_id}/hashes/")
def issue_hashes(scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
                 svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        hashes = issue_store.issue_hashes(conn, scope.project, scope.issue.id)
    return [{"id": h, "groupingConfig": config} for h, config in hashes]


@router.delete("/issues/{issue_id}/hashes/", status_code=202)
def unmerge(scope: Annotated[IssueAccess, Depends(issue_access("event:write"))],
            svc: Svc, id: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    """Sentry's unmerge: the named hashes, and the events grouped by them, leave this issue
    for a new one."""
    project, row = scope.project, scope.issue
    with svc.pool.connection() as conn:
        own = {h for h, _ in issue_store.issue_hashes(conn, project, row.id)}
    wanted = sorted(set(id or []))
    if not wanted or not set(wanted) <= own or set(wanted) == own:
        raise BadRequest("name some, but not all, of this issue's hashes with"
                         " ?id=<hash>&id=<hash> (see /hashes/)")
    totals = svc.clickhouse.hash_totals(project.organization_id, project.id, wanted)
    now = dt.datetime.now(dt.UTC)
    moved = issue_store.MovedEvents(0, now, now, row.title, row.culprit) if totals is None \
        else issue_store.MovedEvents(totals.events, totals.first_seen, totals.last_seen,
                                     totals.title, totals.culprit)
    with svc.pool.connection() as conn, conn.transaction():
        new_id = issue_store.unmerge_hashes(conn, project, row.id, wanted, moved,
                                            scope.access.actor)
    return {"issue": str(new_id), "hashes": wanted, "events": moved.count}


@router.get("/issues/{issue_id}/tags/")
def issue_tags(scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
               svc: Svc,
               environment: Annotated[list[str] | None, Query(max_length=MAX_ENVIRONMENTS)]
               = None) -> list[dict[str, Any]]:
    """Tag facets of an issue's events: per key, how many events carry it, how many values
    it takes, and the top values with counts (Sentry's ``/tags/``); ``?environment=``
    (repeatable): of its events in those environments."""
    return _facets(svc, scope, None, TAG_TOP_VALUES, environment)


@router.get("/issues/{issue_id}/tags/{key}/values/")
def issue_tag_values(key: str, scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
                     svc: Svc,
                     environment: Annotated[list[str] | None,
                                            Query(max_length=MAX_ENVIRONMENTS)] = None
                     ) -> list[dict[str, Any]]:
    facets = _facets(svc, scope, key, TAG_VALUES_LIMIT, environment)
    values: list[dict[str, Any]] = facets[0]["topValues"] if facets else []
    return values


def _facets(svc: Services, scope: IssueAccess, key: str | None, top: int,
            environments: list[str] | None) -> list[dict[str, Any]]:
    project = scope.project
    facets = svc.clickhouse.tag_facets(project.organization_id, project.id,
                                       issue_hash_list(svc, project, scope.issue.id), key, top,
                                       sorted({e for e in environments or [] if e}))
    return [{"key": k, "name": k, "totalValues": events, "uniqueValues": distinct,
             "topValues": [{"key": k, "name": v, "value": v, "count": n} for v, n in values]}
            for k, events, distinct, values in facets]

