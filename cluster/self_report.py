"""Self-reporting: Crashray sends its own exceptions with sentry-sdk to a project on itself,
on another Crashray, or on Sentry (``CRASHRAY_SELF_DSN``; off by default).

Which processes: every Ray worker of the instance (the Serve replicas of ingest, which also
serves the dashboard's pages, and of the API; consumers, the notifier, shards, the sampler,
or on one node the process they share) through Ray's
``worker_process_setup_hook`` (``setup_worker``, set in the runtime environment that
``cluster/runtime.py`` gives ``ray.init`` when a self DSN is configured), and the driver
itself (``crashray up`` / ``deploy``). What is reported: unhandled exceptions and log
records at ERROR and above (sentry-sdk's default logging integration), sampled
(``CRASHRAY_SELF_SAMPLE_RATE``) and capped per process
(``CRASHRAY_SELF_MAX_EVENTS_PER_MINUTE``). Only sentry-sdk's default integrations are
used: the auto-enabling ones (FastAPI, Starlette, Ray, …) would wrap the ingest path.

Never recursing. When the self DSN points at this same instance, a report of an error
raised while ingesting would go into the ingest that is failing, fail there again and be
reported again. So ``before_send`` drops an event, before it is queued for sending, when:

* it was captured inside ``ingesting()`` (a context variable), or
* its logger is one of the ingest path's (``INGEST_LOGGERS``), or
* a frame of its exception belongs to an ingest module (``INGEST_MODULES``).

With a DSN pointing elsewhere those are reported like any other error. Whatever the DSN,
the per-process cap bounds what a repeating fault sends, and a transport failure (the
receiver down, refusing, slow) never raises: sentry-sdk sends from its own background
thread, logs the failure on its own logger (which the logging integration ignores), and
waits at most ``SHUTDOWN_TIMEOUT_S`` at exit.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import urlsplit

log = logging.getLogger("crashray.self_report")

#: The environment variable carrying ``SelfReportConfig`` (JSON) to Ray's workers; set by
#: ``runtime_env`` only, never by hand (the settings are CRASHRAY_SELF_*).
CONFIG_ENV: Final = "CRASHRAY_INTERNAL_SELF_REPORT"
#: Ray calls this in every worker process before it runs anything.
SETUP_HOOK: Final = "cluster.self_report.setup_worker"
#: Loggers of the ingest path (serve_apps/ingest*.py, storage/handoff.py, the Kafka
#: hand-off, the rate limiter ingest asks).
INGEST_LOGGERS: Final = frozenset({"crashray.ingest", "crashray.handoff", "crashray.kafka",
                                   "crashray.rate_limit"})
#: Module prefixes of the ingest path, matched against the frames of a captured exception.
INGEST_MODULES: Final = ("serve_apps.ingest", "storage.handoff", "storage.kafka",
                         "actors.rate_limit")
#: Seconds sentry-sdk waits at exit for what it has not sent (a receiver that is down must
#: not hold up a shutdown).
SHUTDOWN_TIMEOUT_S: Final = 2.0

_ingesting: contextvars.ContextVar[bool] = contextvars.ContextVar("crashray_ingesting",
                                                                  default=False)


@dataclass(frozen=True)
class SelfReportConfig:
    dsn: str
    sample_rate: float
    max_events_per_minute: int
    #: The DSN points at this instance: drop what the ingest path raises.
    guard_ingest: bool
    environment: str = "production"


def dsn_points_at(dsn: str, base_urls: list[str]) -> bool:
    """Whether ``dsn`` names a host and port among ``base_urls`` (this instance's, as SDKs
    and the machine itself reach it; loopback names count as one)."""
    loopback = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}

    def where(url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return ("loopback" if host in loopback else host, port)

    return where(dsn) in {where(u) for u in base_urls}


def config_for(settings: Any) -> SelfReportConfig | None:
    """The self-report configuration of ``settings`` (cluster/settings.py); None when
    ``CRASHRAY_SELF_DSN`` is unset."""
    if not settings.self_dsn:
        return None
    base_urls = [settings.base_url(), f"http://127.0.0.1:{settings.port}"]
    return SelfReportConfig(settings.self_dsn, settings.self_sample_rate,
                            settings.self_max_events_per_minute,
                            dsn_points_at(settings.self_dsn, base_urls))


def runtime_env(config: SelfReportConfig | None) -> dict[str, Any]:
    """What ``ray.init(runtime_env=…)`` needs so every worker reports (empty when off)."""
    if config is None:
        return {}
    return {"worker_process_setup_hook": SETUP_HOOK,
            "env_vars": {CONFIG_ENV: json.dumps(asdict(config))}}


# --- deciding (pure) -----------------------------------------------------------------------

@contextmanager
def ingesting() -> Iterator[None]:
    """Mark the code inside as the ingest path: nothing it raises is self-reported when
    the self DSN points at this instance."""
    token = _ingesting.set(True)
    try:
        yield
    finally:
        _ingesting.reset(token)


def from_ingest(event: Mapping[str, Any], in_ingest_context: bool) -> bool:
    """Whether ``event`` (sentry-sdk's event dict) comes from the ingest path."""
    if in_ingest_context or event.get("logger") in INGEST_LOGGERS:
        return True
    for exception in (event.get("exception") or {}).get("values") or ():
        for frame in (exception.get("stacktrace") or {}).get("frames") or ():
            module = frame.get("module") or ""
            if module.startswith(INGEST_MODULES):
                return True
    return False


class MinuteCap:
    """At most ``per_minute`` events in any minute (a token bucket refilled continuously);
    ``clock`` is injectable for tests."""

    def __init__(self, per_minute: int, clock: Any = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._at = clock()
        self._lock = threading.Lock()
        self.dropped = 0

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.per_minute,
                               self._tokens + (now - self._at) * self.per_minute / 60.0)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.dropped += 1
            return False


def before_send_for(config: SelfReportConfig, cap: MinuteCap) -> Any:
    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        if config.guard_ingest and from_ingest(event, _ingesting.get()):
            return None
        if not cap.take():
            return None
        event.setdefault("tags", {})["crashray.process"] = _process_name()
        return event
    return before_send


def _process_name() -> str:
    """The Ray actor this process runs (its name or class), else "driver"."""
    try:
        import ray

        if ray.is_initialized():
            context = ray.get_runtime_context()
            name = context.get_actor_name() if context.get_actor_id() else None
            return str(name or context.get_actor_id() or "task")
    except Exception:  # optional side path: a tag only; never fail a report for it
        log.debug("no Ray context for the self-report tag", exc_info=True)
    return "driver"


# --- starting ------------------------------------------------------------------------------
_started: SelfReportConfig | None = None


def start(config: SelfReportConfig | None) -> bool:
    """Initialize sentry-sdk for this process with ``config`` (once; False when off)."""
    global _started
    if config is None or _started is not None:
        return _started is not None
    import sentry_sdk

    sentry_sdk.init(dsn=config.dsn, sample_rate=config.sample_rate,
                    environment=config.environment,
                    before_send=before_send_for(config, MinuteCap(config.max_events_per_minute)),
                    auto_enabling_integrations=False, traces_sample_rate=None,
                    send_default_pii=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                    max_breadcrumbs=20)
    _started = config
    return True


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: start self-reporting from ``CONFIG_ENV``. A
    malformed value is logged and self-reporting stays off; it never stops the worker."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        return
    try:
        config = SelfReportConfig(**json.loads(raw))
    except (ValueError, TypeError):
        log.error("%s is not a self-report configuration; self-reporting is off in this"
                  " process", CONFIG_ENV)
        return
    start(config)
