"""Alert notifications end to end without Ray: the deliveries outbox in a real PostgreSQL
(the real migrations), a ``Notifier`` sending to a real local HTTP server and a real SMTP
server (aiosmtpd), recording what happened."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import psycopg
import pytest
from aiosmtpd.controller import Controller

from actors.notifier import DELIVERY_HEADER, Notifier, NotifierConfig, SmtpConfig, post_json
from events.notify import (
    EMAIL_ACTION,
    NOTIFY_EVENT_SERVICE_ACTION,
    SIGNATURE_HEADER,
    SLACK_ACTION,
    WEBHOOK_ACTION,
    NotifiedIssue,
    NotifiedProject,
    delivery_payload,
    signature_valid,
)
from storage import notifications as store
from storage import postgres
from storage.scope import ProjectScope
from tests.support import free_port, scratch_database, wait_until

# --- a real webhook receiver ------------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A local HTTP server. ``script[path]``: what the next requests to ``path`` get, in
    order, each ``(status, sleep_s)``; then 200 at once."""

    port: int
    script: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(Received(self.path, dict(self.headers), body,
                                               time.monotonic()))
                steps = state.script.get(self.path) or []
                status, sleep_s = steps.pop(0) if steps else (200, 0.0)
            time.sleep(sleep_s)
            with contextlib.suppress(OSError):  # the notifier may have given up waiting
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- a real SMTP server -----------------------------------------------------------------

class MailBox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[MailBox, int]]:
    box, port = MailBox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


# --- database, tenants, notifier ----------------------------------------------------------

@dataclass(frozen=True)
class Db:
    url: str
    project: ProjectScope
    other_org_project: ProjectScope


@pytest.fixture(scope="module")
def db() -> Iterator[Db]:
    with scratch_database("crashray_notify") as url:
        postgres.migrate(url)
        with psycopg.connect(url) as conn:
            scopes = []
            for slug in ("acme", "rival"):
                org = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                                   " RETURNING id", (slug, slug)).fetchone()
                assert org is not None
                project = conn.execute(
                    "INSERT INTO projects (organization_id, slug, name) VALUES (%s, 'backend',"
                    " 'Backend') RETURNING id", (org[0],)).fetchone()
                assert project is not None
                scopes.append(ProjectScope(int(org[0]), int(project[0])))
        yield Db(url, scopes[0], scopes[1])


@pytest.fixture(autouse=True)
def empty_outbox(db: Db) -> None:
    with psycopg.connect(db.url) as conn:
        conn.execute("TRUNCATE notification_deliveries, notification_destination_health,"
                     " project_webhook_plugins")


def config(db: Db, **overrides: Any) -> NotifierConfig:
    return replace(NotifierConfig(
        postgres_url=db.url, timeout_s=0.5, max_attempts=5, backoff_base_s=0.2,
        backoff_cap_s=0.4, lease_s=3.0, concurrency=4, idle_poll_s=0.1,
        failure_warning_threshold=3), **overrides)


@contextlib.contextmanager
def running(*notifiers: Notifier) -> Iterator[None]:
    stop = threading.Event()
    threads = [threading.Thread(target=n.serve, args=(stop,), daemon=True) for n in notifiers]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for n in notifiers:
            n.close()


def new_delivery(scope: ProjectScope, action: dict[str, Any], rule_id: int | None = 1,
                 title: str = "ValueError: bad input") -> store.NewDelivery:
    event = {"event_id": uuid.uuid4().hex, "level": "error", "environment": "production",
             "tags": {"environment": "production"}, "message": title}
    payload = delivery_payload(
        event=event, issue=NotifiedIssue(id=42, title=title, culprit="app.pay", level="error"),
        project=NotifiedProject(scope.id, "backend", "Backend", "acme"),
        rule_names=["New issues"], base_url="http://crashray.test")
    return store.NewDelivery(scope.organization_id, scope.id, rule_id, 42,
                             str(event["event_id"]), action, payload)


def enqueue(db: Db, *deliveries: store.NewDelivery) -> list[int]:
    with psycopg.connect(db.url) as conn, conn.transaction():
        return store.enqueue(conn, deliveries)


def log(db: Db, scope: ProjectScope | None = None, rule_id: int | None = None
        ) -> dict[int, store.Delivery]:
    with psycopg.connect(db.url) as conn:
        return {d.id: d for d in store.deliveries(conn, scope or db.project, rule_id, 1000)}


def settled(db: Db, ids: list[int]) -> Callable[[], dict[int, store.Delivery] | None]:
    def check() -> dict[int, store.Delivery] | None:
        rows = log(db)
        done = all(rows[i].status in ("delivered", "failed") for i in ids)
        return rows if done else None
    return check


# --- tests --------------------------------------------------------------------------------

def test_webhook_delivered_once_signed_and_logged(db: Db) -> None:
    with receiver() as server:
        action = {"id": WEBHOOK_ACTION, "url": server.url("/hook"), "secret": "s3cret"}
        [delivery_id] = enqueue(db, new_delivery(db.project, action))
        with running(Notifier(config(db))):
            rows = wait_until(settled(db, [delivery_id]), 10, "the delivery")
            time.sleep(0.5)  # time for a (wrong) second send
        [request] = server.to("/hook")
    row = rows[delivery_id]
    assert (row.status, row.attempts, row.last_response_code) == ("delivered", 1, 200)
    assert row.action["secret"] == store.REDACTED
    assert signature_valid(request.body, "s3cret", request.headers[SIGNATURE_HEADER])
    assert request.headers[DELIVERY_HEADER] == str(delivery_id)
    body = orjson.loads(request.body)
    assert body["id"] == "42" and body["project_slug"] == "backend"
    assert body["url"] == "http://crashray.test/organizations/acme/issues/42/"
    assert body["event"]["tags"] == [["environment", "production"]]


def test_retried_after_500s_with_backoff_then_delivered(db: Db) -> None:
    with receiver() as server:
        server.script["/flaky"] = [(500, 0.0), (503, 0.0)]
        [delivery_id] = enqueue(db, new_delivery(
            db.project, {"id": WEBHOOK_ACTION, "url": server.url("/flaky")}))
        with running(Notifier(config(db))):
            rows = wait_until(settled(db, [delivery_id]), 10, "the delivery")
        times = [r.at for r in server.to("/flaky")]
    assert rows[delivery_id].status == "delivered"
    assert rows[delivery_id].attempts == 3 == len(times)
    # Backoff 0.2 s, then 0.4 s (clock of PostgreSQL vs the server's: a little slack).
    assert times[1] - times[0] >= 0.15 and times[2] - times[1] >= 0.35
    assert rows[delivery_id].last_error == "HTTP 503: no"


def test_timeout_retried_then_delivered(db: Db) -> None:
    with receiver() as server:
        server.script["/slow-once"] = [(200, 1.5)]
        [delivery_id] = enqueue(db, new_delivery(
            db.project, {"id": WEBHOOK_ACTION, "url": server.url("/slow-once")}))
        with running(Notifier(config(db))):
            rows = wait_until(settled(db, [delivery_id]), 10, "the delivery")
    row = rows[delivery_id]
    assert (row.status, row.attempts) == ("delivered", 2)
    assert row.last_error is not None and "no answer within 0.5 s" in row.last_error


def test_failed_after_max_attempts_recorded_and_project_warned(db: Db) -> None:
    with receiver() as server:
        server.script["/down"] = [(500, 0.0)] * 10
        url = server.url("/down")
        [delivery_id] = enqueue(db, new_delivery(db.project, {"id": WEBHOOK_ACTION, "url": url}))
        with running(Notifier(config(db, max_attempts=3))):
            rows = wait_until(settled(db, [delivery_id]), 10, "the delivery")
            time.sleep(0.5)
        assert len(server.to("/down")) == 3
    row = rows[delivery_id]
    assert (row.status, row.attempts, row.last_response_code) == ("failed", 3, 500)
    assert row.last_error == "HTTP 500: no"
    with psycopg.connect(db.url) as conn:
        [warning] = store.destination_warnings(conn, db.project, threshold=3)
        assert (warning.destination, warning.consecutive_failures) == (f"webhook:{url}", 3)
        assert warning.last_response_code == 500
        assert store.destination_warnings(conn, db.other_org_project, threshold=1) == []
        crossed = ProjectScope(db.other_org_project.organization_id, db.project.id)
        assert store.destination_warnings(conn, crossed, threshold=1) == []


def test_a_success_clears_the_destination_warning(db: Db) -> None:
    with receiver() as server:
        server.script["/recovers"] = [(500, 0.0)] * 3
        action = {"id": WEBHOOK_ACTION, "url": server.url("/recovers")}
        [first] = enqueue(db, new_delivery(db.project, action))
        notifier = Notifier(config(db, max_attempts=3))
        with running(notifier):
            wait_until(settled(db, [first]), 10, "the failing delivery")
            with psycopg.connect(db.url) as conn:
                assert store.destination_warnings(conn, db.project, 3)
            [second] = enqueue(db, new_delivery(db.project, action))
            wait_until(settled(db, [second]), 10, "the next delivery")
    with psycopg.connect(db.url) as conn:
        assert store.destination_warnings(conn, db.project, 1) == []


def test_two_notifiers_never_send_a_delivery_twice(db: Db) -> None:
    with receiver() as server:
        action = {"id": WEBHOOK_ACTION, "url": server.url("/many")}
        ids = enqueue(db, *[new_delivery(db.project, action) for _ in range(40)])
        with running(Notifier(config(db)), Notifier(config(db))):
            rows = wait_until(settled(db, ids), 20, "40 deliveries")
            time.sleep(0.5)
        sent = [int(r.headers[DELIVERY_HEADER]) for r in server.to("/many")]
    assert sorted(sent) == sorted(ids)
    assert {rows[i].attempts for i in ids} == {1}


def test_a_killed_notifiers_claim_is_sent_once_after_the_lease(db: Db) -> None:
    with receiver() as server:
        [delivery_id] = enqueue(db, new_delivery(
            db.project, {"id": WEBHOOK_ACTION, "url": server.url("/after-lease")}))
        with psycopg.connect(db.url, autocommit=True) as conn:
            # The notifier that claims this and is "killed": it never sends nor records.
            [stale] = store.claim(conn, 10, lease_s=3.0)
        live = Notifier(config(db))
        assert live.run_once() == 0  # the lease is live: nobody else takes it
        later = Notifier(config(db), clock=lambda: dt.datetime.now(dt.UTC)
                         + dt.timedelta(seconds=4))
        assert later.run_once() == 1
        assert later.wait_idle(5)
        assert later.run_once() == 0
        live.close()
        later.close()
        assert len(server.to("/after-lease")) == 1
    row = log(db)[delivery_id]
    assert (row.status, row.attempts) == ("delivered", 2)
    with psycopg.connect(db.url, autocommit=True) as conn:
        # The killed notifier coming back to record its stale claim changes nothing.
        from events.notify import NextStep, SendOutcome

        assert not store.record(conn, stale, SendOutcome(False, 500, "late"),
                                NextStep("pending", 1.0))
    assert log(db)[delivery_id].status == "delivered"


def test_slow_destination_does_not_delay_a_fast_one(db: Db) -> None:
    with receiver() as server:
        server.script["/slow"] = [(200, 2.0)]
        slow, fast = enqueue(db, new_delivery(db.project, {"id": WEBHOOK_ACTION,
                                                           "url": server.url("/slow")}),
                             new_delivery(db.project, {"id": WEBHOOK_ACTION,
                                                       "url": server.url("/fast")}))
        with running(Notifier(config(db, timeout_s=3.0, lease_s=6.0))):
            rows = wait_until(settled(db, [fast]), 5, "the fast delivery")
            assert rows[fast].status == "delivered"
            assert rows[slow].status == "sending"  # still waiting for /slow's answer
            rows = wait_until(settled(db, [slow]), 10, "the slow delivery")
    assert rows[slow].status == "delivered"


def test_delivery_log_is_tenant_scoped_and_per_rule(db: Db) -> None:
    action = {"id": WEBHOOK_ACTION, "url": "http://127.0.0.1:9/never"}
    mine = enqueue(db, new_delivery(db.project, action, rule_id=1),
                   new_delivery(db.project, action, rule_id=2))
    enqueue(db, new_delivery(db.other_org_project, action, rule_id=1))
    assert sorted(log(db)) == sorted(mine)
    assert list(log(db, rule_id=2)) == [mine[1]]
    crossed = ProjectScope(db.other_org_project.organization_id, db.project.id)
    assert log(db, crossed) == {}
    with psycopg.connect(db.url) as conn:
        assert store.delivery(conn, crossed, mine[0]) is None
        assert store.delivery(conn, db.project, mine[0]) is not None


def test_webhook_plugin_urls_each_get_the_legacy_payload(db: Db) -> None:
    with receiver() as server:
        with psycopg.connect(db.url) as conn:
            plugin = store.set_webhook_plugin(conn, db.project,
                                              urls=[server.url("/a"), server.url("/b")])
            assert plugin.urls == (server.url("/a"), server.url("/b"))
            # Another organization cannot set this project's URLs.
            crossed = ProjectScope(db.other_org_project.organization_id, db.project.id)
            store.set_webhook_plugin(conn, crossed, urls=["http://evil.example/"])
            assert store.webhook_plugin(conn, db.project).urls == plugin.urls
        ids = enqueue(db, new_delivery(db.project, {"id": NOTIFY_EVENT_SERVICE_ACTION,
                                                    "service": "webhooks"}))
        assert len(ids) == 2
        with running(Notifier(config(db))):
            wait_until(settled(db, ids), 10, "both plugin URLs")
        for path in ("/a", "/b"):
            [request] = server.to(path)
            assert orjson.loads(request.body)["triggering_rules"] == ["New issues"]


def test_service_action_without_urls_is_a_visible_failure(db: Db) -> None:
    [delivery_id] = enqueue(db, new_delivery(db.project, {"id": NOTIFY_EVENT_SERVICE_ACTION,
                                                          "service": "webhooks"}))
    row = log(db)[delivery_id]
    assert row.status == "failed"
    assert row.last_error is not None and "plugins/webhooks/" in row.last_error
    with psycopg.connect(db.url) as conn:
        [warning] = store.destination_warnings(conn, db.project, threshold=1)
    assert warning.destination == f"action:{NOTIFY_EVENT_SERVICE_ACTION}"


def test_slack_message_posted(db: Db) -> None:
    with receiver() as server:
        [delivery_id] = enqueue(db, new_delivery(
            db.project, {"id": SLACK_ACTION, "webhook_url": server.url("/slack"),
                         "channel": "#alerts"}))
        with running(Notifier(config(db))):
            wait_until(settled(db, [delivery_id]), 10, "the Slack message")
        [request] = server.to("/slack")
    message = orjson.loads(request.body)
    assert message["channel"] == "#alerts"
    assert message["text"] == "[backend] ValueError: bad input"
    assert message["attachments"][0]["title_link"] == (
        "http://crashray.test/organizations/acme/issues/42/")


def test_email_sent_through_smtp_with_text_and_escaped_html(
        db: Db, smtp_server: tuple[MailBox, int]) -> None:
    box, port = smtp_server
    [delivery_id] = enqueue(db, new_delivery(
        db.project, {"id": EMAIL_ACTION, "to": ["oncall@example.com", "dev@example.com"]},
        title="KeyError: <script>alert(1)</script>"))
    smtp = SmtpConfig("127.0.0.1", port, sender="alerts@crashray.test", starttls=False)
    with running(Notifier(config(db, smtp=smtp))):
        rows = wait_until(settled(db, [delivery_id]), 10, "the e-mail")
    assert rows[delivery_id].status == "delivered"
    [(recipients, message)] = box.messages
    assert recipients == ["oncall@example.com", "dev@example.com"]
    assert message["Subject"] == "[Crashray] backend: KeyError: <script>alert(1)</script>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "http://crashray.test/organizations/acme/issues/42/" in text.get_content()
    assert "<script>" not in html.get_content()
    assert "&lt;script&gt;" in html.get_content()


def test_email_without_smtp_fails_naming_the_setting(db: Db) -> None:
    [delivery_id] = enqueue(db, new_delivery(db.project, {"id": EMAIL_ACTION,
                                                          "to": ["a@example.com"]}))
    with running(Notifier(config(db))):
        rows = wait_until(settled(db, [delivery_id]), 10, "the e-mail")
    assert rows[delivery_id].status == "failed" and rows[delivery_id].attempts == 1
    assert "CRASHRAY_SMTP_HOST" in (rows[delivery_id].last_error or "")


def test_delivered_rows_past_retention_are_pruned(db: Db) -> None:
    with receiver() as server:
        action = {"id": WEBHOOK_ACTION, "url": server.url("/old")}
        [old] = enqueue(db, new_delivery(db.project, action))
        with running(Notifier(config(db))):
            wait_until(settled(db, [old]), 10, "the delivery")
    [pending] = enqueue(db, new_delivery(db.project, {"id": WEBHOOK_ACTION,
                                                      "url": "http://127.0.0.1:9/x"}))
    now = dt.datetime.now(dt.UTC)
    today = Notifier(config(db, retention_days=1), clock=lambda: now)
    assert today.prune_if_due() == 0
    today.close()
    in_two_days = Notifier(config(db, retention_days=1),
                           clock=lambda: now + dt.timedelta(days=2))
    assert in_two_days.prune_if_due() == 1
    in_two_days.close()
    assert list(log(db)) == [pending]


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout() -> None:
    """Each byte comes within the socket timeout, the whole answer never does: the
    request's total time is bounded, so a send never outlasts its lease."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100:
                conn.sendall(bytes([byte]))
                time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    outcome = post_json(f"http://127.0.0.1:{port}/hook", b"{}", {}, timeout_s=0.5)
    elapsed = time.monotonic() - started
    listener.close()
    assert not outcome.delivered and outcome.retryable
    assert outcome.error == "no answer within 0.5 s (CRASHRAY_NOTIFY_TIMEOUT_S)"
    assert elapsed < 1.5


def test_a_delivery_whose_notifiers_keep_dying_ends_failed_not_retried_forever(db: Db) -> None:
    with receiver() as server:
        [delivery_id] = enqueue(db, new_delivery(
            db.project, {"id": WEBHOOK_ACTION, "url": server.url("/crashes")}))
        start = dt.datetime.now(dt.UTC)
        with psycopg.connect(db.url, autocommit=True) as conn:
            for attempt in range(3):  # three notifiers each die holding it
                at = start + dt.timedelta(seconds=10 * attempt)
                assert len(store.claim(conn, 10, 3.0, at, max_attempts=3)) == 1
        after = Notifier(config(db, max_attempts=3),
                         clock=lambda: start + dt.timedelta(seconds=40))
        assert after.run_once() == 0
        after.close()
        assert server.to("/crashes") == []
    row = log(db)[delivery_id]
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error == ("the notifier stopped before recording the outcome of each"
                              " of the 3 attempts")
    with psycopg.connect(db.url) as conn:
        assert store.destination_warnings(conn, db.project, threshold=1)


def test_an_unrenderable_payload_ends_as_a_visible_failure(db: Db) -> None:
    broken = replace(new_delivery(db.project, {"id": WEBHOOK_ACTION,
                                               "url": "http://127.0.0.1:9/x"}), payload={})
    [delivery_id] = enqueue(db, broken)
    with running(Notifier(config(db, max_attempts=2))):
        rows = wait_until(settled(db, [delivery_id]), 10, "the broken delivery")
    assert (rows[delivery_id].status, rows[delivery_id].attempts) == ("failed", 2)
    assert (rows[delivery_id].last_error or "").startswith("cannot render the notification")
