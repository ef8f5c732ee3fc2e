"""The Web API's FastAPI app and its Serve deployment.

Routes live in one router per resource (auth, organizations, projects, issues, events,
quotas); each route declares its access through ``deps.py``. Errors are answered in one
place each:

* any ``CrashrayError`` (events/errors.py) → its status, ``{"detail", "code"}``;
* a request that does not validate (body, query or path parameter) → 400
  ``{"detail": "<field>: <problem>", "code": "invalid"}``, naming the field as Sentry does
  (FastAPI's default would be a 422 with pydantic's error list);
* a body over ``CRASHRAY_API_MAX_BODY_BYTES`` → 413 before it is parsed (body_limit.py);
* a NUL character in the path or the query string → 400 before any route runs: no
  PostgreSQL text can hold one, and no slug, id or search needs one.

The OpenAPI schema is not served: the API is open to the network and its route table is in
each router's docstring (``create_app().openapi()`` prints it for a developer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import ConnectionPool
from ray import serve
from ray.serve.exceptions import RayServeException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.clickhouse import clickhouse_store
from events.errors import BadRequest, CrashrayError
from serve_apps.api import (
    alert_rules,
    anomalies,
    artifacts,
    auth,
    comments,
    environments,
    events,
    issues,
    operations,
    organizations,
    ownership,
    projects,
    quotas,
    releases,
)
from serve_apps.api.body_limit import BodyLimit
from serve_apps.api.config import ApiConfig
from serve_apps.api.deps import Services, services
from serve_apps.ingest_http import API_PREFIX
from storage.timed_pool import TimedConnectionPool

log = logging.getLogger("crashray.api")

#: Pydantic's prefix for errors raised by our own validators (the message follows).
_VALUE_ERROR_PREFIX: Final = "Value error, "


DEFAULT_MAX_BODY_BYTES: Final = ApiConfig.max_body_bytes

#: Every router the API serves, one per resource.
ROUTERS: Final = (auth.router, organizations.router, projects.router, issues.router,
                  events.router, quotas.router, operations.router, artifacts.router,
                  releases.router, alert_rules.router, anomalies.router, comments.router,
                  ownership.router, environments.router)
#: Room for the multipart framing around a chunk-upload request's chunks.
MULTIPART_ALLOWANCE_BYTES: Final = 64 * 1024


def create_app() -> FastAPI:
    api = FastAPI(title="Crashray API", docs_url=None, redoc_url=None, openapi_url=None)
    for router in ROUTERS:
        api.include_router(router)
    api.add_exception_handler(CrashrayError, crashray_error)  # type: ignore[arg-type]
    api.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    # Added last, so it runs first: odd URLs and big bodies never reach a route.
    api.add_middleware(BodyLimit, limit_of=max_body_bytes)
    api.add_middleware(RefuseNul)
    return api


def max_body_bytes(request: Request) -> int:
    """The replica's limit; an app served without Serve or services (a test of the error
    handler) has the default one."""
    try:
        config = services(request).config
    except RayServeException:
        return DEFAULT_MAX_BODY_BYTES
    if request.method == "POST" and request.url.path.endswith(("/chunk-upload/", "/files/")):
        # Chunks of source map bundles and release files (serve_apps/api/artifacts.py,
        # releases.py) have their own limit.
        return config.artifacts.max_request_bytes + MULTIPART_ALLOWANCE_BYTES
    return config.max_body_bytes


class RefuseNul:
    """400 for a NUL character (raw or %00) in the path or the query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                error = BadRequest(f"the {where} has a NUL character (%00); remove it")
                await JSONResponse(error.api_body(), status_code=error.status)(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query = bytes(scope.get("query_string", b"")).lower()
    return "query string" if b"%00" in query or b"\x00" in query else None


async def crashray_error(request: Request, exc: CrashrayError) -> JSONResponse:
    retry_after = getattr(exc, "retry_after_s", None)  # throttles say when to come back
    headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
    return JSONResponse(exc.api_body(), status_code=exc.status, headers=headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_detail(exc.errors()), "code": "invalid"},
                        status_code=400)


def validation_detail(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one sentence per field: ``rateLimit.window: Input should be
    greater than or equal to 1``."""
    parts = []
    for error in errors:
        where, loc = _location(error.get("loc", ()))
        message = str(error.get("msg", "is not valid")).removeprefix(_VALUE_ERROR_PREFIX)
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error')})")
        elif not loc and where == "body":
            parts.append("the body must be a JSON object"
                         + ("" if error.get("type") == "missing" else f": {message}"))
        else:
            parts.append(f"{loc or where}: {message}")
    return "; ".join(parts) or "the request is not valid"


def _location(loc: Sequence[Any]) -> tuple[str, str]:
    where = str(loc[0]) if loc else "request"
    return where, ".".join(str(part) for part in loc[1:])


app = create_app()


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=5,
                  graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(app)
class ApiDeployment:
    """One API replica: its PostgreSQL pool and ClickHouse store serve every route."""

    def __init__(self, config: ApiConfig) -> None:
        self.services = api_services(config)


def api_services(config: ApiConfig) -> Services:
    """A replica's services: its PostgreSQL pool and ClickHouse store."""
    # ``check``: a connection is tried before it is handed out, so one that a PostgreSQL
    # restart broke is replaced instead of failing a request with a 500 (psycopg_pool's
    # "connection quality" check; a round trip on a local socket).
    # The store first: it raises when the shared process is gone, and then no pool (a
    # connection and its threads) is left open behind the error.
    store = clickhouse_store(config.clickhouse_dsn)
    pool: ConnectionPool[Any] = TimedConnectionPool(
        config.postgres_url, min_size=1, max_size=config.pool_max_connections, open=True,
        check=ConnectionPool.check_connection, deployment="api")
    return Services(config, pool, store)


def api_within(config: ApiConfig) -> FastAPI:
    """The API app with its services, for another deployment to answer ``/api/0`` with
    (``ApiAnswer``): on one node the ingest replicas do (``CRASHRAY_API_OWN_REPLICAS``)."""
    within = create_app()
    within.state.services = api_services(config)
    return within


class ApiAnswer(Response):
    """What a deployment's ``__call__`` returns to let the API app answer a request under
    ``/api/0`` itself. Serve sends a returned Response by calling it as an ASGI app with
    the request's scope, receive and send; this one passes them on to the API app, mounted
    at ``/api/0`` as Serve mounts the API's own application (``root_path``), so the body is
    read and the answer streamed by the app, nothing buffered here."""

    def __init__(self, api: ASGIApp) -> None:
        super().__init__()  # no body of its own: the app sends the answer
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mounted = {**scope, "root_path": scope.get("root_path", "") + API_PREFIX}
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.api(mounted, receive, sending)
        except Exception:
            # Starlette's error middleware answers an unexpected error with a 500, then
            # raises it again for the server to log. Serve, which called a deployment
            # here and not an ASGI app, would try to answer it a second time (the
            # server then fails on an answer after the answer): log it here instead.
            if not answered:
                raise
            log.exception("API request %s %s failed after its answer began",
                          scope.get("method"), scope.get("path"))
