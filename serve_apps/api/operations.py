"""How an organization's data is flowing through the pipeline (Crashray's own endpoints;
Sentry has none of these).

    GET /api/0/organizations/{org}/dead-letters/   org:admin  the organization's dead
                                                   letters, counted per project and item type

Dead letters are accepted items the consumers gave up on because they fail on their own
(never because storage was down); an operator lists, replays or drops them with
``crashray dead-letters``. The answer holds counts, dates and the newest error of each
group, never the items themselves. It takes ``org:admin`` (owners and their tokens), as
the errors can quote event data and the remedy is an operator's; it counts only the
caller's organization and the projects the caller sees.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from serve_apps.api.deps import Svc, org_access
from serve_apps.api.shapes import iso
from storage import queue
from storage.tenancy import Access

router = APIRouter(tags=["operations"])


def dead_letter_count_json(c: queue.DeadLetterCount) -> dict[str, Any]:
    return {"projectId": str(c.project_id), "project": c.project_slug,
            "itemType": c.item_type, "count": c.count,
            "firstFailed": iso(c.oldest_failed_at), "lastFailed": iso(c.newest_failed_at),
            "lastError": c.latest_error}


@router.get("/organizations/{org}/dead-letters/")
def dead_letters(access: Annotated[Access, Depends(org_access("org:admin"))],
                 svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        counts = queue.dead_letter_counts(conn, access.organization_id,
                                          sorted(access.project_ids))
    return {"total": sum(c.count for c in counts),
            "groups": [dead_letter_count_json(c) for c in counts]}
