"""The access chain as FastAPI dependencies: credentials → caller → organization / team /
project / issue, each with the scope a route needs.

A route declares what it needs in its signature and gets it resolved, or never runs::

    @router.get("/projects/{org}/{project}/issues/")
    def list_issues(project: ProjectAccess = Depends(project_access("event:read"))): ...

* ``credentials`` reads what the request brings (Bearer token, session cookie, CSRF header);
* ``caller`` turns it into who asks (401 without valid credentials; a browser session's
  unsafe request without its CSRF token is a 403);
* ``org_access(scope)``, ``team_access(scope)``, ``project_access(scope)``,
  ``issue_access(scope)`` resolve the URL's organization (or the issue's), team, project or
  issue within what the caller may see — anything else answers 404, whether it does not
  exist or belongs to another tenant, so ids cannot be probed — and then check the scope
  (403 naming it). Write scopes on a team or project also need an admin to own it (Sentry's
  admin role acts only on its teams);
* ``caller_access()`` marks routes about the caller itself (its organizations, its tokens),
  ``public_access()`` the one route without credentials (the login).

Every dependency returned here carries an ``AccessRule`` (``access_rule(dependency)``), so a
test can walk the app and prove every route declares one (tests/unit/test_api_routes.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, Request
from psycopg_pool import ConnectionPool
from ray import serve

from events.access import ALL_SCOPES
from events.errors import Forbidden, Unauthorized, not_found
from serve_apps.api.config import ApiConfig
from serve_apps.api.shapes import MAX_BIGINT
from storage import issues as issue_store
from storage import tenancy
from storage.clickhouse import EventStore
from storage.projects import ProjectRef, find_project, project_by_id
from storage.tenancy import Access, Caller

SESSION_COOKIE: Final = "crashray_session"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
Level = Literal["public", "caller", "organization", "team", "project", "issue"]


@dataclass(frozen=True)
class Services:
    """What every route works with, one per Serve replica."""

    config: ApiConfig
    pool: ConnectionPool[Any]
    clickhouse: EventStore


def services(request: Request) -> Services:
    """The replica's services. Serve serves a copy of the app it was given, so inside an
    API replica they are found on the deployment instance (``ApiDeployment.services``);
    an app served otherwise carries them in ``app.state.services``: the ingest replicas'
    on one node (``api_within``), and tests'."""
    found = getattr(request.app.state, "services", None)
    if found is None:
        found = getattr(serve.get_replica_context().servable_object, "services", None)
    if not isinstance(found, Services):
        raise RuntimeError("the API app was started without its services")
    return found


#: A route's (or dependency's) services: ``svc: Svc``.
Svc = Annotated[Services, Depends(services)]


@dataclass(frozen=True)
class Credentials:
    """What a request brings to say who it is."""

    authorization: str | None
    session: str | None
    csrf_token: str | None
    method: str


def credentials(request: Request) -> Credentials:
    return Credentials(request.headers.get("authorization"),
                       request.cookies.get(SESSION_COOKIE),
                       request.headers.get("x-csrftoken"), request.method)


def caller(creds: Annotated[Credentials, Depends(credentials)],
           svc: Svc) -> Caller:
    """Who asks: a Bearer token, else a browser session (whose unsafe requests must carry
    its CSRF token in ``X-CSRFToken``); 401 when neither is valid."""
    with svc.pool.connection() as conn:
        if creds.authorization:
            if not creds.authorization.lower().startswith("bearer "):
                raise Unauthorized("Authentication credentials were not provided.")
            found = tenancy.token_caller(conn, creds.authorization[7:].strip())
            if found is None:
                raise Unauthorized("Invalid token")
            return found
        user = tenancy.session_user(conn, creds.session) if creds.session else None
    if user is None:
        raise Unauthorized("Authentication credentials were not provided.")
    if creds.method not in SAFE_METHODS and not (
            creds.csrf_token and hmac.compare_digest(
                creds.csrf_token.encode(errors="replace"), user.csrf_token.encode())):
        raise Forbidden("CSRF token missing or incorrect (send it in X-CSRFToken)")
    return Caller(user.username, user.user_id, None, None)


# --- declared access ---------------------------------------------------------------------
@dataclass(frozen=True)
class AccessRule:
    """What a route declared: the level it is scoped to and the scope it needs."""

    level: Level
    scope: str | None = None


_RULE_ATTRIBUTE: Final = "__crashray_access__"


def access_rule(dependency: Callable[..., Any]) -> AccessRule | None:
    rule = getattr(dependency, _RULE_ATTRIBUTE, None)
    return rule if isinstance(rule, AccessRule) else None


def _declared(rule: AccessRule) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if rule.scope is not None and rule.scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {rule.scope!r}")

    def mark(dependency: Callable[..., Any]) -> Callable[..., Any]:
        setattr(dependency, _RULE_ATTRIBUTE, rule)
        return dependency
    return mark


def need(access: Access, scope: str) -> None:
    if scope not in access.scopes:
        raise Forbidden(f"this token lacks the scope {scope}")


def _organization(svc: Services, who: Caller, org_slug: str) -> Access:
    with svc.pool.connection() as conn:
        access = tenancy.caller_access(conn, who, org_slug)
    if access is None:
        raise not_found()
    return access


def public_access() -> Callable[..., None]:
    @_declared(AccessRule("public"))
    def public() -> None:
        return None
    return public


def caller_access() -> Callable[..., Caller]:
    """A route about the caller itself (its own organizations or tokens)."""
    @_declared(AccessRule("caller"))
    def resolve(who: Annotated[Caller, Depends(caller)]) -> Caller:
        return who
    return resolve


def user_access() -> Callable[..., Caller]:
    """A route only a user (by token or session) may call, about itself."""
    @_declared(AccessRule("caller"))
    def resolve(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.user_id is None:
            raise Forbidden("an organization token acts for its organization only; use a"
                            " user token or a login for this")
        return who
    return resolve


def org_access(scope: str) -> Callable[..., Access]:
    @_declared(AccessRule("organization", scope))
    def resolve(org: str, who: Annotated[Caller, Depends(caller)],
                svc: Svc) -> Access:
        access = _organization(svc, who, org)
        need(access, scope)
        return access
    return resolve


def org_access_any(*scopes: str) -> Callable[..., Access]:
    """``org_access`` for a route that any one of ``scopes`` opens (Sentry's uploads of
    release files take ``project:releases`` or ``project:write``); declared with the first."""
    @_declared(AccessRule("organization", scopes[0]))
    def resolve(org: str, who: Annotated[Caller, Depends(caller)],
                svc: Svc) -> Access:
        access = _organization(svc, who, org)
        if not access.scopes & frozenset(scopes):
            raise Forbidden(f"this token lacks the scope {' or '.join(scopes)}")
        return access
    return resolve


@dataclass(frozen=True)
class TeamAccess:
    access: Access
    team_id: int
    slug: str


def team_access(scope: str) -> Callable[..., TeamAccess]:
    @_declared(AccessRule("team", scope))
    def resolve(org: str, team: str, who: Annotated[Caller, Depends(caller)],
                svc: Svc) -> TeamAccess:
        access = _organization(svc, who, org)
        with svc.pool.connection() as conn:
            team_id = tenancy.find_team(conn, access.organization_id, team)
        if team_id is None:
            raise not_found()
        need(access, scope)
        if scope.endswith((":write", ":admin")) and not access.may_change_team(team_id):
            raise Forbidden("an admin changes only its own teams")
        return TeamAccess(access, team_id, team)
    return resolve


@dataclass(frozen=True)
class ProjectAccess:
    access: Access
    project: ProjectRef


def project_access(scope: str, *or_scopes: str) -> Callable[..., ProjectAccess]:
    """The URL's project, with ``scope`` (or any of ``or_scopes``: release uploads take
    ``project:releases`` or ``project:write``, as Sentry)."""
    @_declared(AccessRule("project", scope))
    def resolve(org: str, project: str, who: Annotated[Caller, Depends(caller)],
                svc: Svc) -> ProjectAccess:
        access = _organization(svc, who, org)
        with svc.pool.connection() as conn:
            ref = find_project(conn, access.organization_id, project)
        if ref is None or ref.id not in access.project_ids:
            raise not_found()
        scopes = (scope, *or_scopes)
        if not access.scopes & frozenset(scopes):
            raise Forbidden(f"this token lacks the scope {' or '.join(scopes)}")
        if scope.startswith("project:") and scope not in ("project:read", "project:releases") \
                and not access.may_change_project(ref.id):
            raise Forbidden("an admin changes only the projects of its teams")
        return ProjectAccess(access, ref)
    return resolve


@dataclass(frozen=True)
class IssueAccess:
    access: Access
    project: ProjectRef
    issue: issue_store.IssueRow


def issue_access(scope: str) -> Callable[..., IssueAccess]:
    @_declared(AccessRule("issue", scope))
    def resolve(issue_id: int, who: Annotated[Caller, Depends(caller)],
                svc: Svc) -> IssueAccess:
        if not 0 < issue_id <= MAX_BIGINT:  # no such issue can exist
            raise not_found()
        with svc.pool.connection() as conn:
            org_slug = tenancy.organization_of_issue(conn, issue_id)
        if org_slug is None:
            raise not_found()
        access = _organization(svc, who, org_slug)
        with svc.pool.connection() as conn:
            project_id = issue_store.issue_project(conn, access.organization_id, issue_id)
            ref = None if project_id is None else project_by_id(
                conn, access.organization_id, project_id)
            row = None if ref is None else issue_store.get_issue(conn, ref, issue_id)
        if ref is None or row is None or ref.id not in access.project_ids:
            raise not_found()
        need(access, scope)
        return IssueAccess(access, ref, row)
    return resolve
