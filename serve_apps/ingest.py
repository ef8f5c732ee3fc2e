"""The SDK endpoints: ``POST /api/<project>/envelope/`` and ``/api/<project>/store/``, and the
browsers' security-report endpoint ``/api/<project>/security/`` (alias ``csp-report/``).

Accept fast, digest later: read the body within its limits, authenticate the DSN key from a
cache, parse the envelope framing, check quotas, hand the items off durably (one PostgreSQL
COPY, or one Kafka produce awaited to the brokers' acknowledgement, per ``@serve.batch``
batch; storage/handoff.py) and only then answer ``200 {"id": …}``. Normalization,
scrubbing, grouping and storage happen in the consumers.

The stages, each in its module: ``ingest_request.py`` reads a request up to its items (body,
key, envelope or security reports, Relay's error answers), ``ingest_admission.py`` decides
what the quotas admit and counts the refusals, this module is the Serve deployment that
batches admissions and hand-offs. Every path outside ``/api`` (the dashboard's page and
files, ``/healthz``, ``/readyz``) is answered by ``serve_apps/web.py``: the deployment's route
prefix is ``/``, and the API's longer ``/api/0`` prefix keeps its own paths. Where the API
has no replicas of its own (one node: ``CRASHRAY_API_OWN_REPLICAS``), ``/api/0`` reaches this
deployment too and its app answers it (``ApiAnswer``).

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
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from actors.rate_limit import check_usages
from events.errors import (
    BadRequest,
    CrashrayError,
    Overloaded,
)
from events.quotas import (
    LeaseBook,
    LimitCache,
    RateLimit,
    Usage,
)
from serve_apps.background_api import BackgroundApi
from serve_apps.health import HealthConfig
from serve_apps.ingest_admission import (
    OutcomeTally,
    invalid_outcome,
    rate_limited,
    usage_of,
    without_refused,
)
from serve_apps.ingest_handoff import hand_off
from serve_apps.ingest_http import (
    CORS_HEADERS,
    ROUTE,
    SECURITY_CORS_HEADERS,
    SECURITY_ENDPOINTS,
    check_method,
    error_response,
    ingest_route,
    is_api_path,
    is_ingest_path,
)
from serve_apps.ingest_metrics import endpoint_of, record_answer
from serve_apps.ingest_request import IngestConfig, IngestHandler
from serve_apps.web import DashboardPages
from storage.archive import EnvelopeArchive
from storage.handoff import handoff_from_settings
from storage.queue import QueuedItem

if TYPE_CHECKING:
    from serve_apps.api.config import ApiConfig

log = logging.getLogger("crashray.ingest")


#: Serve waits this long for in-flight requests at shutdown; a hand-off takes milliseconds.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 5.0


#: Seconds between two hand-offs of a replica's refusal counts (``OutcomeTally``).
OUTCOME_FLUSH_INTERVAL_S = 1.0


@serve.deployment(name="ingest", ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
                  graceful_shutdown_wait_loop_s=0.5)
class IngestDeployment:
    def __init__(self, config: IngestConfig, batch_max_items: int, batch_wait_s: float,
                 rate_limiters: Sequence[Any] = (), health: HealthConfig | None = None,
                 api: ApiConfig | None = None) -> None:
        self._queue = handoff_from_settings(config.postgres_url, config.kafka, config.spool)
        self._handler = IngestHandler(config, self._queue)
        self._rate_limiters = list(rate_limiters)
        #: How long a batch waits for the rate limiters (which write PostgreSQL): as long as
        #: for the hand-off, so a PostgreSQL that hangs holds no request past it.
        self._check_timeout_s = config.postgres_wait_s
        self._limits = LimitCache(config.limit_cache_s)
        self._leases = LeaseBook()
        self._tally = OutcomeTally()
        self._flusher: asyncio.Task[None] | None = None
        self._archive = EnvelopeArchive(config.archive) if config.archive else None
        #: The dashboard's page and files and the health probes: every path outside /api.
        self._pages = DashboardPages(health)
        #: The Web API (/api/0) when it has no replicas of its own (one node:
        #: ``CRASHRAY_API_OWN_REPLICAS``), built in a thread while the replica already
        #: serves (serve_apps/background_api.py).
        self._api = None if api is None else BackgroundApi(api)
        self._admit_batch.set_max_batch_size(batch_max_items)  # type: ignore[attr-defined]
        self._admit_batch.set_batch_wait_timeout_s(batch_wait_s)  # type: ignore[attr-defined]

    # Two batches may be in flight: one waits for the rate limiter or the hand-off while
    # the next one fills (the rate limiter still decides them one after the other).
    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.005, max_concurrent_batches=2)
    async def _admit_batch(self, requests: list[tuple[list[QueuedItem], Usage | None, bool]]
                           ) -> list[tuple[RateLimit, ...] | Exception]:
        """Check the quotas of the batch's requests not already admitted on a lease (one
        call per rate-limiter shard, also handing back unused leases), queue what passed,
        and return each request's limits, or the error that kept its items out of the queue
        (serve_apps/ingest_handoff.py: one request's bad data never fails the others). Two
        batches may be in flight: one waits for the rate limiter or the hand-off while the
        next fills."""
        usages = [None if leased else usage for _, usage, leased in requests]
        asked = [u for u in usages if u is not None and u.quantities]
        now = time.time()
        decisions = iter(await self._check(asked, now)
                         if asked and self._rate_limiters else [])
        accepted: list[list[QueuedItem]] = []
        results: list[tuple[RateLimit, ...] | Exception] = []
        for (items, _, _), usage in zip(requests, usages, strict=True):
            limits: tuple[RateLimit, ...] = ()
            if usage is not None and usage.quantities and self._rate_limiters:
                decision = next(decisions)
                limits = decision.limits
                self._limits.add(usage.organization_id, limits, now)
                self._leases.add(decision.leases)
            kept, refused = without_refused(items, limits)
            self._tally.add(refused, limits)
            accepted.append(kept)
            results.append(limits)
        if any(accepted):
            failures = await asyncio.to_thread(hand_off, accepted, self._queue.enqueue)
            for index, failure in enumerate(failures):
                if failure is not None:
                    results[index] = self._refused_hand_off(failure, accepted[index])
                elif self._archive is not None:
                    self._archive.add(accepted[index])
        return results

    @staticmethod
    def _refused_hand_off(failure: Exception, items: list[QueuedItem]) -> Exception:
        """The error a request whose items did not reach the queue is answered with: its
        own data's refusal (400, counted as an invalid outcome of its project), or the
        hand-off's unavailability (503 with ``Retry-After``; nothing was accepted)."""
        if isinstance(failure, BadRequest):
            # The door check (events/storable.py) should have refused it: say so in the log.
            log.warning("the queue refused a request's items: %s %s", failure.detail,
                        failure.causes)
            first = items[0]
            failure.sender = (first.organization_id, first.project_id, first.key_id or 0)
        return failure

    async def _check(self, usages: list[Usage], now: float) -> list[Any]:
        """Ask the rate limiters, handing back ended leases; kept for later if it fails."""
        returns = self._leases.expired(now)
        try:
            return await asyncio.wait_for(check_usages(self._rate_limiters, usages, returns),
                                          self._check_timeout_s)
        except TimeoutError as exc:
            # Each batch waits again: refusing at once for a while after a timeout was tried
            # (bench/RESULTS.md, 2026-12-07) and refused 532 of 751 envelopes during a 10 s
            # freeze, against 12 of 256 without it. The call may still run: its lease
            # returns are not handed back again (a second return would count them off
            # twice); unreturned, they only hold their units until the lease ends, so
            # quotas err on the side of refusing.
            raise Overloaded("quotas cannot be checked now", [
                f"the rate limiters did not answer within {self._check_timeout_s} s"
                " (CRASHRAY_HANDOFF_TIMEOUT_S)"]) from exc
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
            if self._archive is not None:
                await self._archive_if_due()

    async def _archive_if_due(self, everything: bool = False) -> None:
        """Write the archive's buffer when due (all of it at shutdown); a failure is
        logged by the archive and never reaches a request."""
        assert self._archive is not None
        try:
            await asyncio.to_thread(self._archive.flush if everything
                                    else self._archive.flush_if_due)
        except Exception:
            log.exception("the archive could not be written")

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
        if self._api is not None and is_api_path(request.url.path):
            return await self._api.answer()
        if not is_ingest_path(request.url.path):
            return await self._pages.answer(request)
        match = ROUTE.match(request.url.path)
        security = match is not None and match["endpoint"] in SECURITY_ENDPOINTS
        cors = SECURITY_CORS_HEADERS if security else CORS_HEADERS
        if request.method == "OPTIONS":
            return Response(status_code=200, headers=cors)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_outcomes())
        started = time.perf_counter()
        endpoint = endpoint_of(request.url.path)
        items: list[QueuedItem] = []
        limits: tuple[RateLimit, ...] = ()
        try:
            check_method(request.method)
            route = ingest_route(request.url.path)
            if route.security:
                items = await self._handler.accept_security(request, route.project_id)
                event_id = None
            else:
                items, event_id = await self._handler.accept(request, route)
            limits = await self._admit(items)
            if limits:
                raise rate_limited(limits)
        except CrashrayError as exc:
            record_answer(endpoint, started, items, limits, exc)
            if exc.sender is not None:
                category, reason = invalid_outcome(exc, security)
                self._tally.count(exc.sender, dt.datetime.now(dt.UTC), "invalid", category,
                                  reason)
            return error_response(exc, cors)
        except Exception:
            # acknowledged, so the SDK is told to try later; the cause is logged.
            log.exception("hand-off failed")
            overloaded = Overloaded("failed to queue envelope")
            record_answer(endpoint, started, items, (), overloaded)
            return error_response(overloaded, cors)
        record_answer(endpoint, started, items)
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
        cached += self._handler.backlog_limits(usage)
        kept, refused = without_refused(items, cached)
        self._tally.add(refused, cached)
        if not kept:
            return tuple(cached)
        kept_usage = usage if not refused else usage_of(kept)
        leased = kept_usage is not None and self._leases.admit(kept_usage, time.time())
        admitted = await self._admit_batch((kept, kept_usage, leased))
        if isinstance(admitted, Exception):
            raise admitted
        return (*cached, *admitted)

    async def __del__(self) -> None:
        """At shutdown: hand off the refusal counts not flushed yet, and the leases; write
        the archive's buffer; close the hand-off (Kafka: deliver what it buffers)."""
        await self._hand_off_tally()
        await asyncio.to_thread(self._queue.close)
        await self._return_leases(everything=True)
        if self._archive is not None:
            await self._archive_if_due(everything=True)
