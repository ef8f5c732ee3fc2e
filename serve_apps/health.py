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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from storage.health import queue_health


@dataclass(frozen=True)
class HealthConfig:
    postgres_url: str
    clickhouse_dsn: str
    max_queue_age_s: float
    check_timeout_s: float
    cache_s: float
    #: Waiting items counted at most (CRASHRAY_METRICS_QUEUE_COUNT_CAP, as the sampler).
    queue_count_cap: int = 100_000


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]]

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "unready", "checks": self.checks}


def check_readiness(config: HealthConfig, clickhouse_ping: Callable[[], bool]) -> Readiness:
    """Ask each store once; a check that raises or times out is a failed check with its
    reason, never an error of the endpoint."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        queue = queue_health(config.postgres_url, config.check_timeout_s,
                             config.queue_count_cap)
        checks["postgres"] = {"ok": True}
        fresh = queue.oldest_age_s < config.max_queue_age_s
        checks["queue"] = {"ok": fresh, "oldest_age_s": round(queue.oldest_age_s, 3),
                           "backlog": queue.waiting_items}
        if not fresh:
            checks["queue"]["detail"] = (
                f"the oldest queued item has waited {queue.oldest_age_s:.0f} s, over"
                f" CRASHRAY_READY_MAX_QUEUE_AGE_S ({config.max_queue_age_s:g} s): consumers"
                " are down or behind")
    except Exception as exc:  # any failure to answer is the check's result
        checks["postgres"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}".strip()}
        checks["queue"] = {"ok": False, "detail": "unknown: PostgreSQL did not answer"}
    try:
        answered = clickhouse_ping()
        checks["clickhouse"] = {"ok": answered} | (
            {} if answered else {"detail": "ClickHouse did not answer the ping in time"})
    except Exception as exc:
        checks["clickhouse"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return Readiness(all(c["ok"] for c in checks.values()), checks)


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

    def __call__(self) -> Readiness:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._config.cache_s:
                return self._last[1]
            if self._running is None or self._running.done():
                self._running = self._executor.submit(check_readiness, self._config,
                                                      self._ping)
            bound = 2 * self._config.check_timeout_s
            try:
                found = self._running.result(timeout=bound)
            except FutureTimeout:
                return Readiness(False, {"checks": {"ok": False, "detail": (
                    f"the stores did not answer within {bound:g} s"
                    " (twice CRASHRAY_READY_CHECK_TIMEOUT_S)")}})
            self._last = (time.monotonic(), found)
            return found
