"""The web dashboard at ``/``: ``dashboards/index.html`` and its files under ``/static/``.

The dashboard is a single page of plain ES modules that talks only to the JSON API under
``/api/0/`` with the browser's session cookie; this deployment serves files and nothing
else (no data, no sessions). What is served and how long it may be cached is decided by
``dashboards/assets.py``; the page also keeps the old start page's set-up section (the
first active DSN and the SDK snippets), so a fresh install still says where to send events.
"""

# No ``from __future__ import annotations`` here: FastAPI must see ``Request`` as a class
# through Serve's class-based ingress, else it takes it for a query parameter (422).
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

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


def _clickhouse_ping(config: HealthConfig) -> Callable[[], bool]:
    """The store's ping, found when first asked (the owner actor of the embedded engine
    may start after this replica). Defined above the deployment class: defined below it,
    the replicas did not find it (NameError at start; the ingress wrapper is shipped to
    them by value)."""
    def ping() -> bool:
        from actors.clickhouse import clickhouse_store

        return clickhouse_store(config.clickhouse_dsn).ping()
    return ping


web = FastAPI(title="Crashray dashboard", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="web", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=5,
                  graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(web)
class DashboardDeployment:
    def __init__(self, health: HealthConfig | None = None) -> None:
        # Read once: the files change only with a new install, which restarts Serve.
        self.assets = load_assets()
        self.template = INDEX_FILE.read_text(encoding="utf-8")
        self.readiness = ReadinessProbe(health, _clickhouse_ping(health)) if health else None

    @web.get("/healthz")
    def healthz(self) -> JSONResponse:
        """The process answers; nothing else is asked (serve_apps/health.py)."""
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    @web.get("/readyz")
    def readyz(self) -> JSONResponse:
        """PostgreSQL, ClickHouse and the queue's age (serve_apps/health.py); 503 when not."""
        if self.readiness is None:
            return JSONResponse({"status": "unready", "checks": {}, "detail":
                                 "this deployment was started without its health settings"},
                                status_code=503, headers={"Cache-Control": "no-store"})
        found = self.readiness()
        return JSONResponse(found.body(), status_code=200 if found.ready else 503,
                            headers={"Cache-Control": "no-store"})

    @web.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index(self) -> HTMLResponse:
        page = render_index(self.template, self.assets)
        return HTMLResponse(page, headers={**SECURITY_HEADERS,
                                           "Cache-Control": CACHE_REVALIDATE})

    @web.api_route("/static/{path:path}", methods=["GET", "HEAD"])
    def static(self, path: str, request: Request) -> Response:
        resolved = resolve_asset(self.assets, path)
        if resolved is None:
            raise HTTPException(404, f"no dashboard file {path!r}")
        asset = resolved.asset
        headers = {"Cache-Control": resolved.cache_control, "ETag": asset.etag,
                   "X-Content-Type-Options": "nosniff"}
        if etag_matches(request.headers.get("if-none-match"), asset.etag):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    @web.api_route("/favicon.ico", methods=["GET", "HEAD"])
    def favicon(self, request: Request) -> Response:
        """Browsers ask for it unprompted; answer the dashboard's icon."""
        return self.static("favicon.svg", request)
