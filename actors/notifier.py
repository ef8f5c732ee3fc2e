"""The notifier: sends queued alert notifications (webhook, Slack, e-mail) and records them.

``Notifier`` (no Ray; tests drive it directly, with an injected clock) runs the loop:
claim due deliveries under a lease (storage/notifications.py) → send each on a small
thread pool, one destination per thread with its own timeout, so a slow or dead
destination holds one slot and never delays the others, nor ingest (deliveries were
queued in the consumer's transaction; nothing here is on the ingest path) → record the
outcome: delivered, retried after an exponential backoff (events/notify.py
``next_step``), or failed after ``max_attempts`` with the last error and response code,
which also counts against the destination's health (the project's warnings).

It wakes on PostgreSQL ``NOTIFY crashray_notifications`` and polls every ``idle_poll_s``
for due retries. A notifier that dies leaves its claims leased; after ``lease_s`` another
(or the restarted actor: ``max_restarts=-1``) sends them. The lease must outlast a send's
timeout so a send in progress is never taken over.

``NotifierActor`` is the Ray actor (named ``crashray-notifier``) that runs a ``Notifier``
in a thread started by its constructor; ``start_notifier`` places it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import logging
import smtplib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import orjson
import psycopg
import ray

from actors.placement import LOCAL, Placement
from cluster import metrics
from events.notify import (
    Destination,
    EmailContent,
    InvalidNotifySettings,
    SendOutcome,
    email_message,
    http_outcome,
    next_step,
    signature_headers,
    slack_message,
    webhook_body,
)
from storage import notifications as store
from storage.postgres import connect

if TYPE_CHECKING:
    from cluster.settings import Settings

log = logging.getLogger(__name__)

#: The notifier actor's name (namespace ``crashray``).
NOTIFIER_NAME: Final = "crashray-notifier"
#: Bytes of a refusing receiver's answer kept as the delivery's ``last_error``.
ERROR_BODY_BYTES: Final = 1024
#: Rows one retention sweep deletes at most (the next sweep continues).
PRUNE_BATCH_ROWS: Final = 10_000
USER_AGENT: Final = "Crashray-Notifier/1"
#: Header carrying the delivery id: the same on every retry, so receivers can drop a
#: repeat (delivery is at least once).
DELIVERY_HEADER: Final = "X-Crashray-Delivery"
#: Destination kinds (events/notify.py ``Destination.parse``): the metrics' ``kind`` tag.
DESTINATION_KINDS: Final = frozenset({"webhook", "slack", "email"})

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    user: str | None = None
    password: str | None = None
    sender: str = "crashray@localhost"
    starttls: bool = True
    ssl: bool = False


@dataclass(frozen=True)
class NotifierConfig:
    """The notifier's settings (CRASHRAY_NOTIFY_* and CRASHRAY_SMTP_* in
    cluster/settings.py, with units and reasons)."""

    postgres_url: str
    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 300.0
    lease_s: float = 60.0
    concurrency: int = 8
    idle_poll_s: float = 1.0
    retention_days: float = 14.0
    failed_retention_days: float = 30.0
    prune_interval_s: float = 600.0
    failure_warning_threshold: int = 3
    #: None: e-mail actions fail, naming CRASHRAY_SMTP_HOST.
    smtp: SmtpConfig | None = None

    def __post_init__(self) -> None:
        if self.lease_s <= self.timeout_s:
            raise InvalidNotifySettings(
                f"CRASHRAY_NOTIFY_LEASE_S ({self.lease_s}) must exceed CRASHRAY_NOTIFY_TIMEOUT_S"
                f" ({self.timeout_s}): another notifier would take over a send in progress")

    @classmethod
    def from_settings(cls, s: Settings, postgres_url: str) -> NotifierConfig:
        smtp = None if not s.smtp_host else SmtpConfig(
            s.smtp_host, s.smtp_port, s.smtp_user, s.smtp_password, s.smtp_from,
            s.smtp_starttls, s.smtp_ssl)
        return cls(postgres_url=postgres_url, timeout_s=s.notify_timeout_s,
                   max_attempts=s.notify_max_attempts, backoff_base_s=s.notify_backoff_base_s,
                   backoff_cap_s=s.notify_backoff_cap_s, lease_s=s.notify_lease_s,
                   concurrency=s.notify_concurrency, idle_poll_s=s.notify_idle_poll_s,
                   retention_days=s.notify_retention_days,
                   failed_retention_days=s.notify_failed_retention_days,
                   prune_interval_s=s.notify_prune_interval_s,
                   failure_warning_threshold=s.notify_failure_warning_threshold, smtp=smtp)


# --- sending (third-party and OS errors become a SendOutcome here, and only here) ---------

def post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> SendOutcome:
    """POST ``body`` as JSON to ``url``; no redirects followed. ``timeout_s`` bounds the
    connection and each read (a receiver that sleeps is cut off after it)."""
    parts = urlsplit(url)
    connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        all_headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    conn = connection_class(parts.hostname or "", parts.port, timeout=timeout_s)
    # The socket timeout bounds each read; the watchdog bounds the whole exchange, so a
    # receiver that trickles its answer a byte at a time cannot outlast the lease.
    cut = threading.Event()
    watchdog = threading.Timer(timeout_s, _cut, args=(conn, cut))
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers=all_headers)
        response = conn.getresponse()
        excerpt = response.read(ERROR_BODY_BYTES).decode("utf-8", errors="replace")
        return http_outcome(response.status, excerpt)
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, TimeoutError) or cut.is_set():
            return SendOutcome(False, None, f"no answer within {timeout_s} s"
                               " (CRASHRAY_NOTIFY_TIMEOUT_S)")
        return SendOutcome(False, None, f"{type(exc).__name__}: {exc}")
    finally:
        watchdog.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """Interrupt a request past its deadline: shutting the socket down wakes the thread
    blocked reading it (closing it from another thread would not)."""
    cut.set()
    if conn.sock is not None:
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


def send_email(smtp: SmtpConfig | None, to: Sequence[str], content: EmailContent,
               timeout_s: float) -> SendOutcome:
    """Send the alert e-mail through the configured SMTP server. SMTP 4xx answers and
    connection errors are retried; 5xx answers are not."""
    if smtp is None:
        return SendOutcome(False, None, "e-mail is not configured: set CRASHRAY_SMTP_HOST"
                           " (and CRASHRAY_SMTP_PORT, CRASHRAY_SMTP_FROM)", retryable=False)
    message = EmailMessage()
    message["Subject"] = content.subject
    message["From"] = smtp.sender
    message["To"] = ", ".join(to)
    message.set_content(content.text)
    message.add_alternative(content.html, subtype="html")
    client_class = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
    try:
        with client_class(smtp.host, smtp.port, timeout=timeout_s) as client:
            if smtp.starttls and not smtp.ssl:
                client.starttls()
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)
        return SendOutcome(True, 250)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        return SendOutcome(False, max(codes, default=None), f"recipients refused: {exc.recipients}",
                           retryable=any(400 <= c < 500 for c in codes))
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return SendOutcome(False, exc.smtp_code, f"SMTP {exc.smtp_code}: {reply}",
                           retryable=exc.smtp_code < 500)
    except TimeoutError:
        return SendOutcome(False, None, f"SMTP server gave no answer within {timeout_s} s")
    except (smtplib.SMTPException, OSError) as exc:
        return SendOutcome(False, None, f"{type(exc).__name__}: {exc}")


def destination_kind(destination: str) -> str:
    """The ``kind`` tag of a delivery's metrics: its destination's kind, or "invalid"
    for a row no sender takes (it fails, visibly, in ``Notifier._deliver``)."""
    kind = destination.partition(":")[0]
    return kind if kind in DESTINATION_KINDS else "invalid"


# --- the loop ------------------------------------------------------------------------------

class Notifier:
    """Claims, sends and records deliveries. ``clock`` None: PostgreSQL's clock decides
    what is due and when leases end (the same for every notifier); a test passes one."""

    def __init__(self, config: NotifierConfig, clock: Clock | None = None) -> None:
        self._config = config
        self._clock = clock
        self._conn = connect(config.postgres_url, autocommit=True)
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="notify")
        self._local = threading.local()
        self._thread_conns: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._inflight = 0
        self._slot_freed = threading.Event()
        self._next_prune = 0.0
        #: Attempts by outcome ("delivered", "pending", "failed", "lost_claim", "error").
        self.counts: Counter[str] = Counter()

    def _db_now(self) -> dt.datetime | None:
        return self._clock() if self._clock is not None else None

    def _wall_now(self) -> dt.datetime:
        return self._clock() if self._clock is not None else dt.datetime.now(dt.UTC)

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def run_once(self) -> int:
        """Claim as many due deliveries as there are free sending slots and start them;
        returns how many were claimed."""
        with self._lock:
            free = self._config.concurrency - self._inflight
        claimed = store.claim(self._conn, free, self._config.lease_s, self._db_now(),
                              self._config.max_attempts)
        with self._lock:
            self._inflight += len(claimed)
        for c in claimed:
            self._pool.submit(self._deliver, c)
        return len(claimed)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no send is in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            self._slot_freed.wait(0.05)
            self._slot_freed.clear()
        return self.inflight == 0

    def _deliver(self, claimed: store.ClaimedDelivery) -> None:
        kind = destination_kind(claimed.destination)
        try:
            try:
                started = time.perf_counter()
                outcome = self._send(claimed)
                metrics.observe("crashray_notification_send_seconds",
                                metrics.since(started), kind=kind)
            except Exception as exc:
                # A payload the renderer cannot handle (a bug, or a row written by hand):
                # recorded as a failed attempt, so it ends as a visible failure.
                log.exception("delivery %d could not be rendered", claimed.id)
                outcome = SendOutcome(False, None, f"cannot render the notification:"
                                      f" {type(exc).__name__}: {exc}")
            step = next_step(outcome, claimed.attempts, self._config.max_attempts,
                             self._config.backoff_base_s, self._config.backoff_cap_s)
            if store.record(self._thread_conn(), claimed, outcome, step, self._db_now()):
                self.counts[step.status] += 1
                metrics.inc("crashray_notifications_total", kind=kind, outcome=step.status)
            else:
                self.counts["lost_claim"] += 1
                metrics.inc("crashray_notifications_total", kind=kind, outcome="lost_claim")
                log.warning("delivery %d: lease ran out before its outcome was recorded;"
                            " another notifier has it", claimed.id)
        except Exception:
            # A delivery must not end the sending thread: its row stays leased and is
            # claimed again after the lease; logged and counted.
            self.counts["error"] += 1
            metrics.inc("crashray_notifications_total", kind=kind, outcome="error")
            log.exception("delivery %d failed to send or record", claimed.id)
            self._drop_thread_conn()
        finally:
            with self._lock:
                self._inflight -= 1
            self._slot_freed.set()

    def _send(self, c: store.ClaimedDelivery) -> SendOutcome:
        destination = Destination.parse(c.destination)
        timeout_s = self._config.timeout_s
        if destination.kind == "email":
            return send_email(self._config.smtp, destination.addresses(),
                              email_message(c.payload), timeout_s)
        if destination.kind == "slack":
            channel = c.action.get("channel")
            body = orjson.dumps(slack_message(c.payload, channel if isinstance(channel, str)
                                              else None))
            return post_json(destination.target, body, {DELIVERY_HEADER: str(c.id)}, timeout_s)
        body = orjson.dumps(webhook_body(c.payload))
        secret = c.action.get("secret")
        headers = {DELIVERY_HEADER: str(c.id), **signature_headers(
            body, secret if isinstance(secret, str) else None,
            int(self._wall_now().timestamp()))}
        return post_json(destination.target, body, headers, timeout_s)

    def _thread_conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self._config.postgres_url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._thread_conns.append(conn)
        return conn

    def _drop_thread_conn(self) -> None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def prune_if_due(self) -> int:
        """Every ``prune_interval_s``: delete delivered rows past ``retention_days`` and
        failed ones past ``failed_retention_days``."""
        if time.monotonic() < self._next_prune:
            return 0
        self._next_prune = time.monotonic() + self._config.prune_interval_s
        now = self._wall_now()
        return store.prune(self._conn,
                           now - dt.timedelta(days=self._config.retention_days),
                           now - dt.timedelta(days=self._config.failed_retention_days),
                           PRUNE_BATCH_ROWS)

    def serve(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set: claim, send, wait for a NOTIFY, a free slot or the
        poll interval. PostgreSQL outages are waited out."""
        listener: psycopg.Connection[Any] | None = None
        while not stop.is_set():
            try:
                if listener is None or listener.closed:
                    listener = store.listen(self._config.postgres_url)
                self.prune_if_due()
                with self._lock:
                    free = self._config.concurrency - self._inflight
                claimed = self.run_once()
                if free == 0:
                    self._slot_freed.wait(self._config.idle_poll_s)
                    self._slot_freed.clear()
                elif claimed < free:
                    for _ in listener.notifies(timeout=self._config.idle_poll_s,
                                               stop_after=1):
                        pass
            except psycopg.OperationalError:
                self.counts["error"] += 1
                log.exception("notifier lost PostgreSQL; reconnecting")
                stop.wait(1.0)
                if listener is not None:
                    listener.close()
                listener = None
                self._reconnect()
        if listener is not None:
            listener.close()

    def _reconnect(self) -> None:
        self._conn.close()
        try:
            self._conn = connect(self._config.postgres_url, autocommit=True)
        except psycopg.OperationalError:
            log.warning("PostgreSQL still unreachable; will retry")

    def close(self) -> None:
        """Finish the sends in flight, then close every connection."""
        self._pool.shutdown(wait=True)
        self._conn.close()
        with self._lock:
            for conn in self._thread_conns:
                conn.close()


class NotifierService:
    """Crashray's notifier; starts sending as soon as it is constructed (also after Ray
    restarts it). An actor of its own (``NotifierActor``) or a part of the shared process
    (actors/shared_process.py)."""

    def __init__(self, config: NotifierConfig) -> None:
        metrics.record_actor_start("notifier")
        self._notifier = Notifier(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._notifier.serve, args=(self._stop,),
                                        name="notifier", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {"inflight": self._notifier.inflight, **self._notifier.counts,
                "node_id": context.get_node_id(),
                # The ``WorkerId`` label of this process's series on Ray's metrics endpoint.
                "worker_id": context.get_worker_id()}

    def stop(self) -> None:
        """Finish the sends in flight, then stop (a clean shutdown)."""
        self._stop.set()
        self._thread.join(timeout=60)
        self._notifier.close()


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)  # type: ignore[call-overload]
class NotifierActor(NotifierService):
    pass


def start_notifier(config: NotifierConfig, placement: Placement = LOCAL,
                   name: str = NOTIFIER_NAME) -> Any:
    """The notifier actor, named ``name`` (a test may run one of its own). It keeps nothing
    of its own (the outbox is in PostgreSQL), so it is placed like a pool actor: anywhere."""
    return NotifierActor.options(**placement.pool(name)).remote(config)  # type: ignore[attr-defined]
