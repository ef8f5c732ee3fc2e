"""A project's environments and a team's projects, in Sentry's shapes.

    GET /api/0/projects/{org}/{project}/environments/   project:read
        ?visibility=visible (default) | hidden | all
        → [{"id", "name", "isHidden"}], by name
    GET /api/0/teams/{org}/{team}/projects/             team:read
        → [{"id", "slug", "name", "platform", "dateCreated"}]: the team's projects that
          the caller sees

An environment is the ``environment`` of events stored for that project
(storage/environments.py): none is hidden, and its ``id`` is a stable number derived from its
name. The dashboard's
environment selector (stream.js, issue.js) reads this list; the stream's ``environment``
query parameter (events/issue_stream.py) narrows to one of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends

from serve_apps.api.deps import ProjectAccess, Svc, TeamAccess, project_access, team_access
from serve_apps.api.shapes import iso
from storage import environments as environment_store
from storage import projects as project_store
from storage import tenancy

router = APIRouter(tags=["environments"])

#: Environments listed per project at most (Sentry has no paging here either); a project
#: sending more distinct environments than this is misconfigured, not a user's list.
MAX_ENVIRONMENTS: Final = 1_000
def project_environments(svc: Any, organization_id: int, project_id: int
                         ) -> list[dict[str, Any]]:
    """The environments of one project's stored events, in Sentry's shape."""
    return [{"id": str(env_id), "name": name, "isHidden": False}
            for name, env_id in environment_store.project_environments(
                svc.clickhouse, organization_id, project_id, MAX_ENVIRONMENTS)]


@router.get("/projects/{org}/{project}/environments/")
def list_environments(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                      svc: Svc, visibility: Literal["visible", "hidden", "all"] = "visible"
                      ) -> list[dict[str, Any]]:
    """Sentry's ``visibility``: no environment is hidden here, so ``hidden`` lists none."""
    if visibility == "hidden":
        return []
    return project_environments(svc, scope.project.organization_id, scope.project.id)


@router.get("/teams/{org}/{team}/projects/")
def team_projects(team: Annotated[TeamAccess, Depends(team_access("team:read"))],
                  svc: Svc) -> list[dict[str, Any]]:
    """The team's projects among those the caller sees (the organization settings page
    shows them under each team)."""
    access = team.access
    with svc.pool.connection() as conn:
        owned = tenancy.team_project_ids(conn, access.organization_id, team.team_id)
        found = project_store.list_projects(conn, access.organization_id,
                                            sorted(set(owned) & access.project_ids))
    return [{"id": str(p.ref.id), "slug": p.ref.slug, "name": p.name, "platform": p.platform,
             "dateCreated": iso(p.date_added)} for p in found]
