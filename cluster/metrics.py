"""Crashray's own metrics, through Ray's metrics API (``ray.util.metrics``).

Every metric Crashray records is declared once, here, in ``METRICS``: its name, kind,
tags and (for histograms) bucket bounds. The Grafana dashboard and the Prometheus alert
rules under ``dashboards/`` may only use these names; a unit test checks it, so renaming
a metric fails CI rather than silently blanking a panel.

How they reach Prometheus: each Ray node runs a metrics agent (the "dashboard agent",
started by the raylet whether or not the dashboard itself runs: Ray 2.60
``ray/_private/services.py`` ``start_raylet`` always adds ``dashboard/agent.py``), which
collects what the node's workers record and serves it at
``http://<node address>:<metrics export port>/metrics``. Ray prefixes every name with
``ray_`` (``ray/_private/metrics_agent.py``: ``f"{self._namespace}_{metric_name}"``);
counters are named here with their ``_total`` suffix so Ray exports them once, as a
Prometheus counter, and not also as the deprecated gauge twin. Ray adds its own labels
(``SessionName``, ``NodeAddress``, ``Component``, ``WorkerId``); dashboards sum over them.

Tags are bounded: data category, outcome, reason code, stage, table, deployment, actor
kind. Never an organization, project, key or event id: a tenant count must not become a
series count.

Recording is a no-op in a process without Ray (``ray`` not imported, or not initialized):
``events/`` stays Ray-free and unit tests record nothing. A metric object is created once
per process, on first use (``ray.util.metrics`` registers each with the worker's core
worker, which exists only once Ray is connected). ``CRASHRAY_METRICS_ENABLED=false`` turns
recording off in every process that sees it (the processes of a node inherit it from the
one that starts Ray): what bench/ingest.py's metrics on/off comparison uses.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

#: Names and descriptions must be ASCII: Ray encodes them so (``ray._raylet.Count``
#: raises ``UnicodeEncodeError`` on anything else, in the recording process).
#: The prefix Ray's metrics agent puts before every application metric's name.
RAY_EXPORT_PREFIX: Final = "ray_"

Kind = Literal["counter", "gauge", "histogram"]

#: Seconds: accept latency of one ingest request (HTTP handler to answer). Sub-millisecond
#: answers from a lease up to the hand-off's worst case (a PostgreSQL stall).
ACCEPT_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 5.0, 10.0)
#: Seconds one processing stage takes for a batch (normalize … insert), or one
#: ClickHouse insert, or one notification send.
STAGE_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                          10.0, 30.0, 60.0)
#: Seconds a request waited for a PostgreSQL pool connection.
POOL_WAIT_BUCKETS_S: Final = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)

#: The processing stages a batch goes through in a consumer (``stage`` tag values).
STAGES: Final = ("normalize", "scrub", "symbolicate", "group", "insert")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    def exported_names(self) -> tuple[str, ...]:
        """The series names Prometheus sees on Ray's endpoint."""
        base = RAY_EXPORT_PREFIX + self.name
        if self.kind == "histogram":
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


METRICS: Final[tuple[MetricSpec, ...]] = (
    # --- intake (serve_apps/ingest.py) ---------------------------------------------------
    MetricSpec("crashray_ingest_requests_total", "counter",
               "Ingest requests answered, by endpoint, outcome (accepted/refused) and"
               " refusal reason (the error code; empty when accepted).",
               ("endpoint", "outcome", "reason")),
    MetricSpec("crashray_ingest_items_total", "counter",
               "Items (events, transactions, attachments, ...) of ingest requests by data"
               " category, outcome and refusal reason.",
               ("category", "outcome", "reason")),
    MetricSpec("crashray_ingest_accept_seconds", "histogram",
               "Seconds from an ingest request's arrival to its answer.",
               ("endpoint", "outcome"), ACCEPT_BUCKETS_S),
    # --- queue (sampled by actors/metrics_sampler.py) ----------------------------------------
    MetricSpec("crashray_queue_waiting_items", "gauge",
               "Items waiting in the ingest queue (counted up to a cap; see"
               " CRASHRAY_METRICS_QUEUE_COUNT_CAP)."),
    MetricSpec("crashray_queue_oldest_age_seconds", "gauge",
               "Seconds the oldest waiting item has waited since ingest received it."),
    MetricSpec("crashray_dead_letters", "gauge",
               "Items in the dead letters (failed on their own; replay or drop with"
               " `crashray dead-letters`), by item type.", ("item_type",)),
    MetricSpec("crashray_consumers_alive", "gauge",
               "Consumers that answered the last sample."),
    MetricSpec("crashray_data_disk_free_bytes", "gauge",
               "Free bytes on the disk of the data directory (ingest refuses below"
               " CRASHRAY_MIN_FREE_DISK_BYTES)."),
    MetricSpec("crashray_data_disk_size_bytes", "gauge",
               "Size in bytes of the disk of the data directory."),
    # --- processing (actors/consumer.py, actors/symbolicate.py) ----------------------------
    MetricSpec("crashray_stage_seconds", "histogram",
               "Seconds a processing stage took for one batch (symbolicate: per event).",
               ("stage",), STAGE_BUCKETS_S),
    MetricSpec("crashray_consumer_items_total", "counter",
               "Queue items consumers handled, by item type and outcome: claimed (every"
               " item of a batch), dead_lettered, retried (failed, claimed again later),"
               " released (given back during a ClickHouse outage).",
               ("item_type", "outcome")),
    MetricSpec("crashray_symbolication_failures_total", "counter",
               "Events whose symbolication failed (the event is kept, with the error)."),
    # --- storage -------------------------------------------------------------------------
    MetricSpec("crashray_clickhouse_insert_rows_total", "counter",
               "Rows inserted into ClickHouse, by table.", ("table",)),
    MetricSpec("crashray_clickhouse_insert_bytes_total", "counter",
               "Bytes sent in ClickHouse inserts, by table.", ("table",)),
    MetricSpec("crashray_clickhouse_insert_seconds", "histogram",
               "Seconds one ClickHouse insert took, by table.", ("table",), STAGE_BUCKETS_S),
    MetricSpec("crashray_postgres_pool_wait_seconds", "histogram",
               "Seconds a request waited for a PostgreSQL connection from a pool, by"
               " deployment.", ("deployment",), POOL_WAIT_BUCKETS_S),
    # --- rate limiter (actors/rate_limit.py) ------------------------------------------------
    MetricSpec("crashray_rate_limit_decisions_total", "counter",
               "Rate-limiter decisions per data category: accepted, or refused by scope"
               " (organization, project, key, spike).", ("category", "outcome", "scope")),
    MetricSpec("crashray_rate_limit_leases_total", "counter",
               "Leases granted to ingest replicas, by data category.", ("category",)),
    MetricSpec("crashray_rate_limit_lease_units_total", "counter",
               "Units granted in leases (granted) and handed back unused (returned).",
               ("outcome",)),
    # --- notifications (actors/notifier.py) -------------------------------------------------
    MetricSpec("crashray_notifications_total", "counter",
               "Notification send attempts by destination kind (webhook, slack, email) and"
               " outcome (delivered, pending: retried later, failed: gave up, lost_claim,"
               " error).", ("kind", "outcome")),
    MetricSpec("crashray_notification_send_seconds", "histogram",
               "Seconds one notification send took, by destination kind.", ("kind",),
               STAGE_BUCKETS_S),
    # --- actors --------------------------------------------------------------------------
    MetricSpec("crashray_actor_restarts_total", "counter",
               "Crashray actors that Ray restarted (constructed again after a crash), by"
               " actor kind.", ("actor",)),
)

SPECS: Final[dict[str, MetricSpec]] = {spec.name: spec for spec in METRICS}


def exported_names() -> frozenset[str]:
    """Every series name Crashray's metrics appear under on Ray's endpoint."""
    return frozenset(n for spec in METRICS for n in spec.exported_names())


# --- recording -------------------------------------------------------------------------------

_lock = threading.Lock()
_created: dict[str, Any] = {}

#: The setting that turns recording off (cluster/settings.py ``metrics_enabled``), read
#: from the environment once per process.
ENABLED_ENV: Final = "CRASHRAY_METRICS_ENABLED"
_OFF: Final = frozenset({"0", "false", "no", "off"})
_enabled: bool | None = None


def parse_enabled(value: str | None) -> bool:
    """Recording is on unless the setting says false (``0``, ``false``, ``no``, ``off``)."""
    return value is None or value.strip().lower() not in _OFF


def recording_enabled() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = parse_enabled(os.environ.get(ENABLED_ENV))
    return _enabled


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _metric(name: str, tags: Mapping[str, str]) -> Any | None:
    """This process's metric object for ``name``, made on first use; None without Ray.
    ``tags`` must be exactly the metric's tag keys, checked with or without Ray, so a unit
    test of a call site catches a wrong tag (Ray would raise only in a live worker)."""
    spec = SPECS[name]
    if tags.keys() != set(spec.tag_keys):
        raise ValueError(f"metric {name} takes tags {sorted(spec.tag_keys)}, not"
                         f" {sorted(tags)}")
    found = _created.get(name)
    if found is not None:
        return found
    if not _ray_connected() or not recording_enabled():
        return None
    from ray.util import metrics as ray_metrics

    with _lock:
        found = _created.get(name)
        if found is None:
            if spec.kind == "counter":
                found = ray_metrics.Counter(name, spec.description, spec.tag_keys)
            elif spec.kind == "gauge":
                found = ray_metrics.Gauge(name, spec.description, spec.tag_keys)
            else:
                found = ray_metrics.Histogram(name, spec.description, list(spec.boundaries),
                                              spec.tag_keys)
            _created[name] = found
    return found


def inc(name: str, value: float = 1.0, **tags: str) -> None:
    """Add ``value`` to counter ``name`` (no-op without Ray, or for a zero value)."""
    if value:
        metric = _metric(name, tags)
        if metric is not None:
            metric.inc(value, tags=tags or None)


def observe(name: str, value: float, **tags: str) -> None:
    """Record ``value`` in histogram ``name``."""
    metric = _metric(name, tags)
    if metric is not None:
        metric.observe(value, tags=tags or None)


def set_gauge(name: str, value: float, **tags: str) -> None:
    metric = _metric(name, tags)
    if metric is not None:
        metric.set(value, tags=tags or None)


def since(started_s: float) -> float:
    """Seconds since ``started_s`` (a ``time.perf_counter()`` reading)."""
    return time.perf_counter() - started_s


# --- one call per instrumented site ----------------------------------------------------------

def record_ingest(endpoint: str, started_s: float, accepted: Mapping[str, int],
                  refused: Mapping[str, int], reason: str = "") -> None:
    """One answered ingest request: its items per data category, accepted and refused
    (``reason``: the error code, e.g. ``rate_limited``, ``overloaded``, ``too_large``),
    and its accept latency since ``started_s`` (``time.perf_counter()``)."""
    outcome = "refused" if reason else "accepted"
    inc("crashray_ingest_requests_total", endpoint=endpoint, outcome=outcome, reason=reason)
    observe("crashray_ingest_accept_seconds", since(started_s), endpoint=endpoint,
            outcome=outcome)
    for category, quantity in accepted.items():
        inc("crashray_ingest_items_total", quantity, category=category, outcome="accepted",
            reason="")
    for category, quantity in refused.items():
        inc("crashray_ingest_items_total", quantity, category=category, outcome="refused",
            reason=reason or "rate_limited")


def record_stages(seconds_by_stage: Mapping[str, float]) -> None:
    """A consumer batch's time per stage (keys from ``STAGES``)."""
    for stage, seconds in seconds_by_stage.items():
        observe("crashray_stage_seconds", seconds, stage=stage)


def record_clickhouse_insert(table: str, rows: int, size_bytes: int, seconds: float) -> None:
    """One ClickHouse insert into ``table``."""
    inc("crashray_clickhouse_insert_rows_total", rows, table=table)
    inc("crashray_clickhouse_insert_bytes_total", size_bytes, table=table)
    observe("crashray_clickhouse_insert_seconds", seconds, table=table)


def record_consumer_items(outcome: str, item_types: Iterable[str]) -> None:
    """Queue items a consumer handled with ``outcome`` (claimed, dead_lettered, retried,
    released)."""
    counts: dict[str, int] = {}
    for item_type in item_types:
        counts[item_type] = counts.get(item_type, 0) + 1
    for item_type, n in counts.items():
        inc("crashray_consumer_items_total", n, item_type=item_type, outcome=outcome)


def record_actor_start(actor: str) -> None:
    """Call in a Ray actor's ``__init__``: counts it when Ray restarted the actor (a
    reconstruction after a crash, ``max_restarts``), not on its first start."""
    if not _ray_connected():
        return
    import ray

    if ray.get_runtime_context().was_current_actor_reconstructed:
        inc("crashray_actor_restarts_total", actor=actor)
