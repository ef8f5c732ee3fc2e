"""Alert rules as a user sets them up: a real ``crashray up``, rules created through Sentry's
API, events sent by the real ``sentry-sdk``; notifications received by a real local HTTP
server (webhook, Slack-compatible, Sentry's legacy WebHooks plugin) and a real SMTP server
(aiosmtpd)."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.notify import signature_valid
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import free_port

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
FIRST_SEEN = "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"
SECRET = "whsec-e2e"
#: The issue's target: a notification within this long of the event (issue 13).
NOTIFY_WITHIN_S = 5.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A local HTTP server recording every POST (webhooks, Slack-compatible hooks)."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, path: str, count: int, timeout_s: float) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while len(self.on(path)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.on(path))} of {count} POSTs to {path} arrived"
                self.arrived.wait(left)
        return self.on(path)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with found.arrived:
                found.received.append(Received(self.path, dict(self.headers), body,
                                               time.monotonic()))
                found.arrived.notify_all()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield found
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
             ) -> Iterator[CrashrayProcess]:
    running = start_crashray(tmp_path_factory.mktemp("alerts"), free_port(), env={
        "CRASHRAY_SMTP_HOST": "127.0.0.1", "CRASHRAY_SMTP_PORT": str(mailbox.port),
        "CRASHRAY_SMTP_STARTTLS": "false", "CRASHRAY_SMTP_FROM": "alerts@crashray.test",
        "CRASHRAY_PROJECT_SETTINGS_REFRESH_S": "1"})
    try:
        yield running
    finally:
        assert stop_crashray(running) == 0, "".join(running.output[-40:])


def api(c: CrashrayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{c.base_url}/api/0/projects/crashray/default/{path}",
                         headers={"Authorization": f"Bearer {c.token}"}, timeout=30, **kwargs)


def send_python(c: CrashrayProcess, marker: str, error_class: str, count: int = 1) -> float:
    """Send ``count`` events of a new issue; returns when the SDK had sent them."""
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker,
                    str(count), error_class], env={**os.environ, "CRASHRAY_DSN": c.dsn},
                   capture_output=True, text=True, timeout=60, check=True)
    return time.monotonic()


def test_a_new_issue_is_notified_by_webhook_slack_plugin_and_email_within_seconds(
        instance: CrashrayProcess, receiver: Receiver, mailbox: Mailbox) -> None:
    hook = f"http://127.0.0.1:{receiver.port}"
    plugin = api(instance, "PUT", "plugins/webhooks/", json={"urls": f"{hook}/legacy\n"})
    assert plugin.status_code == 200, plugin.text
    rule = api(instance, "POST", "rules/", json={
        "name": "New issues to on-call", "actionMatch": "all", "filterMatch": "all",
        "frequency": 5, "conditions": [{"id": FIRST_SEEN}], "filters": [],
        "actions": [
            {"id": "crashray.actions.webhook", "url": f"{hook}/signed", "secret": SECRET},
            {"id": "crashray.actions.slack", "webhook_url": f"{hook}/slack"},
            {"id": "sentry.rules.actions.notify_event_service.NotifyEventServiceAction",
             "service": "webhooks"},
            {"id": "crashray.actions.email", "to": ["oncall@example.com"]}]})
    assert rule.status_code == 201, rule.text
    time.sleep(1.5)  # the consumers' rule cache (CRASHRAY_PROJECT_SETTINGS_REFRESH_S=1)

    sent_at = send_python(instance, "alert-1", "CardDeclinedForAlerts", count=2)
    signed = receiver.wait_for("/signed", 1, 30)[0]
    legacy = receiver.wait_for("/legacy", 1, 10)[0]
    slack = receiver.wait_for("/slack", 1, 10)[0]
    assert signed.at - sent_at < NOTIFY_WITHIN_S, f"{signed.at - sent_at:.1f} s"

    assert signature_valid(signed.body, SECRET, signed.headers["X-Crashray-Signature"])
    for body in (json.loads(signed.body), json.loads(legacy.body)):
        assert body["project_slug"] == "default" and body["level"] == "error"
        assert body["triggering_rules"] == ["New issues to on-call"]
        assert "CardDeclinedForAlerts" in body["message"] + json.dumps(body["event"])
        assert body["url"].startswith(f"{instance.base_url}/") and body["id"] in body["url"]
    slack_body = json.loads(slack.body)
    assert "CardDeclinedForAlerts" in json.dumps(slack_body)

    deadline = time.monotonic() + 10
    while not mailbox.messages and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(mailbox.messages) == 1
    mail = mailbox.messages[0]
    assert mail["To"] == "oncall@example.com" and "CardDeclinedForAlerts" in mail["Subject"]
    html = next(p for p in mail.walk() if p.get_content_type() == "text/html")
    assert instance.base_url in str(html.get_payload(decode=True))

    # The issue's second event (same batch or not) and a later one: not a new issue.
    send_python(instance, "alert-1b", "CardDeclinedForAlerts")
    time.sleep(3)
    assert len(receiver.on("/signed")) == 1 and len(mailbox.messages) == 1

    log = api(instance, "GET", f"rules/{rule.json()['id']}/deliveries/").json()
    assert sorted(d["status"] for d in log) == ["delivered"] * 4
    assert all(d["attempts"] == 1 for d in log)
    assert SECRET not in json.dumps(log)  # the log hides the secret
