"""Reading one SDK or browser request at the ingest edge, up to the items it hands off: the
body within its limits, the DSN key (from a cache of PostgreSQL's keys), the envelope or the
security reports, and the answers Relay gives when something is wrong. serve_apps/ingest.py
(the Serve deployment) admits the items against the quotas and hands them off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from events.auth import SentryAuth, auth_from_dsn, auth_from_request, find_request_auth
from events.body import BodyDecoder, BodyLimits
from events.envelope import (
    Envelope,
    EnvelopeItem,
    EnvelopeLimits,
    normalize_event_id,
    parse_envelope,
    parse_store_body,
)
from events.errors import (
    BadRequest,
    CrashrayError,
    Forbidden,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from events.security import (
    SECURITY_ITEM_TYPE,
    is_security_media_type,
    parse_media_type,
    report_context,
    security_events,
    unsupported_media_type,
)
from storage.keys import ProjectKey, load_project_keys
from storage.postgres import connect
from storage.queue import PostgresQueue, QueuedItem

log = logging.getLogger("crashray.ingest")

ROUTE = re.compile(
    r"^/api/(?P<project>\d+)/(?P<endpoint>envelope|store|security|csp-report)/*$")
#: Relay routes both to the security-report handler (relay-server/src/endpoints/mod.rs).
SECURITY_ENDPOINTS = frozenset({"security", "csp-report"})

#: Item types ingest hands off. Others are skipped, as Relay skips unknown items (spec §2.4).
HANDED_OFF_TYPES = frozenset({"event", "transaction", "attachment", "session", "sessions",
                              "client_report", "user_report", "feedback", "check_in"})

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



@dataclass(frozen=True)
class IngestConfig:
    postgres_url: str
    body_limits: BodyLimits
    envelope_limits: EnvelopeLimits
    key_cache_refresh_s: float
    key_cache_miss_reload_s: float
    max_queued_items: int
    #: Where the data lives, and the free space below which ingest refuses (503).
    data_dir: Path | None = None
    min_free_disk_bytes: int = 0
    #: Seconds a replica refuses from a remembered limit before asking the rate limiter.
    limit_cache_s: float = 5.0


class KeyCache:
    """DSN keys by public key, reloaded from PostgreSQL every ``refresh_s`` seconds and, at
    most every ``miss_reload_s``, when an unknown key shows up."""

    def __init__(self, url: str, refresh_s: float, miss_reload_s: float) -> None:
        self._url, self._refresh_s, self._miss_reload_s = url, refresh_s, miss_reload_s
        self._keys: dict[str, ProjectKey] = {}
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()

    async def get(self, public_key: str) -> ProjectKey | None:
        now = time.monotonic()
        if now - self._loaded_at > self._refresh_s or (
                public_key not in self._keys and now - self._loaded_at > self._miss_reload_s):
            await self._reload()
        return self._keys.get(public_key)

    async def _reload(self) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < self._miss_reload_s:
                return  # another request reloaded while this one waited
            self._keys = await asyncio.to_thread(self._load)
            self._loaded_at = time.monotonic()

    def _load(self) -> dict[str, ProjectKey]:
        with connect(self._url) as conn:
            return load_project_keys(conn)


def authorize(key: ProjectKey | None, auth: SentryAuth, project_id: int) -> ProjectKey:
    """The key, if it may send to ``project_id``; else Relay's 403 (spec §1.3)."""
    if key is None or not key.is_active or not key.project_active or key.project_id != project_id:
        raise Forbidden("event submission rejected with_reason: ProjectId",
                        [f"DSN as understood: key {auth.public_key!r}, project {project_id}"])
    return key


def error_response(exc: CrashrayError, cors: Mapping[str, str] = CORS_HEADERS) -> Response:
    headers = {**cors, "X-Sentry-Error": exc.detail}
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


#: Relay's 429 body (spec §5.1).


#: Items whose envelope must carry an event id (spec §2.2); Relay makes one when it is
#: missing, and so does ingest, so that a re-delivered item keeps its identity.
ITEMS_WITH_EVENT_ID = frozenset({"event", "transaction", "attachment", "user_report"})


def envelope_event_id(envelope: Envelope) -> str | None:
    """The envelope's event id, generated once at accept time when an item needs one."""
    event_id = envelope.event_id
    if event_id is None and any(i.type in ITEMS_WITH_EVENT_ID for i in envelope.items):
        event_id = uuid.uuid4().hex
    return event_id


def queued_items(envelope: Envelope, event_id: str | None, key: ProjectKey,
                 received_at: dt.datetime, meta: Mapping[str, Any]) -> list[QueuedItem]:
    envelope_meta = {**meta, "sent_at": envelope.headers.get("sent_at")}
    return [QueuedItem(project_id=key.project_id, organization_id=key.organization_id,
                       key_id=key.id, item_type=item.type, event_id=event_id,
                       received_at=received_at, payload=item.payload,
                       meta={**envelope_meta, "item_headers": dict(item.headers)})
            for item in envelope.items if item.type in HANDED_OFF_TYPES]


class IngestHandler:
    """Request handling without Serve; the deployment adds batching and the queue."""

    def __init__(self, config: IngestConfig, queue: PostgresQueue) -> None:
        self.config = config
        self.queue = queue
        self.keys = KeyCache(config.postgres_url, config.key_cache_refresh_s,
                             config.key_cache_miss_reload_s)
        self._backlog = 0
        self._backlog_checked_at = -1e9
        self._free_disk = -1

    async def read_body(self, request: Request, limits: BodyLimits | None = None) -> bytes:
        decoder = BodyDecoder(request.headers.get("content-encoding"),
                              limits or self.config.body_limits)
        async for chunk in request.stream():
            if chunk:
                decoder.feed(chunk)
        return decoder.finish()

    async def accept(self, request: Request) -> tuple[list[QueuedItem], str | None]:
        """Everything up to the hand-off: the items to queue and the event id to answer."""
        match = ROUTE.match(request.url.path)
        if match is None:
            raise BadRequest(f"no ingest endpoint at {request.url.path}; SDKs send to"
                             " /api/<project_id>/envelope/")
        project_id = int(match["project"])
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = find_request_auth(headers, request.url.query)
        sender = None
        if auth is not None:
            # Refuse unknown keys before reading (and decompressing) up to 100 MB for them.
            known = authorize(await self.keys.get(auth.public_key), auth, project_id)
            sender = (known.organization_id, known.project_id, known.id)
        try:
            body = await self.read_body(request)
            if match["endpoint"] == "store" and "x-sentry-envelope" not in headers.get(
                    "content-type", ""):
                envelope = self._store_envelope(body)
            else:
                envelope = parse_envelope(body, self.config.envelope_limits)
        except (BadRequest, PayloadTooLarge) as exc:
            exc.sender = sender  # counted as an invalid outcome of that project
            raise
        auth = self._envelope_auth(auth, envelope)
        key = authorize(await self.keys.get(auth.public_key), auth, project_id)
        await self._check_backlog()
        meta = {"client_ip": _client_ip(request, headers),
                "client": auth.client or headers.get("user-agent")}
        received_at = dt.datetime.now(dt.UTC)
        event_id = envelope_event_id(envelope)
        return queued_items(envelope, event_id, key, received_at, meta), event_id

    async def accept_security(self, request: Request, project_id: int) -> list[QueuedItem]:
        """A security-report request up to the hand-off: one ``security`` item per report
        (none for a Reporting API batch without CSP violations). Checks in Relay's order
        (security_report.rs extractors, then handle_envelope), except that an unknown key is
        refused before the body is read, as for envelopes."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        media_type = parse_media_type(headers.get("content-type"))
        auth = auth_from_request(headers, request.url.query)
        if not is_security_media_type(media_type):
            raise unsupported_media_type(media_type)
        key = authorize(await self.keys.get(auth.public_key), auth, project_id)
        try:
            body = await self.read_body(request, security_body_limits(self.config))
            events = security_events(body, report_context(request.url.query, headers))
        except (BadRequest, PayloadTooLarge) as exc:
            exc.sender = (key.organization_id, key.project_id, key.id)
            raise
        await self._check_backlog()
        received_at = dt.datetime.now(dt.UTC)
        meta: dict[str, Any] = {"client_ip": _client_ip(request, headers), "sent_at": None,
                                "item_headers": {},
                                "client": auth.client or headers.get("user-agent")}
        return [QueuedItem(project_id=key.project_id, organization_id=key.organization_id,
                           key_id=key.id, item_type=SECURITY_ITEM_TYPE,
                           event_id=event["event_id"], received_at=received_at,
                           payload=orjson.dumps(event), meta=meta) for event in events]

    def _store_envelope(self, body: bytes) -> Envelope:
        """A legacy ``/store/`` body as a one-item envelope; its event id is answered, and
        generated when the event has none (spec §3.4)."""
        event_json = parse_store_body(body, self.config.envelope_limits)
        event = orjson.loads(event_json)
        event_id = normalize_event_id(event.get("event_id")) or uuid.uuid4().hex
        return Envelope(headers={"event_id": event_id},
                        items=(EnvelopeItem("event", {"type": "event"}, event_json),))

    @staticmethod
    def _envelope_auth(auth: SentryAuth | None, envelope: Envelope) -> SentryAuth:
        dsn = envelope.headers.get("dsn")
        dsn_auth = auth_from_dsn(dsn) if isinstance(dsn, str) else None
        if auth is None and dsn_auth is None:
            raise Unauthorized("missing authorization information")
        if auth is not None and dsn_auth is not None and dsn_auth.public_key != auth.public_key:
            raise Unauthorized("bad envelope authentication header",
                               ["the envelope dsn names another key than the request"])
        result = auth or dsn_auth
        assert result is not None
        return result

    async def _check_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_checked_at > 1.0:
            self._backlog_checked_at = now
            self._backlog = await asyncio.to_thread(self.queue.backlog_upper_bound)
            if self.config.data_dir is not None and self.config.min_free_disk_bytes:
                self._free_disk = shutil.disk_usage(self.config.data_dir).free
        if self._backlog >= self.config.max_queued_items:
            raise Overloaded("the service is overloaded",
                             [f"{self._backlog} items wait for processing, more than"
                              f" CRASHRAY_MAX_QUEUED_ITEMS ({self.config.max_queued_items})"])
        if 0 <= self._free_disk < self.config.min_free_disk_bytes:
            raise Overloaded("the service is overloaded",
                             [f"{self._free_disk} bytes free on the data disk, less than"
                              " CRASHRAY_MIN_FREE_DISK_BYTES"
                              f" ({self.config.min_free_disk_bytes})"])


def security_body_limits(config: IngestConfig) -> BodyLimits:
    """Relay limits the security endpoint's body to max_event_size (security_report.rs)."""
    return BodyLimits(
        max_request_bytes=config.body_limits.max_request_bytes,
        max_decompressed_bytes=config.envelope_limits.max_event_item_bytes,
        request_setting=config.body_limits.request_setting,
        decompressed_setting=EnvelopeLimits.SETTINGS["max_event_item_bytes"])


def _client_ip(request: Request, headers: Mapping[str, str]) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None
