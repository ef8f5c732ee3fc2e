"""The consumer pool's autoscaler: sizes the pool by the queue's lag.

Every ``interval_s`` it measures the hand-off (``storage.handoff.ConsumerBacklog``: the
queue's waiting items and the age of the first; on Kafka the consumer group's lag and the
age of its oldest waiting message) and the pool (each consumer's ``stats()``: processed
totals for the pool's rate, and whether storage is down), asks
``events.pool_scaling.decide`` and applies the answer:

- **grow**: ``start_consumers(n, first=size)``, named ``consumer_name(size)`` onwards and
  placed as the other pool actors (spread over nodes; detached when deployed);
- **shrink**: retire the highest-numbered consumers one at a time: ``stop()`` finishes the
  batch in hand and ends the consumer's loop before its next claim, then ``ray.kill``. A
  consumer that does not stop in time is killed anyway: the items it claimed stay leased
  and the others claim them again once the lease runs out (actors/consumer.py), so a
  retirement loses nothing and counts nothing twice.

It finds the pool by name (consumer 0, 1, … up to the first name missing) when it starts,
and so again after Ray restarts it: deployed (detached), the consumers it started outlive
it; owned by ``crashray up``, they end with it and the bounds rule refills the pool.
Consumers ``0 … min-1`` are started by the runtime; the autoscaler starts and retires only
those above. On Kafka the pool never grows past the topics' partitions
(``CRASHRAY_KAFKA_PARTITIONS``): a consumer group gives each partition to one member, so
more members would stay idle. ``stop_pool_autoscaler`` ends it and retires those (``crashray`` stopping, or
a deploy about to replace the pool).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import psycopg
import ray

from actors.consumer import CONSUMER_POOL, ConsumerConfig, consumer_name, start_consumers
from actors.placement import LOCAL, NAMESPACE, Placement
from cluster import metrics
from events.pool_scaling import (
    Decision,
    PoolLoad,
    PoolPolicy,
    RateMeter,
    decide,
    start_history,
)
from storage.handoff import ConsumerBacklog
from storage.postgres import connect

log = logging.getLogger("crashray.autoscaler")

AUTOSCALER_NAME: Final = "crashray-pool-autoscaler"
#: Waiting items counted at most per measurement: a scan of this many rows costs 14-26 ms
#: (bench/queue_lag.py). Past it a step may be sized smaller than the backlog asks for;
#: the pool still grows at every cool-down while items wait too long.
LAG_COUNT_CAP: Final = 100_000
#: Seconds the pool's rate is averaged over (a consumer finishes a batch every second or
#: so under load; a few batches smooth it).
RATE_WINDOW_S: Final = 10.0
#: Seconds to wait for the consumers' stats in one measurement (a restarting one answers
#: later; it is left out of that measurement).
STATS_TIMEOUT_S: Final = 5.0
#: Seconds to wait until a retired consumer's name is free again for a later growth.
NAME_RELEASE_TIMEOUT_S: Final = 10.0
#: Pool size changes kept for ``stats()``.
KEPT_CHANGES: Final = 1000


@dataclass(frozen=True)
class AutoscalerConfig:
    """The autoscaler's settings (cluster/settings.py: ``CRASHRAY_CONSUMERS_*``)."""

    policy: PoolPolicy
    consumer: ConsumerConfig
    grouping_shard_names: tuple[str, ...]
    #: Seconds between two measurements.
    interval_s: float
    placement: Placement = LOCAL
    #: Seconds a retired consumer may take to finish its batch before it is killed
    #: (``Consumer.stop`` waits as long for its loop).
    retire_timeout_s: float = 60.0
    #: The consumers' name prefix (``actors.consumer.consumer_name``).
    pool: str = CONSUMER_POOL
    #: The symbolication actors new consumers hand JavaScript events to (none: they
    #: symbolicate in their own process).
    symbolicator_names: tuple[str, ...] = ()


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)  # type: ignore[call-overload]
class PoolAutoscaler:
    """Starts measuring and deciding as soon as it is constructed."""

    def __init__(self, config: AutoscalerConfig) -> None:
        metrics.record_actor_start("pool_autoscaler")
        self._config = kafka_bounded(config)
        #: The hand-off's backlog (the PostgreSQL queue, or the consumer group's lag).
        self._backlog = ConsumerBacklog(self._config.consumer.kafka, self._connection)
        self._pool: list[Any] = _find_pool(config.pool)
        self._meter = RateMeter(RATE_WINDOW_S)
        self._history = start_history(time.monotonic())
        self._conn: psycopg.Connection[Any] | None = None
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._last: tuple[PoolLoad, Decision] | None = None
        #: (wall-clock time, size before, size after, reason, items waiting) of each change.
        self._changes: deque[tuple[float, int, int, str, int]] = deque(maxlen=KEPT_CHANGES)
        #: Retired consumers' processed totals (by name; a name reused later is summed).
        self._retired: dict[str, int] = {}
        self._errors = 0
        self._ticks = 0
        self._snapshot = self._describe()
        self._thread = threading.Thread(target=self._loop, name="autoscaler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # A failed measurement (PostgreSQL away, a consumer restarting) changes
                # nothing; the next one tries again. Logged and counted.
                self._errors += 1
                log.exception("consumer pool autoscaler: measurement failed")
                self._drop_connection()
            self._stop.wait(self._config.interval_s)

    def tick(self) -> dict[str, Any]:
        """One measurement, decision and change; returns ``stats()``."""
        with self._tick_lock:
            if not self._stop.is_set():
                load = self._measure()
                decision = decide(len(self._pool), load, time.monotonic(), self._history,
                                  self._config.policy)
                self._ticks += 1
                self._last = (load, decision)
                # Before resizing: a change that fails halfway still starts its cool-down.
                self._history = decision.history
                self._resize(decision, load)
                self._snapshot = self._describe()
        return self.stats()

    def _measure(self) -> PoolLoad:
        backlog = self._backlog.measure(LAG_COUNT_CAP, STATS_TIMEOUT_S)
        reports = self._consumer_stats()
        rate = self._meter.observe(time.monotonic(),
                                   {name: int(r["processed"]) for name, r in reports.items()})
        return PoolLoad(backlog.waiting_items, backlog.oldest_age_s, rate,
                        storage_down=any(bool(r.get("storage_down")) for r in reports.values()))

    def _consumer_stats(self) -> dict[str, dict[str, Any]]:
        refs = {consumer_name(i, self._config.pool): c.stats.remote()
                for i, c in enumerate(self._pool)}
        if not refs:
            return {}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs),
                            timeout=STATS_TIMEOUT_S)
        reports: dict[str, dict[str, Any]] = {}
        for name, ref in refs.items():
            if ref in ready:
                try:
                    reports[name] = ray.get(ref)
                except ray.exceptions.RayError:
                    continue  # restarting: left out of this measurement
        return reports

    def _resize(self, decision: Decision, load: PoolLoad) -> None:
        before = len(self._pool)
        if decision.target == before:
            return
        log.warning("consumer pool %d → %d: %s", before, decision.target, decision.reason)
        while len(self._pool) > decision.target:
            self._retire_last()
        while len(self._pool) < decision.target:
            # One at a time: a name still taken (a consumer ended outside the autoscaler)
            # stops the growth there, with the ones started so far in the pool.
            self._pool.extend(start_consumers(
                1, self._config.consumer, self._config.grouping_shard_names,
                self._config.placement, first=len(self._pool), pool=self._config.pool,
                symbolicator_names=self._config.symbolicator_names))
        self._changes.append((time.time(), before, len(self._pool), decision.reason,
                              load.waiting_items))

    def _retire_last(self) -> str:
        name = consumer_name(len(self._pool) - 1, self._config.pool)
        consumer = self._pool.pop()
        try:
            ray.get(consumer.stop.remote(), timeout=self._config.retire_timeout_s)
            processed = int(ray.get(consumer.stats.remote(), timeout=STATS_TIMEOUT_S)
                            ["processed"])
            self._retired[name] = self._retired.get(name, 0) + processed
        except Exception:
            # Killed anyway: what it had claimed stays leased and is claimed again by the
            # others after the lease (nothing lost, nothing counted twice). Logged.
            log.warning("%s did not stop in time; its claimed items are claimed again",
                        name, exc_info=True)
        ray.kill(consumer, no_restart=True)
        _wait_until_name_free(name)
        return name

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._config.consumer.postgres_url)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stats(self) -> dict[str, Any]:
        """The pool as the last finished measurement left it (never halfway through a
        change), with the errors counted since."""
        return {**self._snapshot, "errors": self._errors}

    def _describe(self) -> dict[str, Any]:
        load, decision = self._last if self._last else (None, None)
        return {"size": len(self._pool), "min": self._config.policy.min_consumers,
                "max": self._config.policy.max_consumers,
                "consumers": [consumer_name(i, self._config.pool)
                              for i in range(len(self._pool))],
                "load": asdict(load) if load else None,
                "reason": decision.reason if decision else None,
                "changes": [{"at": at, "from": a, "to": b, "reason": why, "waiting": waiting}
                            for at, a, b, why, waiting in self._changes],
                "retired_processed": dict(self._retired),
                "ticks": self._ticks}

    def shutdown(self) -> list[str]:
        """Stop deciding, then retire the consumers above the minimum (the runtime stops
        its own); returns their names."""
        self._stop.set()
        self._thread.join(timeout=self._config.retire_timeout_s + STATS_TIMEOUT_S)
        with self._tick_lock:
            retired = [self._retire_last()
                       for _ in range(len(self._pool) - self._config.policy.min_consumers)]
            self._snapshot = self._describe()
        self._drop_connection()
        self._backlog.close()
        return retired


def kafka_bounded(config: AutoscalerConfig) -> AutoscalerConfig:
    """On Kafka, the pool's maximum lowered to the topics' partitions (not below its
    minimum): a consumer group gives each partition to one member."""
    kafka = config.consumer.kafka
    policy = config.policy
    if kafka is None or policy.max_consumers <= kafka.partitions:
        return config
    bounded = max(kafka.partitions, policy.min_consumers, 1)
    log.warning("consumer pool maximum %d lowered to %d: the Kafka topics have %d partitions"
                " (CRASHRAY_KAFKA_PARTITIONS)", policy.max_consumers, bounded,
                kafka.partitions)
    return replace(config, policy=replace(policy, max_consumers=bounded))


def _find_pool(pool: str) -> list[Any]:
    """The live consumers of ``pool``, by name from 0 up to the first one missing."""
    found: list[Any] = []
    while True:
        try:
            found.append(ray.get_actor(consumer_name(len(found), pool), namespace=NAMESPACE))
        except ValueError:
            return found


def _wait_until_name_free(name: str) -> None:
    deadline = time.monotonic() + NAME_RELEASE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)
    log.warning("%s still registered %.0f s after it was killed", name,
                NAME_RELEASE_TIMEOUT_S)


def start_pool_autoscaler(config: AutoscalerConfig, name: str = AUTOSCALER_NAME) -> Any:
    """The autoscaler of the pool ``config.pool`` (its minimum already started)."""
    return PoolAutoscaler.options(  # type: ignore[attr-defined]
        **config.placement.pool(name)).remote(config)


def stop_pool_autoscaler(timeout_s: float, name: str = AUTOSCALER_NAME) -> list[str]:
    """End the named autoscaler, if one runs, after it retired the consumers it started
    (each finishing its batch, within ``timeout_s`` in all); returns their names. Call it
    before stopping or replacing the rest of the pool, so it does not refill it."""
    try:
        autoscaler = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return []
    retired: list[str] = []
    try:
        retired = list(ray.get(autoscaler.shutdown.remote(), timeout=timeout_s))
    except Exception:
        # Its consumers end with it (owned) or are retired by the caller (deployed); what
        # they had claimed is claimed again after the lease. Logged.
        log.warning("the consumer pool autoscaler did not stop in time", exc_info=True)
    ray.kill(autoscaler, no_restart=True)
    return retired
