"""Quotas, their current usage, and Sentry's organization stats over outcomes.

    GET    /api/0/organizations/{org}/quotas/           org:read
    POST   /api/0/organizations/{org}/quotas/           org:write {"scope", "scopeId",
                                                        "categories", "window", "limit",
                                                        "reasonCode"}
    DELETE /api/0/organizations/{org}/quotas/{id}/      org:write
    GET    /api/0/organizations/{org}/quota-usage/      org:read  counters of running windows
    GET    /api/0/organizations/{org}/stats_v2/         org:read  Sentry's stats_v2

A project's or a key's quota and usage are shown only when the caller sees the project;
anything outside the caller's organization answers 404. DSN keys and their rate limits are
in projects.py, spike protection in the project settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field, StringConstraints

from events.errors import NotFound, not_found
from events.quotas import SCOPES, Quota
from events.stats import parse_stats_query, stats_response
from serve_apps.api.deps import Svc, org_access
from serve_apps.api.shapes import MAX_BIGINT, MAX_INTEGER, Body, iso
from storage import keys as key_store
from storage import quotas as quota_store
from storage.tenancy import Access

router = APIRouter(tags=["quotas"])

QuotaScope = Literal["organization", "project", "key"]
assert set(QuotaScope.__args__) == set(SCOPES)  # type: ignore[attr-defined]
ReasonCode = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^:,]*$")]


def quota_json(stored: quota_store.StoredQuota) -> dict[str, Any]:
    q = stored.quota
    return {"id": str(stored.id), "scope": q.scope, "scopeId": q.scope_id,
            "categories": sorted(q.categories), "window": q.window_s, "limit": q.limit,
            "reasonCode": q.reason_code}


def _visible(access: Access, scope: str, scope_id: int | None, keys: set[int]) -> bool:
    return (scope == "organization" or scope_id is None
            or (scope == "project" and scope_id in access.project_ids)
            or (scope == "key" and scope_id in keys))


@router.get("/organizations/{org}/quotas/")
def quotas(access: Annotated[Access, Depends(org_access("org:read"))],
           svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        stored = quota_store.list_quotas(conn, access.organization_id)
        keys = key_store.key_ids(conn, access.organization_id, sorted(access.project_ids))
    return [quota_json(q) for q in stored
            if _visible(access, q.quota.scope, q.quota.scope_id, keys)]


class NewQuota(Body):
    scope: QuotaScope = "organization"
    #: The project or key id (scope project or key); absent: each of them.
    scopeId: int | None = None
    categories: list[str] = Field(default_factory=list)
    window: Annotated[int, Field(ge=0, le=MAX_INTEGER)]
    #: Most per window; null counts without limiting, 0 refuses everything.
    limit: int | None = None
    reasonCode: ReasonCode = ""


@router.post("/organizations/{org}/quotas/", status_code=201)
def add_quota(body: NewQuota, access: Annotated[Access, Depends(org_access("org:write"))],
              svc: Svc) -> dict[str, Any]:
    org_id = access.organization_id
    quota = Quota("new", org_id, body.scope, org_id if body.scope == "organization"
                  else body.scopeId, frozenset(body.categories), body.limit, body.window,
                  body.reasonCode)  # InvalidQuota (400) names what is wrong
    with svc.pool.connection() as conn, conn.transaction():
        if not quota_store.scope_belongs(conn, org_id, quota.scope, quota.scope_id):
            raise NotFound(f"no {quota.scope} {quota.scope_id} in this organization")
        quota_id = quota_store.add_quota(conn, quota)
    return quota_json(quota_store.StoredQuota(quota_id, quota))


@router.delete("/organizations/{org}/quotas/{quota_id}/", status_code=204)
def delete_quota(quota_id: int, access: Annotated[Access, Depends(org_access("org:write"))],
                 svc: Svc) -> None:
    if not 0 < quota_id <= MAX_BIGINT:  # no such quota can exist
        raise not_found()
    with svc.pool.connection() as conn, conn.transaction():
        if not quota_store.delete_quota(conn, access.organization_id, quota_id):
            raise not_found()


@router.get("/organizations/{org}/quota-usage/")
def quota_usage(access: Annotated[Access, Depends(org_access("org:read"))],
                svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        rows = quota_store.current_usage(conn, access.organization_id)
        keys = key_store.key_ids(conn, access.organization_id, sorted(access.project_ids))
    shown = [usage_json(u) for u in rows]
    return [u for u in shown if u["scope"] == "organization"
            or (u["scope"] == "project" and u["scopeId"] in access.project_ids)
            or (u["scope"] == "key" and u["scopeId"] in keys)]


def usage_json(u: quota_store.CounterUsage) -> dict[str, Any]:
    """A running counter: which quota, whose (project/key id), how much, until when."""
    quota_id, _, subject_scope, subject = [*u.counter.split(":"), "", "", "", ""][:4]
    return {"quota": quota_id, "scope": subject_scope,
            "scopeId": int(subject) if subject.isdigit() else None,
            "used": u.count, "windowEnds": iso(u.expires_at)}


@router.get("/organizations/{org}/stats_v2/")
def stats_v2(request: Request, access: Annotated[Access, Depends(org_access("org:read"))],
             svc: Svc) -> dict[str, Any]:
    """Outcomes of the projects the caller sees (Sentry's stats_v2, events/stats.py)."""
    query = parse_stats_query(request.query_params.multi_items())
    rows = svc.clickhouse.outcome_stats(access.organization_id, sorted(access.project_ids),
                                        query)
    return stats_response(query, rows)
