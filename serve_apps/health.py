"""``GET /healthz`` and ``GET /readyz``: what a load balancer, Kubernetes or an operator's
monitoring asks. Unauthenticated, cheap, and about the instance only (no tenant data).

- ``/healthz``: the process answers (200 ``{"status": "ok"}``); nothing else is checked,
  so a slow database never makes a health check restart a healthy replica.
- ``/readyz``: 200 ``{"status": "ready", "checks": …}`` when PostgreSQL answers, ClickHouse
  answers, and the oldest item waiting in the ingest queue has waited less than
  ``CRASHRAY_READY_MAX_QUEUE_AGE_S``; else 503 ``{"status": "unready", …}`` with each
  failing check's reason. Each check is bounded by ``CRASHRAY_READY_CHECK_TIMEOUT_S`` and the
  answer is reused for ``CRASHRAY_READY_CACHE_S``, so a storm of probes costs the stores one
  check per replica per interval.

  On the Kafka hand-off (``CRASHRAY_KAFKA_BOOTSTRAP``) the ``queue`` check is replaced by a
  ``kafka`` check: the consumer group's lag (messages not yet stored) and the age of the
  oldest waiting message, against the same ``CRASHRAY_READY_MAX_QUEUE_AGE_S``; brokers that
  do not answer within the check timeout make it fail with their error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from storage.health import kafka_health, postgres_health, queue_health
from storage.kafka import GroupBacklog, KafkaSettings
from storage.queue import Backlog


@dataclass(frozen=True)
class HealthConfig:
    postgres_url: str
    clickhouse_dsn: str
    max_queue_age_s: float
    check_timeout_s: float
    cache_s: float
    #: Waiting items counted at most (CRASHRAY_METRICS_QUEUE_COUNT_CAP, as the sampler).
    queue_count_cap: int = 100_000
    #: The Kafka hand-off, when it runs: the backlog check reads the consumer group's lag.
    kafka: KafkaSettings | None = None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]]

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "unready", "checks": self.checks}


def check_readiness(config: HealthConfig, clickhouse_ping: Callable[[], bool],
                    kafka_meter: GroupBacklog | None = None) -> Readiness:
    """Ask each store once; a check that raises or times out is a failed check with its
    reason, never an error of the endpoint. ``kafka_meter``: the Kafka hand-off's backlog
    (then it replaces the PostgreSQL queue's)."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        if kafka_meter is None:
            queue = queue_health(config.postgres_url, config.check_timeout_s,
                                 config.queue_count_cap)
            checks["postgres"] = {"ok": True}
            checks["queue"] = _backlog_check(queue, config, "queued item")
        else:
            postgres_health(config.postgres_url, config.check_timeout_s)
            checks["postgres"] = {"ok": True}
    except Exception as exc:  # any failure to answer is the check's result
        checks["postgres"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}".strip()}
        if kafka_meter is None:
            checks["queue"] = {"ok": False, "detail": "unknown: PostgreSQL did not answer"}
    if kafka_meter is not None:
        try:
            checks["kafka"] = _backlog_check(kafka_health(kafka_meter, config.check_timeout_s),
                                             config, "Kafka message")
        except Exception as exc:  # the brokers' failure to answer is the check's result
            checks["kafka"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}".strip()}
    try:
        answered = clickhouse_ping()
        checks["clickhouse"] = {"ok": answered} | (
            {} if answered else {"detail": "ClickHouse did not answer the ping in time"})
    except Exception as exc:
        checks["clickhouse"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return Readiness(all(c["ok"] for c in checks.values()), checks)


def _backlog_check(backlog: Backlog, config: HealthConfig, what: str) -> dict[str, Any]:
    fresh = backlog.oldest_age_s < config.max_queue_age_s
    check: dict[str, Any] = {"ok": fresh, "oldest_age_s": round(backlog.oldest_age_s, 3),
                             "backlog": backlog.waiting_items}
    if not fresh:
        check["detail"] = (
            f"the oldest waiting {what} has waited {backlog.oldest_age_s:.0f} s, over"
            f" CRASHRAY_READY_MAX_QUEUE_AGE_S ({config.max_queue_age_s:g} s): consumers"
            " are down or behind")
    return check


class ReadinessProbe:
    """``check_readiness`` with its answer reused for ``cache_s``, run on one thread of its
    own and waited for at most twice the check timeout: a server that hangs mid-query
    (accepting connections, never answering) makes the probe answer "unready" in bounded
    time, and while that check is stuck no second one is started."""

    def __init__(self, config: HealthConfig, clickhouse_ping: Callable[[], bool]) -> None:
        self._config = config
        self._ping = clickhouse_ping
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")
        self._running: Future[Readiness] | None = None
        self._last: tuple[float, Readiness] | None = None
        #: Used by the probe's one thread only (made there, on the first check).
        self._kafka_meter: GroupBacklog | None = None

    def _check(self) -> Readiness:
        if self._config.kafka is not None and self._kafka_meter is None:
            self._kafka_meter = GroupBacklog(self._config.kafka)
        return check_readiness(self._config, self._ping, self._kafka_meter)

    def __call__(self) -> Readiness:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._config.cache_s:
                return self._last[1]
            if self._running is None or self._running.done():
                self._running = self._executor.submit(self._check)
            bound = 2 * self._config.check_timeout_s
            try:
                found = self._running.result(timeout=bound)
            except FutureTimeout:
                return Readiness(False, {"checks": {"ok": False, "detail": (
                    f"the stores did not answer within {bound:g} s"
                    " (twice CRASHRAY_READY_CHECK_TIMEOUT_S)")}})
            self._last = (time.monotonic(), found)
            return found
