"""How data is flowing through Crashray, for the people who run it (Crashray's own
endpoints; Sentry has none of these). The operator page (dashboards/static/operator.js)
polls them.

    GET  /api/0/organizations/{org}/dead-letters/         org:admin  counted per project
                                                                     and item type
    GET  /api/0/organizations/{org}/dead-letters/items/   org:admin  the newest ones, one
                                                                     by one (?limit=)
    POST /api/0/organizations/{org}/dead-letters/replay/  org:admin  {"ids": [..]} or
    POST /api/0/organizations/{org}/dead-letters/drop/    org:admin  {"all": true}
    GET  /api/0/organizations/{org}/operations/           org:admin  the organization's
                                                                     figures
    GET  /api/0/operations/                               instance   the instance's figures:
                                                          admin      intake, queue, consumers,
                                                                     nodes, deployments, actors
    GET  /api/0/operations/dead-letters/                  instance admin  every organization's
    POST /api/0/operations/dead-letters/replay/           instance admin
    POST /api/0/operations/dead-letters/drop/             instance admin

Who sees what:

* an organization's **owners** (``org:admin``, and owners' tokens carrying it) see their
  organization's figures: what it has queued, its outcomes of the last hour, its dead
  letters, which they may replay or drop. Nothing here names another organization, and
  every dead-letter statement is scoped by the organization (``storage/queue.py``), so an
  id of another organization's dead letter is simply not found;
* **instance admins** (users made with ``crashray user create --superuser``, the existing
  ``users.is_superuser``; by login or by their user token, never an organization token)
  also see the instance: intake rates from every node's Prometheus endpoint, the queue's
  backlog and oldest age, consumers, Ray nodes, Serve deployments and actors, and every
  organization's dead letters. Anyone else gets 403 there (no tenant to hide: the path
  names none).

Dead letters are accepted items the consumers gave up on because they fail on their own
(never because storage was down); ``crashray dead-letters`` does the same from the shell
through the same storage functions. Answers hold counts, dates, ids and error text,
never the items themselves.

The instance figures are gathered at most once per ``CRASHRAY_OPERATOR_CACHE_S`` per
replica (every open operator page polls), each part bounded by
``CRASHRAY_OPERATOR_TIMEOUT_S``; a part that cannot be had (no Ray in this process, Ray's
actor table unreadable, a node's endpoint not answering) is reported as such, and
the rest is still answered.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator, Field

from cluster import cluster_state
from events.errors import BadRequest, Forbidden, NotFound
from events.stats import StatsQuery
from serve_apps.api.deps import AccessRule, Svc, _declared, caller, org_access
from serve_apps.api.shapes import Body, iso
from storage import ops_figures, queue, sizes
from storage.tenancy import Access, Caller

log = logging.getLogger("crashray.api.operations")

router = APIRouter(tags=["operations"])

#: Characters of a dead letter's error shown in a list (the whole error can be long).
ERROR_PREVIEW_CHARS: Final = 400


# --- access ------------------------------------------------------------------------------
@_declared(AccessRule("caller"))
def instance_admin(who: Annotated[Caller, Depends(caller)], svc: Svc) -> Caller:
    """The caller, when it is an instance admin (``users.is_superuser``); else 403."""
    with svc.pool.connection() as conn:
        admin = ops_figures.is_instance_admin(conn, who.user_id)
    if not admin:
        raise Forbidden("the instance's figures are for instance admins (a user made with"
                        " `crashray user create --superuser`); an organization's owners see"
                        " theirs at /api/0/organizations/{org}/operations/")
    return who


InstanceAdmin = Annotated[Caller, Depends(instance_admin)]
OrgOwner = Annotated[Access, Depends(org_access("org:admin"))]


# --- dead letters ------------------------------------------------------------------------
def _digits_to_int(value: Any) -> Any:
    """Ids are answered as strings (Sentry's habit); take them back as strings or numbers."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


class DeadLetterChoice(Body):
    """Which dead letters to replay or drop: ``ids`` (as the list answers them, strings,
    or numbers), or ``all`` of the scope."""

    ids: list[Annotated[int, BeforeValidator(_digits_to_int), Field(gt=0)]] | None = Field(
        default=None, max_length=10_000)
    all: bool = False

    def chosen(self) -> list[int] | None:
        if self.all and self.ids:
            raise BadRequest("give ids or all, not both")
        if not self.all and not self.ids:
            raise BadRequest("name the dead letters: ids (a list of dead letter ids) or"
                             " all: true")
        return None if self.all else list(self.ids or ())


def dead_letter_count_json(c: queue.DeadLetterCount) -> dict[str, Any]:
    return {"projectId": str(c.project_id), "project": c.project_slug,
            "itemType": c.item_type, "count": c.count,
            "firstFailed": iso(c.oldest_failed_at), "lastFailed": iso(c.newest_failed_at),
            "lastError": c.latest_error}


#: Terminal colour codes Ray's errors carry (``\x1b[36m``), and other control characters.
_CONTROL: Final = re.compile(r"\x1b\[[0-9;]*m|[\x00-\x08\x0b-\x1f\x7f]")


def dead_letter_json(d: queue.DeadLetter, organization: str | None = None
                     ) -> dict[str, Any]:
    error = " ".join(_CONTROL.sub("", d.error).split())
    if len(error) > ERROR_PREVIEW_CHARS:
        error = error[:ERROR_PREVIEW_CHARS - 1] + "…"
    found = {"id": str(d.id), "projectId": str(d.project_id), "project": d.project_slug,
             "itemType": d.item_type, "eventId": d.event_id, "attempts": d.attempts,
             "received": iso(d.received_at), "failed": iso(d.failed_at),
             "bytes": d.payload_bytes, "error": error}
    if organization is not None:
        found["organizationId"] = organization
    return found


def _acted(done: str, found: list[int], asked: list[int] | None) -> dict[str, Any]:
    """The answer of a replay or drop; 404 when none of the ids asked for was there (in
    this scope: another organization's ids are not found, never acted on)."""
    missing = sorted(set(asked or ()) - set(found))
    if missing and not found:
        raise NotFound(f"no dead letter {', '.join(map(str, missing))} here (list them at"
                       " dead-letters/items/)")
    return {done: [str(i) for i in found], "notFound": [str(i) for i in missing]}


@router.get("/organizations/{org}/dead-letters/")
def dead_letters(access: OrgOwner, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        counts = queue.dead_letter_counts(conn, access.organization_id,
                                          sorted(access.project_ids))
    return {"total": sum(c.count for c in counts),
            "groups": [dead_letter_count_json(c) for c in counts]}


@router.get("/organizations/{org}/dead-letters/items/")
def dead_letter_items(access: OrgOwner, svc: Svc,
                      limit: Annotated[int, Query(ge=1)] = 100) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        found = queue.dead_letters(conn, access.organization_id,
                                   min(limit, svc.config.max_page_size))
    return [dead_letter_json(d) for d in found]


@router.post("/organizations/{org}/dead-letters/replay/")
def replay_dead_letters(access: OrgOwner, svc: Svc, body: DeadLetterChoice
                        ) -> dict[str, Any]:
    ids = body.chosen()
    with svc.pool.connection() as conn:
        replayed = queue.replay_dead_letters(conn, access.organization_id, ids)
    return _acted("replayed", replayed, ids)


@router.post("/organizations/{org}/dead-letters/drop/")
def drop_dead_letters(access: OrgOwner, svc: Svc, body: DeadLetterChoice) -> dict[str, Any]:
    ids = body.chosen()
    with svc.pool.connection() as conn:
        dropped = queue.drop_dead_letters(conn, access.organization_id, ids)
    return _acted("dropped", dropped, ids)


@router.get("/operations/dead-letters/")
def instance_dead_letters(admin: InstanceAdmin, svc: Svc,
                          limit: Annotated[int, Query(ge=1)] = 100) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        found = queue.dead_letters(conn, None, min(limit, svc.config.max_page_size))
    return [dead_letter_json(d, str(d.organization_id)) for d in found]


@router.post("/operations/dead-letters/replay/")
def instance_replay(admin: InstanceAdmin, svc: Svc, body: DeadLetterChoice
                    ) -> dict[str, Any]:
    ids = body.chosen()
    with svc.pool.connection() as conn:
        replayed = queue.replay_dead_letters(conn, None, ids)
    return _acted("replayed", replayed, ids)


@router.post("/operations/dead-letters/drop/")
def instance_drop(admin: InstanceAdmin, svc: Svc, body: DeadLetterChoice) -> dict[str, Any]:
    ids = body.chosen()
    with svc.pool.connection() as conn:
        dropped = queue.drop_dead_letters(conn, None, ids)
    return _acted("dropped", dropped, ids)


# --- figures -----------------------------------------------------------------------------
class StorageFigures:
    """Sizes per table (PostgreSQL and ClickHouse) and what retention removes next
    (storage/sizes.py, the report ``crashray storage`` prints), instance-wide: for instance
    admins only. They count rows, so a replica reuses them for ``operator_storage_cache_s``;
    ``None`` when they cannot be read (the rest of the page still answers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (the services they were read through, when, the figures)
        self._last: tuple[Any, float, dict[str, Any] | None] | None = None

    def get(self, svc: Svc) -> dict[str, Any] | None:
        with self._lock:
            now = cluster_state.now_s()
            if self._last is not None and self._last[0] is svc \
                    and now - self._last[1] < svc.config.operator_storage_cache_s:
                return self._last[2]
            try:
                figures: dict[str, Any] | None = self._gather(svc)
            except Exception as error:  # figures, not a data path: the page goes on
                log.warning("storage figures unavailable: %s: %s", type(error).__name__, error)
                figures = None
            self._last = (svc, cluster_state.now_s(), figures)
            return figures

    @staticmethod
    def _gather(svc: Svc) -> dict[str, Any]:
        horizons = svc.config.retention
        with svc.pool.connection() as conn:
            report = sizes.storage_report(conn, svc.clickhouse, horizons,
                                          dt.datetime.now(dt.UTC))
        due = [d for d in report.due if d.rows]
        return {"tables": [{"store": t.store, "table": t.table, "bytes": t.bytes,
                            "rows": t.rows, "estimated": t.estimated} for t in report.tables],
                "retention": {"horizonDays": horizons.events_days,
                              "nextRemoval": "; ".join(
                                  f"{d.rows:,} {d.table} rows {d.horizon}" for d in due[:6])
                              or None},
                "due": [{"store": d.store, "rule": d.rule, "table": d.table,
                         "horizon": d.horizon, "rows": d.rows} for d in report.due]}


_STORAGE = StorageFigures()


def _last_hour_outcomes(svc: Svc, access: Access) -> dict[str, int]:
    """The organization's outcomes (accepted, rate_limited, filtered, invalid, …) of the
    current and the previous hour (the outcomes table counts per hour)."""
    now = dt.datetime.now(dt.UTC)
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    query = StatsQuery(fields=("sum(quantity)",), group_by=("outcome",),
                       start=end - dt.timedelta(hours=2), end=end, interval_s=7200)
    rows = svc.clickhouse.outcome_stats(access.organization_id, sorted(access.project_ids),
                                        query)
    totals: dict[str, int] = {}
    for _, group, quantity in rows:
        totals[str(group[0])] = totals.get(str(group[0]), 0) + quantity
    return totals


@router.get("/organizations/{org}/operations/")
def organization_figures(access: OrgOwner, svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        items, size = ops_figures.organization_queued(conn, access.organization_id)
        counts = queue.dead_letter_counts(conn, access.organization_id,
                                          sorted(access.project_ids))
    return {"organization": access.organization_slug,
            "queue": {"items": items, "bytes": size},
            "outcomesLastHours": _last_hour_outcomes(svc, access),
            "deadLetters": sum(c.count for c in counts),
            "storage": None}


class InstanceFigures:
    """The instance's figures of this replica: gathered at most once per ``cache_s``,
    the intake counters kept over ``rate_window_s`` to answer rates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None
        self._rates: cluster_state.RateWindow | None = None

    def get(self, svc: Svc) -> dict[str, Any]:
        config = svc.config
        with self._lock:
            now = cluster_state.now_s()
            if self._last is not None and now - self._last[0] < config.operator_cache_s:
                return self._last[1]
            if self._rates is None or self._rates.window_s != config.operator_rate_window_s:
                self._rates = cluster_state.RateWindow(config.operator_rate_window_s)
            figures = self._gather(svc, self._rates)
            self._last = (cluster_state.now_s(), figures)
            return figures

    @staticmethod
    def _gather(svc: Svc, rates: cluster_state.RateWindow) -> dict[str, Any]:
        config = svc.config
        with svc.pool.connection() as conn:
            backlog = queue.waiting_backlog(conn, config.operator_queue_count_cap)
            with conn.transaction():
                dead = ops_figures.dead_letter_totals(conn)
        figures: dict[str, Any] = {
            "queue": {"waiting": backlog.waiting_items,
                      "waitingCapped": backlog.waiting_items >= config.operator_queue_count_cap,
                      "oldestAgeSeconds": round(backlog.oldest_age_s, 3)},
            "deadLetters": {"total": sum(dead.values()), "byItemType": dead},
            "storage": _STORAGE.get(svc)}
        figures.update(cluster_figures(config.operator_timeout_s, rates))
        return figures


def cluster_figures(timeout_s: float, rates: cluster_state.RateWindow) -> dict[str, Any]:
    """Intake rates, consumers, nodes, deployments and actors from Ray; ``{"ray": {"ok":
    False, …}}`` in a process without Ray (an API served outside Serve)."""
    import ray

    if not ray.is_initialized():
        return {"ray": {"ok": False, "detail": "this API process is not connected to Ray"}}
    names = cluster_state.our_actor_names()
    nodes = cluster_state.nodes()
    counters, unreachable = cluster_state.intake_counters(nodes, timeout_s)
    per_s = rates.add(cluster_state.CounterReading(cluster_state.now_s(), counters))
    consumers = cluster_state.consumer_stats(names, timeout_s)
    processed = sum(c.get("processed_last_minute", 0) for c in consumers)
    by_node = cluster_state.actor_nodes(names)
    return {
        "ray": {"ok": True, "metricsUnreachable": unreachable},
        "intake": intake_json(per_s, rates.window_s),
        "processed": {"lastMinute": processed, "perSecond": round(processed / 60, 2)},
        "consumers": [{"name": c["name"], "ok": "error" not in c,
                       "processedLastMinute": c.get("processed_last_minute", 0),
                       "errors": c.get("errors", 0), "idle": c.get("idle"),
                       "storageDown": c.get("storage_down"), "error": c.get("error")}
                      for c in consumers],
        "nodes": [{"id": n["node_id"], "address": n["address"], "alive": n["alive"],
                   "cpus": n["resources"].get("CPU", 0),
                   "metrics": cluster_state.metrics_url(n["address"], n["metrics_port"])
                   if n.get("metrics_port") else None,
                   "actors": by_node.get(n["node_id"], [])} for n in nodes],
        "deployments": [{"application": app, "name": name, "status": d["status"].lower(),
                         "replicas": {s.lower(): n for s, n in d["replicas"].items()}}
                        for app, found in sorted(cluster_state.applications().items())
                        for name, d in sorted(found.items())],
        "actors": names,
        "actorsByNodeKnown": bool(by_node),
    }


def intake_json(per_s: dict[str, float] | None, window_s: float) -> dict[str, Any]:
    """Rates per second over the last ``window_s`` (None until a second reading)."""
    def rate(series: str, outcome: str) -> float | None:
        if per_s is None:
            return None
        return round(per_s.get(f"ray_crashray_{series}:{outcome}", 0.0), 3)

    return {"windowSeconds": window_s,
            "requestsAccepted": rate("ingest_requests_total", "accepted"),
            "requestsRefused": rate("ingest_requests_total", "refused"),
            "itemsAccepted": rate("ingest_items_total", "accepted"),
            "itemsRefused": rate("ingest_items_total", "refused"),
            "itemsClaimed": rate("consumer_items_total", "claimed"),
            "itemsDeadLettered": rate("consumer_items_total", "dead_lettered")}


_INSTANCE = InstanceFigures()


@router.get("/operations/")
def instance_figures(admin: InstanceAdmin, svc: Svc) -> dict[str, Any]:
    return _INSTANCE.get(svc)
