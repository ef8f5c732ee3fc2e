"""The quota side of the Web API: DSN keys with their rate limits, organization quotas,
spike protection and current usage. Request bodies are validated here; every read and write
is scoped to the caller's organization (and, for keys, to the project in the URL), and
anything outside it answers 404.

Routes (registered by ``serve_apps/query.py``)::

    GET  /api/0/projects/{org}/{project}/keys/                 project:read
    PUT  /api/0/projects/{org}/{project}/keys/{key_id}/        project:write
         {"name": ..., "isActive": ..., "rateLimit": {"window": 60, "count": 100} | null}
    GET  /api/0/organizations/{org}/quotas/                    org:read
    POST /api/0/organizations/{org}/quotas/                    org:write
         {"scope": "project", "scopeId": 2, "categories": ["error"], "window": 60,
          "limit": 100, "reasonCode": "too_many"}
    DELETE /api/0/organizations/{org}/quotas/{id}/             org:write
    GET  /api/0/organizations/{org}/quota-usage/               org:read
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import HTTPException
from psycopg_pool import ConnectionPool

from events.quotas import CATEGORIES, SCOPES, InvalidQuota, Quota, SpikeProtection
from storage import quotas as quota_store
from storage.postgres import ProjectRef
from storage.tenancy import Access

NOT_FOUND = "The requested resource does not exist"


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def need(scope: Access, scope_name: str) -> None:
    if scope_name not in scope.scopes:
        raise HTTPException(403, f"this token lacks the scope {scope_name}")


def need_project_write(scope: Access, project: ProjectRef) -> None:
    """``project:write``, and for an admin a project of one of its teams (Sentry's admin)."""
    need(scope, "project:write")
    if not scope.may_change_project(project.id):
        raise HTTPException(403, "an admin changes only the projects of its teams")


def key_json(key: quota_store.KeyRow, base_url: str) -> dict[str, Any]:
    """A DSN key as Sentry's project-keys endpoint shows it."""
    dsn = f"{base_url.replace('://', f'://{key.public_key}@', 1)}/{key.project_id}"
    return {
        "id": key.public_key, "name": key.label, "label": key.label,
        "public": key.public_key, "secret": key.secret_key, "projectId": key.project_id,
        "isActive": key.is_active,
        "rateLimit": None if key.rate_limit_count is None else {
            "window": key.rate_limit_window_s, "count": key.rate_limit_count},
        "dsn": {"public": dsn, "secret": dsn.replace(
            f"{key.public_key}@", f"{key.public_key}:{key.secret_key}@", 1)},
        "dateCreated": iso(key.date_added),
    }


def parse_rate_limit(raw: object) -> tuple[int, int] | None:
    """``{"window": seconds, "count": n}`` → (window, count); null removes the limit."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise HTTPException(400, 'rateLimit must be {"window": seconds, "count": events} or'
                                 " null")
    window, count = raw.get("window"), raw.get("count")
    if window is None and count is None:
        return None  # Sentry's UI clears a limit this way
    for name, value in (("window", window), ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (
                1 if name == "window" else 0):
            raise HTTPException(400, f"rateLimit.{name} must be a whole number"
                                     f" {'of seconds ≥ 1' if name == 'window' else '≥ 0'};"
                                     f" got {value!r}")
    assert isinstance(window, int) and isinstance(count, int)
    return window, count


def parse_quota(organization_id: int, body: Any) -> Quota:
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object with scope, categories,"
                                 " window and limit")
    scope = body.get("scope", "organization")
    scope_id = body.get("scopeId")
    categories = body.get("categories", [])
    window, limit = body.get("window"), body.get("limit")
    reason = body.get("reasonCode", "")
    if scope not in SCOPES:
        raise HTTPException(400, f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if scope_id is not None and (not isinstance(scope_id, int) or isinstance(scope_id, bool)):
        raise HTTPException(400, f"scopeId must be a project or key id; got {scope_id!r}")
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise HTTPException(400, "categories must be a list of data categories, e.g."
                                 f' ["error"]; known: {", ".join(sorted(CATEGORIES))}')
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise HTTPException(400, f"window must be a whole number of seconds; got {window!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise HTTPException(400, f"limit must be a whole number or null; got {limit!r}")
    if not isinstance(reason, str) or ":" in reason or "," in reason:
        raise HTTPException(400, "reasonCode must be text without ':' or ','")
    try:
        return Quota("new", organization_id, scope,
                     organization_id if scope == "organization" else scope_id,
                     frozenset(categories), limit, window, reason)
    except InvalidQuota as exc:
        raise HTTPException(400, str(exc)) from exc


def quota_json(stored: quota_store.StoredQuota) -> dict[str, Any]:
    q = stored.quota
    return {"id": str(stored.id), "scope": q.scope, "scopeId": q.scope_id,
            "categories": sorted(q.categories), "window": q.window_s, "limit": q.limit,
            "reasonCode": q.reason_code}


def parse_spike_protection(raw: object, current: SpikeProtection
                           ) -> tuple[bool, float | None, int | None]:
    """``{"enabled": bool, "multiplier": x, "floorPerHour": n}`` (each optional)."""
    if not isinstance(raw, dict):
        raise HTTPException(400, 'spikeProtection must be an object such as {"enabled": false}')
    enabled = raw.get("enabled", current.enabled)
    multiplier = raw.get("multiplier")
    floor = raw.get("floorPerHour")
    if not isinstance(enabled, bool):
        raise HTTPException(400, "spikeProtection.enabled must be true or false")
    if multiplier is not None and (not isinstance(multiplier, int | float)
                                   or isinstance(multiplier, bool) or multiplier <= 0):
        raise HTTPException(400, f"spikeProtection.multiplier must be a number > 0; got"
                                 f" {multiplier!r}")
    if floor is not None and (not isinstance(floor, int) or isinstance(floor, bool)
                              or floor < 0):
        raise HTTPException(400, f"spikeProtection.floorPerHour must be a whole number ≥ 0;"
                                 f" got {floor!r}")
    return enabled, None if multiplier is None else float(multiplier), floor


class QuotaApi:
    def __init__(self, pool: ConnectionPool[Any], base_url: str) -> None:
        self.pool = pool
        self.base_url = base_url

    def keys(self, scope: Access, project: ProjectRef) -> list[dict[str, Any]]:
        need(scope, "project:read")
        with self.pool.connection() as conn:
            return [key_json(k, self.base_url)
                    for k in quota_store.project_keys(conn, project.id)]

    def update_key(self, scope: Access, project: ProjectRef, key_ref: str, body: Any
                   ) -> dict[str, Any]:
        need_project_write(scope, project)
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        name, active = body.get("name"), body.get("isActive")
        if name is not None and not isinstance(name, str):
            raise HTTPException(400, "name must be text")
        if active is not None and not isinstance(active, bool):
            raise HTTPException(400, "isActive must be true or false")
        rate_limit = parse_rate_limit(body["rateLimit"]) if "rateLimit" in body else False
        with self.pool.connection() as conn, conn.transaction():
            key = quota_store.find_key(conn, project.id, key_ref)
            if key is None:
                raise HTTPException(404, NOT_FOUND)
            quota_store.update_key(conn, key.id, label=name, is_active=active,
                                   rate_limit=rate_limit)
            updated = quota_store.find_key(conn, project.id, key.public_key)
        assert updated is not None
        return key_json(updated, self.base_url)

    def quotas(self, scope: Access) -> list[dict[str, Any]]:
        """The organization's quotas, but a project's or a key's only when the caller sees
        the project."""
        need(scope, "org:read")
        with self.pool.connection() as conn:
            stored = quota_store.list_quotas(conn, scope.organization_id)
            visible_keys = self._visible_keys(conn, scope)
        return [quota_json(q) for q in stored
                if q.quota.scope == "organization" or q.quota.scope_id is None
                or (q.quota.scope == "project" and q.quota.scope_id in scope.project_ids)
                or (q.quota.scope == "key" and q.quota.scope_id in visible_keys)]

    @staticmethod
    def _visible_keys(conn: Any, scope: Access) -> set[int]:
        return {int(r[0]) for r in conn.execute(
            "SELECT id FROM project_keys WHERE project_id = ANY(%s)",
            (sorted(scope.project_ids),)).fetchall()}

    def add_quota(self, scope: Access, body: Any) -> dict[str, Any]:
        need(scope, "org:write")
        quota = parse_quota(scope.organization_id, body)
        with self.pool.connection() as conn, conn.transaction():
            if not quota_store.scope_belongs(conn, scope.organization_id, quota.scope,
                                             quota.scope_id):
                raise HTTPException(404, f"no {quota.scope} {quota.scope_id} in this"
                                         " organization")
            quota_id = quota_store.add_quota(conn, quota)
        return quota_json(quota_store.StoredQuota(quota_id, quota))

    def delete_quota(self, scope: Access, quota_id: int) -> None:
        need(scope, "org:write")
        with self.pool.connection() as conn, conn.transaction():
            if not quota_store.delete_quota(conn, scope.organization_id, quota_id):
                raise HTTPException(404, NOT_FOUND)

    def usage(self, scope: Access) -> list[dict[str, Any]]:
        need(scope, "org:read")
        with self.pool.connection() as conn:
            rows = quota_store.current_usage(conn, scope.organization_id)
            visible_keys = self._visible_keys(conn, scope)
        shown = [usage_json(u) for u in rows]
        return [u for u in shown if u["scope"] == "organization"
                or (u["scope"] == "project" and u["scopeId"] in scope.project_ids)
                or (u["scope"] == "key" and u["scopeId"] in visible_keys)]


def usage_json(u: quota_store.CounterUsage) -> dict[str, Any]:
    """A running counter: which quota, whose (project/key id), how much, until when."""
    quota_id, _, subject_scope, subject = [*u.counter.split(":"), "", "", "", ""][:4]
    return {"quota": quota_id, "scope": subject_scope,
            "scopeId": int(subject) if subject.isdigit() else None,
            "used": u.count, "windowEnds": iso(u.expires_at)}
