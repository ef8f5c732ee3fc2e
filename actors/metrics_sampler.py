"""The metrics sampler: the gauges no request or batch updates by itself.

Counters and latencies are recorded where things happen (ingest, consumers, the rate
limiter, the notifier: ``cluster/metrics.py``). What waits is measured here instead,
every ``interval_s``, by one small actor: the queue's waiting items and the age of the
oldest (``storage.queue.waiting_backlog``, bounded by ``queue_count_cap``), the dead
letters per item type, the consumers that answer, and the free space of the data
directory's disk. It is a *home* actor, on the data directory's node, so the disk it
measures is the one ingest checks (``CRASHRAY_MIN_FREE_DISK_BYTES``).

Not the pool autoscaler's job, although it reads the same backlog: a fixed pool runs no
autoscaler, and the gauges must not stop with it.

``MetricsSampler`` (no Ray in ``measure``; tests call it directly) measures;
``MetricsSamplerActor`` (named ``crashray-metrics-sampler``) runs it in a thread and sets
the gauges.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import ray

from actors.consumer import CONSUMER_POOL, consumer_name
from actors.placement import LOCAL, NAMESPACE, Placement
from cluster import metrics
from storage import queue as pg_queue
from storage.ops_figures import dead_letter_totals
from storage.postgres import connect
from storage.retention import RetentionSweeper, SweepConfig, SweepResult

log = logging.getLogger("crashray.metrics")

SAMPLER_NAME: Final = "crashray-metrics-sampler"
#: Seconds to wait for the consumers' ``stats()`` in one sample; one that does not answer
#: in time (restarting, its node gone) is not counted alive.
CONSUMER_STATS_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class SamplerConfig:
    """CRASHRAY_METRICS_* in cluster/settings.py."""

    postgres_url: str
    interval_s: float
    queue_count_cap: int
    #: The data directory (its disk is measured); None: not measured.
    data_dir: str | None = None
    consumer_pool: str = CONSUMER_POOL
    #: The retention sweep this actor also runs (storage/retention.py); None: none.
    retention: SweepConfig | None = None


@dataclass(frozen=True)
class Sample:
    waiting_items: int
    oldest_age_s: float
    dead_letters: dict[str, int] = field(default_factory=dict)
    disk_free_bytes: int | None = None
    disk_size_bytes: int | None = None


class MetricsSampler:
    """Measures the queue, the dead letters and the disk (no Ray)."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        self._conn: psycopg.Connection[Any] | None = None
        self._retention = None if config.retention is None else \
            RetentionSweeper(config.retention)

    def measure(self) -> Sample:
        conn = self._connection()
        backlog = pg_queue.waiting_backlog(conn, self.config.queue_count_cap)
        with conn.transaction():
            dead = dead_letter_totals(conn)
        free = size = None
        if self.config.data_dir is not None:
            usage = shutil.disk_usage(self.config.data_dir)
            free, size = usage.free, usage.total
        return Sample(backlog.waiting_items, backlog.oldest_age_s, dead, free, size)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.config.postgres_url)
        return self._conn

    def sweep_retention_if_due(self) -> SweepResult | None:
        """The retention sweep, every CRASHRAY_RETENTION_SWEEP_INTERVAL_S, on a connection
        of its own (autocommit: each batch commits by itself)."""
        if self._retention is None or not self._retention.claim_if_due():
            return None
        with connect(self.config.postgres_url, autocommit=True) as conn:
            return self._retention.sweep(conn, dt.datetime.now(dt.UTC))

    def drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def consumers_alive(pool: str, timeout_s: float = CONSUMER_STATS_TIMEOUT_S) -> int:
    """Consumers of ``pool`` (found by name, 0 up to the first missing) whose ``stats()``
    answers within ``timeout_s``."""
    refs: list[Any] = []
    index = 0
    while True:
        try:
            consumer = ray.get_actor(consumer_name(index, pool), namespace=NAMESPACE)
        except ValueError:
            break
        refs.append(consumer.stats.remote())
        index += 1
    if not refs:
        return 0
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    alive = 0
    for ref in ready:
        try:
            ray.get(ref)
        except ray.exceptions.RayError:
            continue
        alive += 1
    return alive


class MetricsSamplerService:
    """Samples as soon as it is constructed, every ``interval_s``. An actor of its own
    (``MetricsSamplerActor``) or a part of the shared process (actors/shared_process.py)."""

    def __init__(self, config: SamplerConfig) -> None:
        metrics.record_actor_start("metrics_sampler")
        self._sampler = MetricsSampler(config)
        self._seen_types: set[str] = set()
        self._errors = 0
        self._samples = 0
        self._last: Sample | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-sampler",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self.sweep_retention()
            self._stop.wait(self._sampler.config.interval_s)

    def sample(self) -> dict[str, Any]:
        """One sample, recorded as gauges; returns it (``stats()``)."""
        try:
            sample = self._sampler.measure()
        except psycopg.Error:
            # PostgreSQL away: the gauges keep their last value and /readyz says why;
            # the next sample tries again. Logged and counted.
            self._errors += 1
            log.warning("metrics sample failed; PostgreSQL unreachable?", exc_info=True)
            self._sampler.drop_connection()
            return self.stats()
        metrics.set_gauge("crashray_queue_waiting_items", sample.waiting_items)
        metrics.set_gauge("crashray_queue_oldest_age_seconds", sample.oldest_age_s)
        self._seen_types |= set(sample.dead_letters)
        for item_type in self._seen_types:  # a type replayed away reads 0, not its last
            metrics.set_gauge("crashray_dead_letters", sample.dead_letters.get(item_type, 0),
                              item_type=item_type)
        if sample.disk_free_bytes is not None and sample.disk_size_bytes is not None:
            metrics.set_gauge("crashray_data_disk_free_bytes", sample.disk_free_bytes)
            metrics.set_gauge("crashray_data_disk_size_bytes", sample.disk_size_bytes)
        metrics.set_gauge("crashray_consumers_alive",
                          consumers_alive(self._sampler.config.consumer_pool))
        self._samples += 1
        self._last = sample
        return self.stats()

    def sweep_retention(self) -> SweepResult | None:
        try:
            return self._sampler.sweep_retention_if_due()
        except psycopg.Error:
            # PostgreSQL away: nothing was deleted half (each batch is a transaction); the
            # next sweep, an interval later, continues. Logged and counted.
            self._errors += 1
            log.warning("retention sweep failed; PostgreSQL unreachable?", exc_info=True)
            return None

    def stats(self) -> dict[str, Any]:
        last = self._last
        return {"samples": self._samples, "errors": self._errors,
                "worker_id": ray.get_runtime_context().get_worker_id(),
                "last": None if last is None else {
                    "waiting_items": last.waiting_items, "oldest_age_s": last.oldest_age_s,
                    "dead_letters": dict(last.dead_letters),
                    "disk_free_bytes": last.disk_free_bytes}}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._sampler.drop_connection()


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=2)  # type: ignore[call-overload]
class MetricsSamplerActor(MetricsSamplerService):
    pass


def start_metrics_sampler(config: SamplerConfig, placement: Placement = LOCAL,
                          name: str = SAMPLER_NAME) -> Any:
    """The sampler, on the data directory's node (a home actor); found by name if one runs
    already (a deploy upgrading in place)."""
    return MetricsSamplerActor.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.home(name)).remote(config)
