"""The SDK endpoints: ``POST /api/<project>/envelope/`` and ``/api/<project>/store/``, and the
browsers' security-report endpoint ``/api/<project>/security/`` (alias ``csp-report/``).

Accept fast, digest later: read the body within its limits, authenticate the DSN key from a
cache, parse the envelope framing, check quotas, hand the items off durably (one PostgreSQL
COPY per ``@serve.batch`` batch) and only then answer ``200 {"id": …}``. Normalization,
scrubbing, grouping and storage happen in the consumers.

Quotas (spec §5): a replica first refuses the categories its cache of earlier limits still
covers (no actor call); the rest of a batch's requests are checked with one call per
rate-limiter shard (``actors/rate_limit.py``). Refused items are never queued; they are
counted as ``rate_limited`` outcomes, which each replica sums up and hands off once a second.
A request with any refused category is answered 429 with ``Retry-After`` and
``X-Sentry-Rate-Limits``, even when its other items were accepted (as Relay does).

Security reports (CSP, and the legacy HPKP, Expect-CT, Expect-Staple) come from browsers with
the key in the query string (``?sentry_key=…&sentry_release=…&sentry_environment=…``). Each
report is converted to an event at the door (``events/security.py``) and handed off as a
``security`` item through the same auth, limits, quotas (category ``security``) and queue.
Answers as relay-server/src/endpoints/security_report.rs: 400 for an unparsable Content-Type,
415 with an empty body for one that is not a report, 413 over ``CRASHRAY_MAX_EVENT_BYTES``
(Relay's body limit there is max_event_size), and ``200`` with an empty body on success.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from actors.rate_limit import check_usages
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
    Forbidden,
    IngestError,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from events.quotas import (
    EVENT_CATEGORIES,
    OUTCOMES_ITEM_TYPE,
    LeaseBook,
    LimitCache,
    RateLimit,
    Usage,
    format_rate_limits,
    item_quantities,
    retry_after_s,
)
from events.security import (
    SECURITY_ITEM_TYPE,
    InvalidSecurityReport,
    is_security_media_type,
    parse_media_type,
    report_context,
    security_events,
    unsupported_media_type,
)
from storage.postgres import ProjectKey, connect, load_project_keys
from storage.queue import PostgresQueue, QueuedItem

log = logging.getLogger("crashray.ingest")

_ROUTE = re.compile(
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


def error_response(exc: IngestError, cors: Mapping[str, str] = CORS_HEADERS) -> Response:
    headers = {**cors, "X-Sentry-Error": exc.detail}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
        headers["X-Sentry-Rate-Limits"] = exc.rate_limits_header
    if isinstance(exc, UnsupportedMediaType):
        # Relay answers a bare 415 (security_report.rs); the reason is in X-Sentry-Error.
        return Response(status_code=exc.status, headers=headers)
    return Response(orjson.dumps(exc.body()), status_code=exc.status, headers=headers,
                    media_type="application/json")


#: Relay's 429 body (spec §5.1).
RATE_LIMITED_DETAIL = ("Sentry dropped data due to a quota or internal rate limit being"
                       " reached. This will not affect your application. See"
                       " https://docs.sentry.io/product/accounts/quotas/ for more information.")


def rate_limited(limits: Sequence[RateLimit]) -> RateLimited:
    return RateLimited(RATE_LIMITED_DETAIL, retry_after_s(limits), format_rate_limits(limits))


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
        match = _ROUTE.match(request.url.path)
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


def invalid_outcome(exc: IngestError, security: bool) -> tuple[str, str]:
    """(category, reason) of a refused request's ``invalid`` outcome, with Relay's reasons:
    too large, or unreadable (an envelope; a security report: its own reason)."""
    if exc.status == 413:
        return ("security" if security else "error"), "too_large"
    if not security:
        return "error", "invalid_envelope"
    return "security", exc.outcome_reason if isinstance(exc, InvalidSecurityReport) else "payload"


def item_categories(item: QueuedItem) -> frozenset[str]:
    return frozenset(c for c, _ in item_quantities(item.item_type, len(item.payload)))


def usage_of(items: Sequence[QueuedItem]) -> Usage | None:
    """What the items cost, per category; None when there are no items."""
    if not items:
        return None
    quantities: dict[str, int] = {}
    for item in items:
        for category, quantity in item_quantities(item.item_type, len(item.payload)):
            quantities[category] = quantities.get(category, 0) + quantity
    first = items[0]
    return Usage(first.organization_id, first.project_id, first.key_id, quantities)


def without_refused(items: Sequence[QueuedItem], limits: Sequence[RateLimit]
                    ) -> tuple[list[QueuedItem], list[QueuedItem]]:
    """(kept, refused): an item goes when any of its categories is limited, and an event's
    attachments go with a refused event (as Relay drops them: they would belong to
    nothing)."""
    refused_categories = {c for limit in limits for c in limit.categories}
    if refused_categories & EVENT_CATEGORIES and any(i.item_type == "event" for i in items):
        refused_categories |= {"attachment", "attachment_item"}
    kept: list[QueuedItem] = []
    refused: list[QueuedItem] = []
    for item in items:
        (refused if item_categories(item) & refused_categories else kept).append(item)
    return kept, refused


class OutcomeTally:
    """Refused items per (organization, project, key, hour, outcome, category, reason):
    ``rate_limited`` items, and ``invalid`` requests (unreadable or too large) whose key was
    known. Summed in memory and handed off as one ``outcomes`` queue item per project and
    flush (not one per request, so that a flood of refusals costs little). Lost if the
    replica dies before a flush: at most ``OUTCOME_FLUSH_INTERVAL_S`` of refusal counts,
    never an accepted event."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int, int, str, str, str, str], int] = {}

    def add(self, items: Sequence[QueuedItem], limits: Sequence[RateLimit]) -> None:
        for item in items:
            quantities = item_quantities(item.item_type, len(item.payload))
            categories = {c for c, _ in quantities}
            reason = next((limit.reason_code for limit in limits
                           if limit.categories & categories), "")
            for category, quantity in quantities:
                self.count((item.organization_id, item.project_id, item.key_id or 0),
                           item.received_at, "rate_limited", category, reason, quantity)

    def count(self, sender: tuple[int, int, int], at: dt.datetime, outcome: str,
              category: str, reason: str, quantity: int = 1) -> None:
        hour = at.replace(minute=0, second=0, microsecond=0).isoformat()
        key = (*sender, hour, outcome, category, reason)
        self.counts[key] = self.counts.get(key, 0) + quantity

    def take(self) -> list[QueuedItem]:
        """The tally as queue items (one per project), emptied."""
        counts, self.counts = self.counts, {}
        by_project: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for (org, project, key, hour, outcome, category, reason), quantity in counts.items():
            by_project.setdefault((org, project), []).append(
                {"key_id": key, "hour": hour, "category": category, "reason": reason,
                 "outcome": outcome, "quantity": quantity})
        now = dt.datetime.now(dt.UTC)
        return [QueuedItem(project_id=project, organization_id=org, key_id=None,
                           item_type=OUTCOMES_ITEM_TYPE, event_id=None, received_at=now,
                           payload=orjson.dumps(rows), meta={})
                for (org, project), rows in by_project.items()]


def _client_ip(request: Request, headers: Mapping[str, str]) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None


#: Serve waits this long for in-flight requests at shutdown; a hand-off takes milliseconds.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 5.0


#: Seconds between two hand-offs of a replica's refusal counts (``OutcomeTally``).
OUTCOME_FLUSH_INTERVAL_S = 1.0


@serve.deployment(name="ingest", ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
                  graceful_shutdown_wait_loop_s=0.5)
class IngestDeployment:
    def __init__(self, config: IngestConfig, batch_max_items: int, batch_wait_s: float,
                 rate_limiters: Sequence[Any] = ()) -> None:
        self._queue = PostgresQueue(config.postgres_url)
        self._handler = IngestHandler(config, self._queue)
        self._rate_limiters = list(rate_limiters)
        self._limits = LimitCache(config.limit_cache_s)
        self._leases = LeaseBook()
        self._tally = OutcomeTally()
        self._flusher: asyncio.Task[None] | None = None
        self._admit_batch.set_max_batch_size(batch_max_items)  # type: ignore[attr-defined]
        self._admit_batch.set_batch_wait_timeout_s(batch_wait_s)  # type: ignore[attr-defined]

    # Two batches may be in flight: one waits for the rate limiter or the hand-off while
    # the next one fills (the rate limiter still decides them one after the other).
    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.005, max_concurrent_batches=2)
    async def _admit_batch(self, requests: list[tuple[list[QueuedItem], Usage | None, bool]]
                           ) -> list[tuple[RateLimit, ...]]:
        """Check the quotas of the batch's requests not already admitted on a lease (one
        call per rate-limiter shard, also handing back unused leases), queue what passed,
        and return each request's limits. Two batches may be in flight: one waits for the
        rate limiter or the hand-off while the next fills."""
        usages = [None if leased else usage for _, usage, leased in requests]
        asked = [u for u in usages if u is not None and u.quantities]
        now = time.time()
        decisions = iter(await self._check(asked, now)
                         if asked and self._rate_limiters else [])
        accepted: list[QueuedItem] = []
        results: list[tuple[RateLimit, ...]] = []
        for (items, _, _), usage in zip(requests, usages, strict=True):
            limits: tuple[RateLimit, ...] = ()
            if usage is not None and usage.quantities and self._rate_limiters:
                decision = next(decisions)
                limits = decision.limits
                self._limits.add(usage.organization_id, limits, now)
                self._leases.add(decision.leases)
            kept, refused = without_refused(items, limits)
            self._tally.add(refused, limits)
            accepted.extend(kept)
            results.append(limits)
        if accepted:
            await asyncio.to_thread(self._queue.enqueue, accepted)
        return results

    async def _check(self, usages: list[Usage], now: float) -> list[Any]:
        """Ask the rate limiters, handing back ended leases; kept for later if it fails."""
        returns = self._leases.expired(now)
        try:
            return await check_usages(self._rate_limiters, usages, returns)
        except Exception:
            self._leases.give_back_later(returns)
            raise

    async def _return_leases(self, everything: bool = False) -> None:
        """Hand back the unused units of ended leases when no batch has done it (of all
        leases, at shutdown)."""
        returns = self._leases.expired(float("inf") if everything else time.time())
        if returns and self._rate_limiters:
            try:
                await check_usages(self._rate_limiters, [], returns)
            except Exception:
                self._leases.give_back_later(returns)
                log.warning("could not hand back %d lease units yet", len(returns),
                            exc_info=True)

    async def _flush_outcomes(self) -> None:
        while True:
            await asyncio.sleep(OUTCOME_FLUSH_INTERVAL_S)
            await self._hand_off_tally()
            await self._return_leases()

    async def _hand_off_tally(self) -> None:
        items = self._tally.take()
        if not items:
            return
        try:
            await asyncio.to_thread(self._queue.enqueue, items)
        except Exception:
            log.exception("could not hand off %d outcome counts; keeping them", len(items))
            for item in items:  # put them back for the next flush
                for row in orjson.loads(item.payload):
                    self._tally.count(
                        (item.organization_id, item.project_id, row["key_id"]),
                        dt.datetime.fromisoformat(row["hour"]), row["outcome"],
                        row["category"], row["reason"], row["quantity"])

    async def __call__(self, request: Request) -> Response:
        match = _ROUTE.match(request.url.path)
        security = match is not None and match["endpoint"] in SECURITY_ENDPOINTS
        cors = SECURITY_CORS_HEADERS if security else CORS_HEADERS
        if request.method == "OPTIONS":
            return Response(status_code=200, headers=cors)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_outcomes())
        try:
            if match is not None and security:
                items = await self._handler.accept_security(request, int(match["project"]))
                event_id = None
            else:
                items, event_id = await self._handler.accept(request)
            limits = await self._admit(items)
            if limits:
                raise rate_limited(limits)
        except IngestError as exc:
            if exc.sender is not None:
                category, reason = invalid_outcome(exc, security)
                self._tally.count(exc.sender, dt.datetime.now(dt.UTC), "invalid", category,
                                  reason)
            return error_response(exc, cors)
        except Exception:
            # acknowledged, so the SDK is told to try later; the cause is logged.
            log.exception("hand-off failed")
            return error_response(Overloaded("failed to queue envelope"), cors)
        if security:
            # Relay answers a security report with a bare 200 (PR #864: not 201, which
            # Chrome's Expect-CT tester refused), whatever number of reports it held.
            return Response(status_code=200, headers=cors)
        body = {"id": event_id} if event_id else {}
        return Response(orjson.dumps(body), status_code=200, headers=CORS_HEADERS,
                        media_type="application/json")

    async def _admit(self, items: list[QueuedItem]) -> tuple[RateLimit, ...]:
        """Queue what the quotas let through; the limits that refused the rest."""
        usage = usage_of(items)
        cached = self._limits.active(usage, time.time()) if usage is not None else []
        kept, refused = without_refused(items, cached)
        self._tally.add(refused, cached)
        if not kept:
            return tuple(cached)
        kept_usage = usage if not refused else usage_of(kept)
        leased = kept_usage is not None and self._leases.admit(kept_usage, time.time())
        return (*cached, *await self._admit_batch((kept, kept_usage, leased)))

    async def __del__(self) -> None:
        """At shutdown: hand off the refusal counts not flushed yet, and the leases."""
        await self._hand_off_tally()
        await self._return_leases(everything=True)
