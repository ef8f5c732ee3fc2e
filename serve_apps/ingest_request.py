"""Reading one SDK or browser request at the ingest edge, up to the items it hands off: the
DSN key (from a cache of PostgreSQL's keys), authorized before the body is read
(serve_apps/ingest_body.py), the body within its limits, the envelope or the security
reports, the client's address, and the door check of everything the queue will store
(events/storable.py). serve_apps/ingest_http.py has the routes and Relay's error answers;
serve_apps/ingest.py (the Serve deployment) admits the items against the quotas and hands
them off (serve_apps/ingest_handoff.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request

from events.auth import SentryAuth, auth_from_dsn, auth_from_request, find_request_auth
from events.body import BodyLimits
from events.envelope import (
    Envelope,
    EnvelopeItem,
    EnvelopeLimits,
    normalize_event_id,
    normalize_sent_at,
    parse_envelope,
    parse_store_body,
)
from events.errors import (
    BadRequest,
    Forbidden,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
)
from events.proxies import client_address
from events.quotas import BacklogCaps, RateLimit, Usage, org_backlog_limit
from events.security import (
    SECURITY_ITEM_TYPE,
    is_security_media_type,
    parse_media_type,
    report_context,
    security_events,
    unsupported_media_type,
)
from events.storable import check_storable, check_storable_fields
from serve_apps.ingest_body import missing_credentials, read_body, read_envelope_dsn
from serve_apps.ingest_http import IngestRoute
from storage.archive import ArchiveSettings
from storage.handoff import Handoff
from storage.kafka import KafkaSettings
from storage.keys import ProjectKey, load_project_keys
from storage.postgres import connect
from storage.queue import OrganizationBacklog, QueuedItem
from storage.spool import SpoolSettings

log = logging.getLogger("crashray.ingest")

#: Item types ingest hands off. Others are skipped, as Relay skips unknown items (spec §2.4).
HANDED_OFF_TYPES = frozenset({"event", "transaction", "attachment", "session", "sessions",
                              "client_report", "user_report", "feedback", "check_in"})

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
    #: Bytes of an envelope read before its key is known (serve_apps/ingest_body.py).
    max_unauthenticated_body_bytes: int = 64 * 1024
    #: Proxies whose X-Forwarded-For entries are believed (events/proxies.py).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    #: What one organization may have queued before its requests answer 429 (0: no cap).
    backlog_caps: BacklogCaps = field(default_factory=lambda: BacklogCaps(0, 0))
    #: The raw archive of accepted items (storage/archive.py); None: none.
    archive: ArchiveSettings | None = None
    #: The Kafka hand-off (storage/kafka.py); None: the PostgreSQL queue.
    kafka: KafkaSettings | None = None
    #: The PostgreSQL queue's time limit and spool (storage/spool.py); None: no limit.
    spool: SpoolSettings | None = None

    @property
    def postgres_wait_s(self) -> float | None:
        """How long a request waits for PostgreSQL at any one step (the hand-off, the DSN
        keys, the rate limiters): ``CRASHRAY_HANDOFF_TIMEOUT_S``; None: no limit."""
        return self.spool.timeout_s if self.spool else None


class KeyCache:
    """DSN keys by public key, reloaded from PostgreSQL every ``refresh_s`` seconds and, at
    most every ``miss_reload_s``, when an unknown key shows up.

    A known key is answered from the cache at once while the reload runs beside the
    request, so a PostgreSQL that hangs never holds requests for known keys (they reach the
    hand-off, which answers within its own bound: storage/spool.py). An unknown key waits
    for the reload at most ``load_timeout_s``, then is answered 503 (``Overloaded``): it
    may be a new project's, which a refusal would make its SDK drop."""

    def __init__(self, url: str, refresh_s: float, miss_reload_s: float,
                 load_timeout_s: float | None = None) -> None:
        self._url, self._refresh_s, self._miss_reload_s = url, refresh_s, miss_reload_s
        self._load_timeout_s = load_timeout_s
        self._keys: dict[str, ProjectKey] = {}
        self._loaded_at = -1e9
        self._tried_at = -1e9
        self._loading: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    async def get(self, public_key: str) -> ProjectKey | None:
        now = time.monotonic()
        known = self._keys.get(public_key)
        if known is not None:
            if now - self._loaded_at > self._refresh_s:
                self._start_reload(now, self._refresh_s)
            return known
        if now - self._loaded_at > self._miss_reload_s:
            loading = self._start_reload(now, self._miss_reload_s)
            if loading is not None:
                await self._wait(loading, public_key)
            if public_key not in self._keys and self._failure is not None:
                # Unknown because PostgreSQL could not be asked, not because it said so.
                raise Overloaded("the DSN key cannot be checked now", [
                    f"PostgreSQL: {type(self._failure).__name__}: {self._failure}"])
        return self._keys.get(public_key)

    def _start_reload(self, now: float, every_s: float) -> asyncio.Task[None] | None:
        """The reload under way, or a new one unless one was tried within ``every_s``."""
        if self._loading is None and now - self._tried_at > every_s:
            self._tried_at = now
            self._loading = asyncio.get_running_loop().create_task(self._reload())
        return self._loading

    async def _reload(self) -> None:
        """Reload; a failure keeps the keys as they were (logged, and said to a request
        waiting for an unknown key)."""
        try:
            self._keys = await asyncio.to_thread(self._load)
            self._loaded_at = time.monotonic()
            self._failure = None
        except Exception as exc:
            # Often nobody awaits this reload (a known key was answered from the cache):
            # its failure is logged here and said to the next request for an unknown key.
            log.warning("the DSN keys could not be reloaded: %s: %s", type(exc).__name__, exc)
            self._failure = exc
        finally:
            self._loading = None

    async def _wait(self, loading: asyncio.Task[None], public_key: str) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(loading), self._load_timeout_s)
        except TimeoutError as exc:
            raise Overloaded("the DSN key cannot be checked now", [
                f"PostgreSQL did not answer within {self._load_timeout_s} s"
                f" (CRASHRAY_HANDOFF_TIMEOUT_S) for key {public_key!r}"]) from exc

    def _load(self) -> dict[str, ProjectKey]:
        with connect(self._url) as conn:
            return load_project_keys(conn)


def authorize(key: ProjectKey | None, auth: SentryAuth, project_id: int) -> ProjectKey:
    """The key, if it may send to ``project_id``; else Relay's 403 (spec §1.3)."""
    if key is None or not key.is_active or not key.project_active or key.project_id != project_id:
        raise Forbidden("event submission rejected with_reason: ProjectId",
                        [f"DSN as understood: key {auth.public_key!r}, project {project_id}"])
    return key


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
    """The items to hand off, with what processing needs to know of their envelope.
    Everything that goes into the queue's metadata passes the door check first
    (events/storable.py): one value the queue refuses would fail its whole batch."""
    check_client(meta.get("client"))
    sent_at = envelope.headers.get("sent_at")
    check_storable(sent_at, 'envelope header "sent_at"')
    handed_off = [(index, item) for index, item in enumerate(envelope.items, start=1)
                  if item.type in HANDED_OFF_TYPES]
    for index, item in handed_off:
        check_storable_fields(item.headers, f"envelope item {index} header")
    envelope_meta = {**meta, "sent_at": normalize_sent_at(sent_at)}
    return [QueuedItem(project_id=key.project_id, organization_id=key.organization_id,
                       key_id=key.id, item_type=item.type, event_id=event_id,
                       received_at=received_at, payload=item.payload,
                       meta={**envelope_meta, "item_headers": dict(item.headers)})
            for _, item in handed_off]


def check_client(client: object) -> None:
    check_storable(client, "client name (sentry_client or User-Agent)")


class IngestHandler:
    """Request handling without Serve; the deployment adds batching and the hand-off
    (``queue``: the PostgreSQL queue or Kafka, storage/handoff.py)."""

    def __init__(self, config: IngestConfig, queue: Handoff) -> None:
        self.config = config
        self.queue = queue
        self.keys = KeyCache(config.postgres_url, config.key_cache_refresh_s,
                             config.key_cache_miss_reload_s, config.postgres_wait_s)
        self._backlog = 0
        self._backlog_checked_at = -1e9
        self._free_disk = -1
        self._org_backlogs: dict[int, OrganizationBacklog] = {}

    async def accept(self, request: Request, route: IngestRoute
                     ) -> tuple[list[QueuedItem], str | None]:
        """Everything up to the hand-off: the items to queue and the event id to answer."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = find_request_auth(headers, request.url.query)
        store_body = route.endpoint == "store" and "x-sentry-envelope" not in headers.get(
            "content-type", "")
        key, body = await self._authorized_body(request, auth, route, store_body)
        try:
            if store_body:
                envelope = self._store_envelope(body)
            else:
                envelope = parse_envelope(body, self.config.envelope_limits)
        except (BadRequest, PayloadTooLarge) as exc:
            exc.sender = _sender(key)  # counted as an invalid outcome of that project
            raise
        auth = self._envelope_auth(auth, envelope.headers)
        key = authorize(await self.keys.get(auth.public_key), auth, route.project_id)
        await self._check_backlog()
        meta = {"client_ip": client_ip(request, self.config.trusted_proxies),
                "client": auth.client or headers.get("user-agent")}
        received_at = dt.datetime.now(dt.UTC)
        event_id = envelope_event_id(envelope)
        try:
            return queued_items(envelope, event_id, key, received_at, meta), event_id
        except BadRequest as exc:
            exc.sender = _sender(key)
            raise

    async def _authorized_body(self, request: Request, auth: SentryAuth | None,
                               route: IngestRoute, store_body: bool
                               ) -> tuple[ProjectKey, bytes]:
        """The sender's key, authorized before its body is read, and then the body
        (serve_apps/ingest_body.py): an unknown key costs no body, and an envelope naming
        its key only inside costs its first line."""
        chunks = request.stream()
        encoding = request.headers.get("content-encoding")
        held: tuple[bytes, ...] = ()
        if auth is None:
            if store_body:
                raise missing_credentials("a /store/ body carries no credentials of its own")
            start = await read_envelope_dsn(chunks, encoding,
                                            self.config.max_unauthenticated_body_bytes)
            auth, held = self._envelope_auth(None, start.headers), start.held
        key = authorize(await self.keys.get(auth.public_key), auth, route.project_id)
        try:
            return key, await read_body(chunks, encoding, self.config.body_limits, held)
        except (BadRequest, PayloadTooLarge) as exc:
            exc.sender = _sender(key)
            raise

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
        client = auth.client or headers.get("user-agent")
        try:
            check_client(client)
            body = await read_body(request.stream(), headers.get("content-encoding"),
                                   security_body_limits(self.config))
            events = security_events(body, report_context(request.url.query, headers))
        except (BadRequest, PayloadTooLarge) as exc:
            exc.sender = _sender(key)
            raise
        await self._check_backlog()
        received_at = dt.datetime.now(dt.UTC)
        meta: dict[str, Any] = {"client_ip": client_ip(request, self.config.trusted_proxies),
                                "sent_at": None, "item_headers": {}, "client": client}
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
    def _envelope_auth(auth: SentryAuth | None, headers: Mapping[str, Any]) -> SentryAuth:
        dsn = headers.get("dsn")
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
            if self.config.backlog_caps.max_items or self.config.backlog_caps.max_bytes:
                self._org_backlogs = await asyncio.to_thread(self.queue.queued_per_organization)
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

    def backlog_limits(self, usage: Usage | None) -> list[RateLimit]:
        """The refusal of ``usage`` while its organization is over a backlog cap, as of the
        last check (at most a second old, taken by ``_check_backlog`` in ``accept``)."""
        queued = self._org_backlogs.get(usage.organization_id) if usage else None
        limit = None if queued is None or usage is None else org_backlog_limit(
            usage, queued.items, queued.bytes, self.config.backlog_caps)
        return [] if limit is None else [limit]


def security_body_limits(config: IngestConfig) -> BodyLimits:
    """Relay limits the security endpoint's body to max_event_size (security_report.rs)."""
    return BodyLimits(
        max_request_bytes=config.body_limits.max_request_bytes,
        max_decompressed_bytes=config.envelope_limits.max_event_item_bytes,
        request_setting=config.body_limits.request_setting,
        decompressed_setting=EnvelopeLimits.SETTINGS["max_event_item_bytes"])


def client_ip(request: Request, trusted: Sequence[str]) -> str | None:
    """The client's address: the peer, or behind trusted proxies the address they saw
    (events/proxies.py, ``CRASHRAY_TRUSTED_PROXIES``; Serve's HAProxy appends it); None
    when that is no IP address (a proxy's "unknown"), which Relay would not take."""
    peer = request.client.host if request.client else ""
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    address = client_address(peer, forwarded, trusted)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def _sender(key: ProjectKey) -> tuple[int, int, int]:
    return key.organization_id, key.project_id, key.id
