"""The web dashboard at ``/`` (``dashboards/index.html`` and its files under ``/static/``)
and the health probes ``/healthz`` and ``/readyz``, answered by the ingest replicas.

The dashboard is a single page of plain ES modules that talks only to the JSON API under
``/api/0/`` with the browser's session cookie; these pages serve files and nothing else (no
data, no sessions). What is served and how long it may be cached is decided by
``dashboards/assets.py``; the page also keeps the old start page's set-up section (the first
active DSN and the SDK snippets), so a fresh install still says where to send events.

Why the ingest deployment serves them (serve_apps/ingest.py routes every path outside
``/api`` here) rather than a deployment of their own: a Serve replica is a Python process of
~130 MiB, and these few files and probes need none of their own; Serve routes each request to
the application with the longest matching route prefix, so with ingest at ``/`` and the API
at ``/api/0`` every path still reaches the same code as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dashboards.assets import (
    CACHE_REVALIDATE,
    INDEX_FILE,
    SECURITY_HEADERS,
    etag_matches,
    load_assets,
    render_index,
    resolve_asset,
)
from serve_apps.health import HealthConfig, ReadinessProbe

#: The methods every page answers (a probe or a browser reads; nothing here is written).
PAGE_METHODS: Final = ("GET", "HEAD")
STATIC_PREFIX: Final = "/static/"
NO_STORE: Final = {"Cache-Control": "no-store"}


def _clickhouse_ping(config: HealthConfig) -> Callable[[], bool]:
    """The store's ping, found when first asked (the owner actor of the embedded engine
    may start after this replica)."""
    def ping() -> bool:
        from actors.clickhouse import clickhouse_store

        return clickhouse_store(config.clickhouse_dsn).ping()
    return ping


class DashboardPages:
    """The dashboard's page and files and the health probes, for paths outside ``/api``."""

    def __init__(self, health: HealthConfig | None = None) -> None:
        # Read once: the files change only with a new install, which restarts Serve.
        self.assets = load_assets()
        self.template = INDEX_FILE.read_text(encoding="utf-8")
        self.readiness = ReadinessProbe(health, _clickhouse_ping(health)) if health else None

    async def answer(self, request: Request) -> Response:
        path = request.url.path
        if request.method not in PAGE_METHODS:
            return JSONResponse({"detail": f"{request.method} is not allowed at {path[:200]};"
                                 " the dashboard's pages are read with GET"}, 405,
                                {"Allow": ", ".join(PAGE_METHODS)})
        if path == "/healthz":
            # The process answers; nothing else is asked (serve_apps/health.py).
            return JSONResponse({"status": "ok"}, headers=NO_STORE)
        if path == "/readyz":
            return await self.readyz()
        if path == "/":
            page = render_index(self.template, self.assets)
            return Response(page, media_type="text/html",
                            headers={**SECURITY_HEADERS, "Cache-Control": CACHE_REVALIDATE})
        if path == "/favicon.ico":  # browsers ask for it unprompted: the dashboard's icon
            return self.static("favicon.svg", request)
        if path.startswith(STATIC_PREFIX):
            return self.static(path[len(STATIC_PREFIX):], request)
        return JSONResponse({"detail": f"nothing at {path[:200]}: the dashboard is at /, its"
                             " API under /api/0/, and SDKs send to /api/<project_id>/envelope/"},
                            404)

    async def readyz(self) -> Response:
        """PostgreSQL, ClickHouse and the queue's age (serve_apps/health.py); 503 when not.
        The probe blocks for at most twice its check timeout: on a thread, off the replica's
        event loop, which the ingest requests share."""
        if self.readiness is None:
            return JSONResponse({"status": "unready", "checks": {}, "detail":
                                 "this deployment was started without its health settings"},
                                503, NO_STORE)
        found = await asyncio.to_thread(self.readiness)
        return JSONResponse(found.body(), 200 if found.ready else 503, NO_STORE)

    def static(self, path: str, request: Request) -> Response:
        resolved = resolve_asset(self.assets, path)
        if resolved is None:
            return JSONResponse({"detail": f"no dashboard file {path!r}"}, 404)
        asset = resolved.asset
        headers = {"Cache-Control": resolved.cache_control, "ETag": asset.etag,
                   "X-Content-Type-Options": "nosniff"}
        if etag_matches(request.headers.get("if-none-match"), asset.etag):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
