"""Anomalies the detectors found (issue 13; events/anomaly.py, actors/detectors.py).

    GET /api/0/projects/{org}/{project}/anomalies/     project:read

Query: ``status`` (``open`` | ``closed``; both when absent), ``issue`` (an issue id: that
issue's anomalies only), ``limit`` (1 … ``CRASHRAY_API_MAX_PAGE_SIZE``). Newest first.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends

from events.errors import BadRequest
from serve_apps.api.deps import ProjectAccess, Svc, project_access
from serve_apps.api.shapes import iso
from storage import anomalies as store

router = APIRouter(tags=["anomalies"])

READ: Final = project_access("project:read")
Readable = Annotated[ProjectAccess, Depends(READ)]


def anomaly_json(a: store.StoredAnomaly) -> dict[str, Any]:
    return {"id": str(a.id), "scope": a.scope, "issueId": None if a.issue_id is None
            else str(a.issue_id), "detector": a.detector, "kind": a.kind,
            "direction": a.direction, "status": a.status, "start": iso(a.start),
            "end": iso(a.end), "score": a.score, "explanation": a.explanation,
            "evidence": dict(a.evidence), "dateCreated": iso(a.date_created),
            "dateClosed": None if a.date_closed is None else iso(a.date_closed)}


@router.get("/projects/{org}/{project}/anomalies/")
def list_anomalies(access: Readable, svc: Svc, status: str | None = None,
                   issue: str | None = None, limit: int | None = None
                   ) -> list[dict[str, Any]]:
    if status is not None and status not in store.STATUSES:
        raise BadRequest(f"query parameter status is {status!r}: use one of"
                         f" {', '.join(store.STATUSES)}, or leave it out for both")
    issue_id: int | None = None
    if issue is not None:
        if not issue.isdigit():
            raise BadRequest(f"query parameter issue is {issue!r}: it must be an issue id"
                             " (digits)")
        issue_id = int(issue)
    most = svc.config.max_page_size
    if limit is not None and not 1 <= limit <= most:
        raise BadRequest(f"query parameter limit is {limit}: it must be 1 … {most}"
                         " (CRASHRAY_API_MAX_PAGE_SIZE)")
    with svc.pool.connection() as conn:
        found = store.list_anomalies(conn, access.project, limit or most, status, issue_id)
    return [anomaly_json(a) for a in found]
