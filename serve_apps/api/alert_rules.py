"""Issue alert rules, as Sentry's API takes and shows them (issue 13).

    GET    /api/0/projects/{org}/{project}/rules/             project:read or alerts:read
    POST   /api/0/projects/{org}/{project}/rules/             project:write or alerts:write
    GET    /api/0/projects/{org}/{project}/rules/{id}/        project:read or alerts:read
    PUT    /api/0/projects/{org}/{project}/rules/{id}/        project:write or alerts:write
    DELETE /api/0/projects/{org}/{project}/rules/{id}/        project:write or alerts:write

The body is Sentry's (``name``, ``actionMatch``, ``filterMatch``, ``frequency``,
``environment``, ``conditions``, ``filters``, ``actions``); ``events.alert_rules.parse_rule``
checks it, and a body it refuses answers 400 naming the field (an unknown condition, filter
or action id names itself and what is supported). PUT replaces the whole rule, as Sentry's.
The consumers pick a change up within ``CRASHRAY_PROJECT_SETTINGS_REFRESH_S``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response

from events.alert_rules import AlertRule, RuleError, parse_rule, rule_json
from events.errors import BadRequest, not_found
from serve_apps.api.deps import ProjectAccess, Svc, project_access
from serve_apps.api.shapes import iso
from storage import alert_rules as store
from storage.scope import ProjectScope

router = APIRouter(tags=["alert rules"])

READ: Final = project_access("project:read", "alerts:read", "alerts:write", "project:write")
WRITE: Final = project_access("project:write", "alerts:write", "project:admin")
Readable = Annotated[ProjectAccess, Depends(READ)]
Writable = Annotated[ProjectAccess, Depends(WRITE)]


def _scope(access: ProjectAccess) -> ProjectScope:
    return access.project


async def _checked(request: Request) -> AlertRule:
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: Sentry's rule, with name,"
                         " actionMatch, frequency, conditions, filters and actions")
    try:
        return parse_rule(body)
    except RuleError as exc:
        raise BadRequest(str(exc)) from exc


def stored_json(rule: store.StoredRule, project_slug: str) -> dict[str, Any]:
    shown = rule_json(parse_rule(dict(rule.body), rule_id=rule.id))
    return {**shown, "id": str(rule.id), "dateCreated": iso(rule.date_created),
            "projects": [project_slug], "createdBy": rule.created_by and {"name":
                                                                          rule.created_by},
            "owner": None, "status": "active", "snooze": False}


def _body(rule: AlertRule) -> dict[str, Any]:
    return {k: v for k, v in rule_json(rule).items() if k not in ("id", "dateCreated")}


@router.get("/projects/{org}/{project}/rules/")
def list_rules(access: Readable, svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        rules = store.list_rules(conn, _scope(access), svc.config.max_page_size)
    return [stored_json(r, access.project.slug) for r in rules]


@router.post("/projects/{org}/{project}/rules/", status_code=201)
async def create_rule(request: Request, access: Writable, svc: Svc) -> dict[str, Any]:
    rule = await _checked(request)
    with svc.pool.connection() as conn:
        stored = store.create_rule(conn, _scope(access), rule.name, rule.environment,
                                   rule.frequency_minutes, _body(rule),
                                   access.access.actor)
    return stored_json(stored, access.project.slug)


@router.get("/projects/{org}/{project}/rules/{rule_id}/")
def get_rule(rule_id: int, access: Readable, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        found = store.get_rule(conn, _scope(access), rule_id)
    if found is None:
        raise not_found()
    return stored_json(found, access.project.slug)


@router.put("/projects/{org}/{project}/rules/{rule_id}/")
async def update_rule(rule_id: int, request: Request, access: Writable, svc: Svc
                      ) -> dict[str, Any]:
    rule = await _checked(request)
    with svc.pool.connection() as conn:
        stored = store.update_rule(conn, _scope(access), rule_id, rule.name, rule.environment,
                                   rule.frequency_minutes, _body(rule))
    if stored is None:
        raise not_found()
    return stored_json(stored, access.project.slug)


@router.delete("/projects/{org}/{project}/rules/{rule_id}/", status_code=202)
def delete_rule(rule_id: int, access: Writable, svc: Svc) -> Response:
    with svc.pool.connection() as conn:
        if not store.delete_rule(conn, _scope(access), rule_id):
            raise not_found()
    return Response(status_code=202)
