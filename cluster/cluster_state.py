"""What runs where, for operators: the figures ``crashray status`` prints and the operator
page shows (``serve_apps/api/operations.py``), gathered in one place from a process that
is connected to Ray (the CLI's driver, or an API replica).

Every call is bounded: Ray's node table and named actors are cheap reads of the GCS;
``serve.status()`` one call to the Serve controller; the consumers' ``stats()`` are asked
all at once and waited for at most ``timeout_s``; each node's Prometheus endpoint is read
with a timeout. Nothing here names a tenant: these are instance-wide figures. Ray is imported inside
the functions that need it: the CLI imports this module (``metrics_url``) for commands
that never start Ray.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("crashray.status")

#: Name prefix of the consumer actors (``actors/consumer.py``'s pool).
CONSUMER_PREFIX: Final = "crashray-consumer-"
#: Set once a failure to read the actor table is logged (the operator page asks every few
#: seconds).
_actor_table_missing_logged = threading.Event()


def our_actor_names() -> list[str]:
    import ray

    from actors.placement import NAMESPACE

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == NAMESPACE)


def nodes() -> list[dict[str, Any]]:
    """Ray's nodes: id, address, alive, resources and the metrics export port."""
    import ray

    return [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"],
             "alive": n["Alive"], "resources": n.get("Resources", {}),
             "metrics_port": n.get("MetricsExportPort")}
            for n in ray.nodes()]  # type: ignore[no-untyped-call]


def applications() -> dict[str, dict[str, Any]]:
    """Serve application → deployment → {"status", "replicas": {state: count}}."""
    from ray import serve

    found: dict[str, dict[str, Any]] = {}
    for app_name, app in serve.status().applications.items():
        found[app_name] = {
            name: {"status": str(d.status.value if hasattr(d.status, "value") else d.status),
                   "replicas": {str(getattr(k, "value", k)): v
                                for k, v in d.replica_states.items()}}
            for name, d in app.deployments.items()}
    return found


def actor_nodes(names: list[str]) -> dict[str, list[str]]:
    """Node id → the named Crashray actors (and Serve replicas) alive on it, from the GCS's
    actor table. Not from Ray's state API: that one is served by the head's API server,
    which a one-node instance does not run (cluster/ray_head.py), and without it each call
    waited 40 s before failing."""
    try:
        from ray._private.state import state

        actors = state.actor_table(None, actor_state_name="ALIVE")
    except Exception:  # optional side path (Ray not connected, the GCS away): logged once
        if not _actor_table_missing_logged.is_set():
            _actor_table_missing_logged.set()
            log.warning("Ray's actor table cannot be read; actors by node are not shown",
                        exc_info=True)
        return {}
    by_node: dict[str, list[str]] = {}
    for actor in actors.values():
        name = actor.get("Name") or ""
        class_name = actor.get("ActorClassName") or ""
        if name in names or class_name.startswith("ServeReplica:"):
            label = name or class_name.removeprefix("ServeReplica:")
            node = (actor.get("Address") or {}).get("NodeID") or "?"
            by_node.setdefault(node, []).append(label)
    return {node: sorted(labels) for node, labels in by_node.items()}


def consumer_stats(names: Iterable[str], timeout_s: float) -> list[dict[str, Any]]:
    """``stats()`` of every named consumer, asked at once and waited for at most
    ``timeout_s`` in all; one that does not answer (restarting, its node gone) carries
    ``{"error": …}`` instead."""
    import ray

    from actors.placement import NAMESPACE

    asked: list[tuple[str, Any]] = []
    found: list[dict[str, Any]] = []
    for name in names:
        if not name.startswith(CONSUMER_PREFIX):
            continue
        try:
            asked.append((name, ray.get_actor(name, namespace=NAMESPACE).stats.remote()))
        except ValueError:  # gone meanwhile
            continue
    if asked:
        ray.wait([ref for _, ref in asked], num_returns=len(asked), timeout=timeout_s)
    for name, ref in asked:
        try:
            stats = ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            stats = {"error": f"no answer within {timeout_s:g} s"}
        except ray.exceptions.RayError as exc:
            stats = {"error": type(exc).__name__}
        found.append({"name": name, **stats})
    return found


# --- intake counters from each node's Prometheus endpoint --------------------------------

#: The counters the operator page turns into rates: series name → label that splits it.
INTAKE_SERIES: Final = {
    "ray_crashray_ingest_requests_total": "outcome",
    "ray_crashray_ingest_items_total": "outcome",
    "ray_crashray_consumer_items_total": "outcome",
}


def metrics_url(address: str, port: int) -> str:
    """A node's Prometheus endpoint (Ray's metrics agent; Crashray's metrics are the
    ``ray_crashray_*`` series, cluster/metrics.py)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/metrics"


def sum_counters(text: str) -> dict[str, float]:
    """``INTAKE_SERIES`` in one Prometheus text page, summed over Ray's labels:
    ``"<series>:<outcome>"`` → value (pure; the page's parser is prometheus_client's)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = INTAKE_SERIES.get(sample.name)
            if label is not None:
                key = f"{sample.name}:{sample.labels.get(label, '')}"
                totals[key] = totals.get(key, 0.0) + float(sample.value)
    return totals


def intake_counters(node_list: list[dict[str, Any]], timeout_s: float
                    ) -> tuple[dict[str, float], list[str]]:
    """The intake counters of every alive node, summed; and the endpoints that did not
    answer (their node's counters are left out, said so rather than hidden)."""
    import httpx

    totals: dict[str, float] = {}
    unreachable: list[str] = []
    for node in node_list:
        if not node["alive"] or not node.get("metrics_port"):
            continue
        url = metrics_url(node["address"], node["metrics_port"])
        try:
            text = httpx.get(url, timeout=timeout_s).text
        except httpx.HTTPError:
            unreachable.append(url)
            continue
        for key, value in sum_counters(text).items():
            totals[key] = totals.get(key, 0.0) + value
    return totals, unreachable


@dataclass(frozen=True)
class CounterReading:
    at_s: float
    values: Mapping[str, float]


class RateWindow:
    """Per-second rates of counters over the last ``window_s``: each reading is kept that
    long and rates are taken against the oldest one kept. Ray's metrics agent exports
    every ~10 s, so a window of several exports smooths the steps a rate between two
    close readings would show."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._readings: deque[CounterReading] = deque()

    def add(self, reading: CounterReading) -> dict[str, float] | None:
        """Keep ``reading``; the rates since the oldest reading kept (None while the
        window holds less than a second). A counter that went down (a replica restarted
        and its series began again) reads 0, never a negative rate."""
        while self._readings and reading.at_s - self._readings[0].at_s > self.window_s:
            self._readings.popleft()
        self._readings.append(reading)
        first = self._readings[0]
        elapsed = reading.at_s - first.at_s
        if elapsed < 1.0:
            return None
        return {key: max(value - first.values.get(key, 0.0), 0.0) / elapsed
                for key, value in reading.values.items()}


def now_s() -> float:
    return time.monotonic()
