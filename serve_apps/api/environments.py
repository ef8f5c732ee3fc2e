"""A project's environments and a team's projects, in Sentry's shapes.

    GET /api/0/projects/{org}/{project}/environments/   project:read
        ?visibility=visible (default) | hidden | all
        → [{"id", "name", "isHidden"}], by name
    GET /api/0/teams/{org}/{team}/projects/             team:read
        → [{"id", "slug", "name", "platform", "dateCreated"}]: the team's projects that
          the caller sees

An environment is the ``environment`` of events stored for that project (the ClickHouse
``events`` table, read by organization and project, with bound parameters): Crashray keeps
no environment table, so none is hidden and an environment whose events all expired is no
longer listed. Its ``id`` is a stable number derived from its name (``cityHash64``, cut to
fit JavaScript's safe integers) as Sentry's environment ids are numbers. The dashboard's
environment selector (stream.js, issue.js) reads this list; the stream's ``environment``
query parameter (events/issue_stream.py) narrows to one of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends

from serve_apps.api.deps import ProjectAccess, Svc, TeamAccess, project_access, team_access
from serve_apps.api.shapes import iso
from storage import projects as project_store

router = APIRouter(tags=["environments"])

#: Environments listed per project at most (Sentry has no paging here either); a project
#: sending more distinct environments than this is misconfigured, not a user's list.
MAX_ENVIRONMENTS: Final = 1_000
#: JavaScript's Number.MAX_SAFE_INTEGER + 1: ids must survive the dashboard's JSON.parse.
_SAFE_ID_MODULUS: Final = 2 ** 53

#: One row per environment of the project's stored events: the name and its id.
ENVIRONMENTS_SQL: Final = (
    "SELECT environment, cityHash64(environment) % {modulus:UInt64} FROM events"
    " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
    " AND environment != ''"
    " GROUP BY environment ORDER BY environment LIMIT {limit:UInt32}")


def project_environments(svc: Any, organization_id: int, project_id: int
                         ) -> list[dict[str, Any]]:
    """The environments of one project's stored events, in Sentry's shape."""
    rows = svc.clickhouse.query_rows(ENVIRONMENTS_SQL, {
        "org": organization_id, "project": project_id, "modulus": _SAFE_ID_MODULUS,
        "limit": MAX_ENVIRONMENTS})
    return [{"id": str(int(env_id)), "name": str(name), "isHidden": False}
            for name, env_id in rows]


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
        owned = [int(r[0]) for r in conn.execute(
            "SELECT pt.project_id FROM project_teams pt JOIN teams t ON t.id = pt.team_id"
            " WHERE t.organization_id = %s AND t.id = %s",
            (access.organization_id, team.team_id)).fetchall()]
        found = project_store.list_projects(conn, access.organization_id,
                                            sorted(set(owned) & access.project_ids))
    return [{"id": str(p.ref.id), "slug": p.ref.slug, "name": p.name, "platform": p.platform,
             "dateCreated": iso(p.date_added)} for p in found]
