"""Issue alert rules, as Sentry's API takes and shows them (issue 13).

    GET    /api/0/projects/{org}/{project}/rules/             project:read or alerts:read
    POST   /api/0/projects/{org}/{project}/rules/             project:write or alerts:write
    GET    /api/0/projects/{org}/{project}/rules/configuration/  project:read or alerts:read
    GET    /api/0/projects/{org}/{project}/rules/{id}/        project:read or alerts:read
    PUT    /api/0/projects/{org}/{project}/rules/{id}/        project:write or alerts:write
    DELETE /api/0/projects/{org}/{project}/rules/{id}/        project:write or alerts:write

The body is Sentry's (``name``, ``actionMatch``, ``filterMatch``, ``frequency``,
``environment``, ``conditions``, ``filters``, ``actions``); ``events.alert_rules.parse_rule``
checks it, and a body it refuses answers 400 naming the field (an unknown condition, filter
or action id names itself and what is supported). PUT replaces the whole rule, as Sentry's.
The consumers pick a change up within ``CRASHRAY_PROJECT_SETTINGS_REFRESH_S``.

Notifications (Crashray's, beside Sentry's rules API):

    GET  …/rules/{id}/deliveries/            a rule's delivery log (status, attempts, errors)
    GET  …/notification-deliveries/          the project's delivery log
    GET  …/notification-warnings/            destinations that keep failing
    POST …/rule-actions/                     Sentry's "send test notification"
    GET/PUT/POST/DELETE …/plugins/webhooks/  Sentry's legacy WebHooks plugin (urls, on/off)
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from events.alert_rules import AlertRule, RuleError, parse_rule, rule_configuration, rule_json
from events.errors import BadRequest, not_found
from events.notify import NotifiedProject, delivery_payload, parse_webhook_urls
from serve_apps.api.deps import ProjectAccess, Svc, project_access
from serve_apps.api.shapes import iso
from storage import alert_rules as store
from storage import notifications
from storage.notifications import Delivery, NewDelivery, WebhookPlugin
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

    def create() -> store.StoredRule:
        with svc.pool.connection() as conn:
            return store.create_rule(conn, _scope(access), rule.name, rule.environment,
                                     rule.frequency_minutes, _body(rule), access.access.actor)
    return stored_json(await run_in_threadpool(create), access.project.slug)


# Declared before ``/rules/{rule_id}/``: FastAPI matches routes in order, and the int
# ``rule_id`` would otherwise take "configuration" and answer 422.
@router.get("/projects/{org}/{project}/rules/configuration/")
def rules_configuration(access: Readable) -> dict[str, list[dict[str, Any]]]:
    """Sentry's rule editor catalogue: every supported condition, filter and action with its
    label template and form fields (the dashboard's editor is built from it)."""
    return rule_configuration()


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

    def update() -> store.StoredRule | None:
        with svc.pool.connection() as conn:
            return store.update_rule(conn, _scope(access), rule_id, rule.name,
                                     rule.environment, rule.frequency_minutes, _body(rule))
    stored = await run_in_threadpool(update)
    if stored is None:
        raise not_found()
    return stored_json(stored, access.project.slug)


@router.delete("/projects/{org}/{project}/rules/{rule_id}/", status_code=202)
def delete_rule(rule_id: int, access: Writable, svc: Svc) -> Response:
    with svc.pool.connection() as conn:
        if not store.delete_rule(conn, _scope(access), rule_id):
            raise not_found()
    return Response(status_code=202)


# --- deliveries, warnings, test notifications, Sentry's legacy WebHooks plugin -------------
def delivery_json(d: Delivery) -> dict[str, Any]:
    return {"id": str(d.id), "ruleId": None if d.rule_id is None else str(d.rule_id),
            "issueId": None if d.issue_id is None else str(d.issue_id), "eventId": d.event_id,
            "action": dict(d.action), "destination": d.destination, "status": d.status,
            "attempts": d.attempts, "nextAttemptAt": iso(d.next_attempt_at),
            "lastError": d.last_error, "lastResponseCode": d.last_response_code,
            "dateCreated": iso(d.created_at),
            "dateDelivered": None if d.delivered_at is None else iso(d.delivered_at)}


@router.get("/projects/{org}/{project}/rules/{rule_id}/deliveries/")
def rule_deliveries(rule_id: int, access: Readable, svc: Svc) -> list[dict[str, Any]]:
    """A rule's delivery log, newest first (Crashray's own endpoint)."""
    with svc.pool.connection() as conn:
        if store.get_rule(conn, _scope(access), rule_id) is None:
            raise not_found()
        found = notifications.deliveries(conn, _scope(access), rule_id,
                                         svc.config.max_page_size)
    return [delivery_json(d) for d in found]


@router.get("/projects/{org}/{project}/notification-deliveries/")
def project_deliveries(access: Readable, svc: Svc) -> list[dict[str, Any]]:
    """Every delivery of the project (rules and test notifications), newest first."""
    with svc.pool.connection() as conn:
        found = notifications.deliveries(conn, _scope(access), None, svc.config.max_page_size)
    return [delivery_json(d) for d in found]


@router.get("/projects/{org}/{project}/notification-warnings/")
def project_warnings(access: Readable, svc: Svc) -> list[dict[str, Any]]:
    """Destinations whose last attempts all failed: notifications never stop silently."""
    with svc.pool.connection() as conn:
        found = notifications.destination_warnings(conn, _scope(access),
                                                   svc.config.notify_warning_threshold)
    return [{"destination": w.destination, "consecutiveFailures": w.consecutive_failures,
             "lastError": w.last_error, "lastResponseCode": w.last_response_code,
             "lastFailureAt": None if w.last_failure_at is None else iso(w.last_failure_at)}
            for w in found]


@router.post("/projects/{org}/{project}/rule-actions/")
async def test_actions(request: Request, access: Writable, svc: Svc) -> dict[str, Any]:
    """Sentry's "send test notification": each action of ``{"actions": [...]}`` (checked as
    a rule's would be) gets a notification about a sample event, through the same outbox
    and notifier as real ones; its delivery shows in the project's log."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    actions = body.get("actions") if isinstance(body, dict) else None
    try:
        rule = parse_rule({"name": "Test notification", "actionMatch": "all",
                           "frequency": 30, "conditions": [], "actions": actions})
    except RuleError as exc:
        raise BadRequest(str(exc)) from exc
    scope = _scope(access)
    project = NotifiedProject(scope.id, access.project.slug, access.project.slug,
                              access.project.organization_slug)
    event = {"event_id": "0" * 32, "level": "error", "platform": "python",
             "message": "This is a test notification from Crashray",
             "tags": [["test", "yes"]]}
    payload = delivery_payload(event=event, issue=None, project=project,
                               rule_names=["Test notification"],
                               base_url=svc.config.base_url)
    def enqueue() -> list[int]:
        with svc.pool.connection() as conn:
            return notifications.enqueue(conn, [
                NewDelivery(scope.organization_id, scope.id, None, None, None,
                            {"id": a.id, **a.fields}, payload) for a in rule.actions])
    return {"deliveries": [str(i) for i in await run_in_threadpool(enqueue)]}


def plugin_json(plugin: WebhookPlugin) -> dict[str, Any]:
    return {"id": "webhooks", "slug": "webhooks", "name": "WebHooks", "enabled": plugin.enabled,
            "isHidden": False, "type": "notification", "canDisable": True,
            "config": [{"name": "urls", "label": "Callback URLs", "type": "textarea",
                        "value": "\n".join(plugin.urls), "required": False,
                        "help": "Enter callback URLs to POST new events to (one per line)."}]}


@router.get("/projects/{org}/{project}/plugins/webhooks/")
def get_webhook_plugin(access: Readable, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        return plugin_json(notifications.webhook_plugin(conn, _scope(access)))


@router.put("/projects/{org}/{project}/plugins/webhooks/")
async def configure_webhook_plugin(request: Request, access: Writable, svc: Svc
                                   ) -> dict[str, Any]:
    """Sentry's legacy WebHooks plugin: ``{"urls": "one URL a line"}``, the URLs that
    ``NotifyEventServiceAction`` with ``service: "webhooks"`` posts to."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or "urls" not in body:
        raise BadRequest('the body must be {"urls": "one http(s) URL a line"}')
    urls = parse_webhook_urls(body["urls"])  # InvalidNotification: a 400 naming the line

    def configure() -> WebhookPlugin:
        with svc.pool.connection() as conn:
            return notifications.set_webhook_plugin(conn, _scope(access), urls=urls)
    return plugin_json(await run_in_threadpool(configure))


@router.post("/projects/{org}/{project}/plugins/webhooks/")
def enable_webhook_plugin(access: Writable, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        return plugin_json(notifications.set_webhook_plugin(conn, _scope(access), enabled=True))


@router.delete("/projects/{org}/{project}/plugins/webhooks/")
def disable_webhook_plugin(access: Writable, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        return plugin_json(notifications.set_webhook_plugin(conn, _scope(access),
                                                            enabled=False))
