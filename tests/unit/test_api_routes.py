"""The API's routes and its one error handler, without servers: every route declares its
access through serve_apps/api/deps.py, scoped to the tenant its URL names, and every error
is answered in Sentry's shape."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from events.access import ALL_SCOPES
from events.errors import Conflict, Forbidden, NotFound, RateLimited
from events.search import parse_search
from serve_apps.api.app import ROUTERS, create_app
from serve_apps.api.deps import AccessRule, access_rule
from serve_apps.api.shapes import Body

#: Routes about the caller itself rather than a tenant's data, each reviewed: they read or
#: write only the caller's own organizations, projects and tokens.
CALLER_ROUTES = {
    ("GET", "/auth/"), ("DELETE", "/auth/"),
    ("GET", "/organizations/"), ("POST", "/organizations/"),
    ("GET", "/api-tokens/"), ("POST", "/api-tokens/"),
    ("GET", "/projects/"),
    # Instance admins only (serve_apps/api/operations.py's instance_admin answers 403 to
    # anyone else): the instance's figures and every organization's dead letters.
    ("GET", "/operations/"), ("GET", "/operations/dead-letters/"),
    ("POST", "/operations/dead-letters/replay/"), ("POST", "/operations/dead-letters/drop/"),
}
PUBLIC_ROUTES = {("POST", "/auth/login/")}
#: Path parameters → the level a route must be scoped at.
LEVEL_OF_PARAMETERS = {
    frozenset({"issue_id"}): "issue",
    frozenset({"org", "project"}): "project",
    frozenset({"org", "team"}): "team",
    frozenset({"org"}): "organization",
    frozenset(): "caller",
}


def routes() -> list[tuple[str, APIRoute]]:
    found = []
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            found += [(method, route) for method in sorted(route.methods)]
    return found


def rules_of(route: APIRoute) -> list[AccessRule]:
    found = [access_rule(d.call) for d in route.dependant.dependencies if d.call is not None]
    return [r for r in found if r is not None]


ROUTES = routes()


def test_the_app_serves_exactly_the_routers_walked_here() -> None:
    included = [getattr(r, "original_router", None) for r in create_app().routes]
    assert [r for r in included if isinstance(r, APIRouter)] == list(ROUTERS)
    assert len(ROUTES) >= 45


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r.path}" for m, r in ROUTES])
def test_every_route_declares_one_access_rule_for_the_tenant_in_its_url(
        method: str, route: APIRoute) -> None:
    rules = rules_of(route)
    assert len(rules) == 1, f"{method} {route.path} declares {len(rules)} access rules"
    rule = rules[0]
    tenant_parameters = set(re.findall(r"\{(\w+)\}", route.path)) & {
        "org", "project", "team", "issue_id"}
    expected = LEVEL_OF_PARAMETERS[frozenset(tenant_parameters)]
    if (method, route.path) in PUBLIC_ROUTES:
        expected = "public"
    assert rule.level == expected, f"{method} {route.path} is scoped at {rule.level}"
    if rule.level == "caller":
        assert (method, route.path) in CALLER_ROUTES, "a new caller-level route: review it"
    if rule.level in ("organization", "team", "project", "issue"):
        assert rule.scope in ALL_SCOPES
        if method != "GET":  # a change never needs only a read scope
            assert rule.scope is not None and not rule.scope.endswith(":read"), route.path


# --- the one error handler ----------------------------------------------------------------
class Sample(Body):
    slug: str
    count: int | None = None


def client_raising(error: Exception | None = None) -> TestClient:
    app = create_app()
    router = APIRouter()

    @router.get("/boom/")
    def boom() -> None:
        assert error is not None
        raise error

    @router.post("/sample/")
    def sample(body: Sample, limit: int = 10) -> dict[str, Any]:
        return body.model_dump()

    @router.get("/search/")
    def search(query: str) -> None:
        import datetime as dt
        parse_search(query, dt.datetime.now(dt.UTC))

    app.include_router(router)
    return TestClient(app)


@pytest.mark.parametrize(("error", "status", "code"), [
    (NotFound("The requested resource does not exist"), 404, "not_found"),
    (Forbidden("this token lacks the scope org:write"), 403, "forbidden"),
    (Conflict("team 'a' exists already"), 409, "conflict"),
    (RateLimited("slow down", 10, "10::organization"), 429, "rate_limited"),
])
def test_crashray_errors_answer_their_status_detail_and_code(
        error: Exception, status: int, code: str) -> None:
    response = client_raising(error).get("/boom/")
    assert response.status_code == status
    assert response.json() == {"detail": str(error), "code": code}


def test_search_syntax_error_is_a_400_naming_the_position() -> None:
    response = client_raising().get("/search/", params={"query": "level:error ("})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("query position 12:")


def test_a_missing_field_is_a_400_naming_it() -> None:
    response = client_raising().post("/sample/", json={"count": 1})
    assert response.status_code == 400
    assert response.json() == {"detail": "slug: Field required", "code": "invalid"}


def test_a_wrongly_typed_field_or_parameter_is_a_400_naming_it() -> None:
    client = client_raising()
    assert client.post("/sample/", json={"slug": "a", "count": "1"}).json()["detail"] == \
        "count: Input should be a valid integer"
    assert client.post("/sample/?limit=x", json={"slug": "a"}).json()["detail"].startswith(
        "limit: ")


def test_a_body_that_is_no_json_object_is_a_400_saying_so() -> None:
    client = client_raising()
    not_json = client.post("/sample/", content=b"{nope", headers={
        "Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.json()["detail"].startswith("the body is not valid JSON")
    listed = client.post("/sample/", json=[1, 2])
    assert listed.status_code == 400 and listed.json()["detail"].startswith(
        "the body must be a JSON object")
    missing = client.post("/sample/")
    assert (missing.status_code, missing.json()["detail"]) == (
        400, "the body must be a JSON object")


#: Calls that block: a PostgreSQL connection from the pool (psycopg_pool waits up to 30 s
#: for one), decompressing or hashing an uploaded chunk.
BLOCKING_CALLS = {"connection", "gunzip_bounded", "check_chunk"}
ASYNC_ROUTES = [(m, r) for m, r in ROUTES if inspect.iscoroutinefunction(r.endpoint)]


def blocking_calls(function: ast.AsyncFunctionDef) -> list[str]:
    """Calls in ``BLOCKING_CALLS`` made by the coroutine itself (functions it defines to run
    elsewhere, as ``run_in_threadpool(store)``, are not walked)."""
    found, todo = [], list(function.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", "")
            if name in BLOCKING_CALLS:
                found.append(f"line {node.lineno}: {name}(…)")
        todo.extend(ast.iter_child_nodes(node))
    return found


@pytest.mark.parametrize(("method", "route"), ASYNC_ROUTES,
                         ids=[f"{m} {r.path}" for m, r in ASYNC_ROUTES])
def test_no_async_route_blocks_the_event_loop(method: str, route: APIRoute) -> None:
    """An ``async def`` route runs on the replica's event loop, which on one node is also the
    ingest deployment's (``CRASHRAY_API_OWN_REPLICAS``): a blocking call there would stall
    SDK intake and the health probes. Blocking work goes to ``run_in_threadpool`` (or the
    route is a plain ``def``, which FastAPI runs in its thread pool)."""
    source = textwrap.dedent(inspect.getsource(route.endpoint))
    [function] = [n for n in ast.parse(source).body if isinstance(n, ast.AsyncFunctionDef)]
    assert not blocking_calls(function), f"{route.endpoint.__qualname__} blocks"


def test_the_async_routes_are_walked() -> None:
    assert len(ASYNC_ROUTES) >= 6  # rules, test notifications, webhooks plugin, uploads
