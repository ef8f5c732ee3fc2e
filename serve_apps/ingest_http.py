"""The HTTP face of the ingest edge: which endpoint and project a path names, the methods
and CORS headers the endpoints answer with, and Relay's error answers (``{"detail",
"causes"}`` plus ``X-Sentry-Error``, ``Retry-After``, ``X-Sentry-Rate-Limits``, ``Allow``).
Every odd path or method is a 4xx that says what is wrong; ``X-Sentry-Error`` is printable
ASCII whatever the detail quotes (events/errors.printable_ascii).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import orjson
from starlette.responses import Response

from events.errors import (
    BadRequest,
    CrashrayError,
    MethodNotAllowed,
    Overloaded,
    RateLimited,
    UnsupportedMediaType,
)

ROUTE = re.compile(r"^/api/(?P<project>[^/]*)/(?P<endpoint>envelope|store|security|csp-report)/*$")
#: Relay routes both to the security-report handler (relay-server/src/endpoints/mod.rs).
SECURITY_ENDPOINTS = frozenset({"security", "csp-report"})
#: Relay's project ids are u64 (relay-base-schema ProjectId); 0 is the Web API's prefix.
MAX_PROJECT_ID = 2**64 - 1
#: The methods of every ingest endpoint (Relay's routes take POST; browsers preflight).
ALLOWED_METHODS = ("POST", "OPTIONS")


@dataclass(frozen=True)
class IngestRoute:
    project_id: int
    endpoint: str

    @property
    def security(self) -> bool:
        return self.endpoint in SECURITY_ENDPOINTS


#: The Web API's route prefix (serve_apps/api/app.py); no SDK sends to project 0.
API_PREFIX: Final = "/api/0"


def is_api_path(path: str) -> bool:
    """Whether a path is the Web API's (``/api/0`` and below)."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def is_ingest_path(path: str) -> bool:
    """Whether a path is ingest's (``/api`` and below), not the dashboard's pages."""
    return path == "/api" or path.startswith("/api/")


def ingest_route(path: str) -> IngestRoute:
    """The project and endpoint a request's path names; 400 saying what is wrong."""
    match = ROUTE.match(path)
    if match is None:
        raise BadRequest(f"no ingest endpoint at {path[:200]}; SDKs send to"
                         " /api/<project_id>/envelope/")
    project = match["project"]
    if not (project.isascii() and project.isdigit()) or not 0 < int(project) <= MAX_PROJECT_ID:
        # Relay's detail (spec §1.3); its route would not match at all.
        raise BadRequest(f"bad project path parameter: {project[:40]!r} is not a project id",
                         [f"the DSN's last path segment: a number from 1 to {MAX_PROJECT_ID}"])
    return IngestRoute(int(project), match["endpoint"])


def check_method(method: str) -> None:
    if method not in ALLOWED_METHODS:
        raise MethodNotAllowed(f"method {method[:20]} is not allowed here; SDKs POST"
                               " envelopes (allowed: POST, OPTIONS)", ALLOWED_METHODS)


#: Browser SDKs post cross-origin (spec §1.3 CORS).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "x-sentry-auth, x-requested-with, x-forwarded-for, origin,"
    " referer, accept, authentication, authorization, content-encoding, content-type,"
    " transfer-encoding, baggage, sentry-trace",
    "Access-Control-Expose-Headers": "x-sentry-error, x-sentry-rate-limits, retry-after",
    "Access-Control-Max-Age": "3600",
}

#: What Relay's CORS layer answers on its store routes (relay-server/src/middlewares/cors.rs),
#: used for the security endpoint: a browser's Reporting API upload is a CORS request.
SECURITY_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "x-sentry-auth, x-requested-with, x-forwarded-for, origin,"
    " referer, accept, content-type, authentication, authorization, content-encoding,"
    " transfer-encoding",
    "Access-Control-Expose-Headers": "x-sentry-error, x-sentry-rate-limits, retry-after",
    "Access-Control-Max-Age": "3600",
}


def error_response(exc: CrashrayError, cors: Mapping[str, str] = CORS_HEADERS) -> Response:
    headers = {**cors, "X-Sentry-Error": exc.header_detail()}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
        headers["X-Sentry-Rate-Limits"] = exc.rate_limits_header
    if isinstance(exc, Overloaded):  # PostgreSQL down, the backlog or the disk full
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, UnsupportedMediaType):
        # Relay answers a bare 415 (security_report.rs); the reason is in X-Sentry-Error.
        return Response(status_code=exc.status, headers=headers)
    return Response(orjson.dumps(exc.body()), status_code=exc.status, headers=headers,
                    media_type="application/json")
