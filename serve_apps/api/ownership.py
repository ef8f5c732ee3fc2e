"""A project's ownership rules (Sentry's "Issue Owners"), in Sentry's shape.

    GET /api/0/projects/{org}/{project}/ownership/   project:read
    PUT /api/0/projects/{org}/{project}/ownership/   project:write  {"raw", "fallthrough",
                                                                     "autoAssignment"}

``raw`` is the rules text (events/ownership.py has the syntax); every owner it names must be
a member or team of the project's organization, else a 400 naming them. New issues are
assigned to the first owner of the last matching rule while ``autoAssignment`` is on
(Sentry's ``"Auto Assign to Issue Owner"``; ``"Turn off Auto-Assignment"`` or ``false``
turn it off). Consumers load the rules with the project's other settings, so a change
applies within ``CRASHRAY_PROJECT_SETTINGS_REFRESH_S``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends

from events.ownership import OwnershipSyntaxError, parse_ownership
from serve_apps.api.deps import ProjectAccess, Svc, project_access
from serve_apps.api.shapes import Body, iso
from storage import ownership as ownership_store

router = APIRouter(tags=["ownership"])

AUTO_ASSIGN: Final = "Auto Assign to Issue Owner"
NO_AUTO_ASSIGN: Final = "Turn off Auto-Assignment"
#: Sentry's ``autoAssignment`` choices and whether each assigns new issues (Crashray has
#: no suspect commits: that choice assigns by the rules too).
AUTO_ASSIGNMENT_CHOICES: Final = {AUTO_ASSIGN: True, "Auto Assign to Suspect Commits": True,
                                  NO_AUTO_ASSIGN: False}


class OwnershipUpdate(Body):
    raw: str | None = None
    fallthrough: bool | None = None
    autoAssignment: bool | str | None = None


def ownership_json(o: ownership_store.Ownership) -> dict[str, Any]:
    return {"raw": o.raw, "fallthrough": o.fallthrough, "isActive": True,
            "autoAssignment": AUTO_ASSIGN if o.auto_assignment else NO_AUTO_ASSIGN,
            "dateCreated": None if o.date_updated is None else iso(o.date_updated),
            "lastUpdated": None if o.date_updated is None else iso(o.date_updated),
            "codeownersAutoSync": False}


@router.get("/projects/{org}/{project}/ownership/")
def get_ownership(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                  svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        return ownership_json(ownership_store.get_ownership(conn, scope.project))


@router.put("/projects/{org}/{project}/ownership/")
def put_ownership(body: OwnershipUpdate,
                  scope: Annotated[ProjectAccess, Depends(project_access("project:write"))],
                  svc: Svc) -> dict[str, Any]:
    auto = _auto_assignment(body.autoAssignment)
    with svc.pool.connection() as conn, conn.transaction():
        current = ownership_store.get_ownership(conn, scope.project)
        raw = current.raw if body.raw is None else body.raw
        rules = parse_ownership(raw)
        strangers = ownership_store.unknown_owners(conn, scope.project, sorted(
            rules.owners, key=lambda o: (o.kind, o.name)))
        if strangers:
            raise OwnershipSyntaxError(
                "raw: " + ", ".join(o.text for o in strangers) + " is no member or team of"
                " this organization; name members by e-mail address or username and teams"
                " by #slug")
        saved = ownership_store.put_ownership(
            conn, scope.project, raw,
            current.fallthrough if body.fallthrough is None else body.fallthrough,
            current.auto_assignment if auto is None else auto)
    return ownership_json(saved)


def _auto_assignment(value: bool | str | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value not in AUTO_ASSIGNMENT_CHOICES:
        raise OwnershipSyntaxError(f"autoAssignment: expected true, false or one of"
                                   f" {', '.join(AUTO_ASSIGNMENT_CHOICES)}; got {value!r}")
    return AUTO_ASSIGNMENT_CHOICES[value]
