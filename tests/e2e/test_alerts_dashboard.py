"""The Alerts page in a real browser (Debian's Chromium driven by Playwright) against its own
``crashray up`` (the notifier retries fast here, so a failing destination shows within
seconds): WebHooks plugin URLs, a rule made with the editor (a refused body shown next to
the field it names), a test notification followed to "delivered", a real event from the
Python sentry-sdk notifying a real local HTTP server with Sentry's legacy webhook payload,
and a destination answering 500 raising the warning on the alerts page and the issue stream.
Screenshots of each step are saved under the test's ``tmp_path``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from events.notify import SIGNATURE_HEADER, signature_valid
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.e2e.test_dashboard import CHROMIUM, needs_chromium, open_page
from tests.support import free_port

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
#: The notifier gives up after 3 attempts 0.2 to 0.5 s apart, and 3 failures in a row at one
#: destination raise the warning: a dead receiver shows within seconds instead of minutes.
NOTIFIER_ENV = {
    "CRASHRAY_NOTIFY_MAX_ATTEMPTS": "3",
    "CRASHRAY_NOTIFY_BACKOFF_BASE_S": "0.2",
    "CRASHRAY_NOTIFY_BACKOFF_CAP_S": "0.5",
    "CRASHRAY_NOTIFY_FAILURE_WARNING_THRESHOLD": "3",
    # A new rule applies to events processed a second later, not ten.
    "CRASHRAY_PROJECT_SETTINGS_REFRESH_S": "1",
}
#: Event → issue → rule → notifier → HTTP server; usually a few seconds.
DELIVERY_TIMEOUT_MS = 45_000
SECRET = "e2e-signing-secret"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server: ``/fail`` answers 500, every other path 200; all is recorded."""
    base_url: str
    received: list[Received] = field(default_factory=list)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, predicate: Any, timeout_s: float = 45) -> Received:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [r for r in self.at(path) if predicate(r)]
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"nothing matching reached {path}: {self.received}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    records: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            records.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(500 if self.path == "/fail" else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", records)
    server.shutdown()


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashrayProcess]:
    instance = start_crashray(tmp_path_factory.mktemp("alerts-e2e"), free_port(), NOTIFIER_ENV)
    yield instance
    code = stop_crashray(instance)
    assert code == 0, "".join(instance.output[-40:])


@pytest.fixture(scope="module")
def owner(alerting: CrashrayProcess) -> tuple[str, str]:
    username, password = f"alerts-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    subprocess.run([sys.executable, "-m", "cluster.cli", "user", "create", username,
                    "--password-stdin", "--org", "crashray", "--role", "owner",
                    "--data-dir", str(alerting.data_dir)], input=password + "\n",
                   capture_output=True, text=True, timeout=120, check=True, cwd=HERE.parents[1])
    return username, password


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox"])
        yield launched
        launched.close()


@needs_chromium
def test_alerts_page_helpers_place_errors_and_shape_values(
        alerting: CrashrayProcess, browser: object) -> None:
    """The editor's pure helpers, run by the browser itself."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page()
    try:
        page.goto(f"{alerting.base_url}/")
        found = page.evaluate("""async () => {
            const a = await import("/static/alerts.js");
            const router = await import("/static/router.js");
            return {
                item: a.ruleErrorPlace("conditions[1].interval: must be one of 1m"),
                id: a.ruleErrorPlace("actions[0].id: 'x' is not a supported action"),
                top: a.ruleErrorPlace("frequency: must be minutes from 5 to 43200; got 2"),
                none: a.ruleErrorPlace("the body is not JSON"),
                values: [a.fieldValue("value", {type: "number"}, " 12 "),
                         a.fieldValue("to", {type: "string"}, "a@x.org, b@x.org"),
                         a.fieldValue("url", {type: "string"}, "  ")],
                parts: a.labelParts("Send a webhook to {url}"),
                latest: [...a.latestByRule([{id: "9", ruleId: "2"}, {id: "8", ruleId: "2"},
                                            {id: "7", ruleId: null}]).entries()],
                route: router.parseRoute(router.routes.alerts("acme", "web app")),
            };
        }""")
    finally:
        page.close()
    assert found["item"] == {"section": "conditions", "index": 1, "field": "interval"}
    assert found["id"] == {"section": "actions", "index": 0, "field": "id"}
    assert found["top"] == {"section": None, "index": None, "field": "frequency"}
    assert found["none"] is None
    assert found["values"] == [12, ["a@x.org", "b@x.org"], None]
    assert found["parts"] == [{"text": "Send a webhook to "}, {"field": "url"}]
    assert found["latest"] == [["2", {"id": "9", "ruleId": "2"}]]
    assert (found["route"]["name"], found["route"]["project"]) == ("alerts", "web app")


def send_event(c: CrashrayProcess, marker: str) -> None:
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker, "1",
                    "AlertProbe"],
                   env={**os.environ, "CRASHRAY_DSN": c.dsn}, capture_output=True, text=True,
                   timeout=60, check=True)


@needs_chromium
def test_a_rule_made_in_the_editor_notifies_a_webhook_and_a_dead_one_raises_a_warning(
        alerting: CrashrayProcess, owner: tuple[str, str], browser: object,
        receiver: Receiver, tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    rule_name = f"new issues {marker}"
    hook, plugin_hook = f"{receiver.base_url}/hook", f"{receiver.base_url}/plugin"
    page, errors, shot = open_page(browser, tmp_path)
    try:
        page.goto(f"{alerting.base_url}/")
        page.get_by_label("Username").fill(owner[0])
        page.get_by_label("Password").fill(owner[1])
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Alerts", exact=True).click()
        expect(page.get_by_role("heading", level=1, name=re.compile("^Alerts"))).to_be_visible()
        expect(page.locator(".notification-warnings")).to_have_count(0)

        # 1. Sentry's legacy WebHooks plugin: its URLs in a textarea, enabled.
        page.get_by_label("Callback URLs").fill(plugin_hook)
        page.get_by_label("Enabled").check()
        page.get_by_role("button", name="Save webhooks").click()
        expect(page.locator("#status")).to_have_text("WebHooks saved")

        # 2. The editor: a frequency condition without its value is the API's 400, shown
        # next to the form and on the field it names; without it the rule is valid.
        page.get_by_role("button", name="New alert rule").click()
        editor = page.get_by_role("form", name="New alert rule")
        editor.get_by_label("Rule name").fill(rule_name)
        editor.get_by_label("When: actionMatch").select_option("any")
        editor.get_by_label("Add a condition").select_option(label="A new issue is created")
        editor.get_by_label("Add a condition").select_option(
            label="The issue is seen more than … times in …")
        editor.get_by_label("Add an action").select_option(label="Send a webhook to …")
        editor.get_by_label("Send a webhook to …: url").fill(hook)
        editor.get_by_label("Send a webhook to …: secret").fill(SECRET)
        editor.get_by_label("Add an action").select_option(label="Send a notification via …")
        editor.get_by_role("button", name="Create rule").click()
        value = editor.get_by_label("The issue is seen more than … times in …: value")
        expect(editor.locator(".form-error")).to_contain_text("conditions[1].value")
        expect(value).to_have_attribute("aria-invalid", "true")
        shot("1-rule-error")
        editor.get_by_role("button", name="Remove: The issue is seen more than … times in …"
                           ).click()

        # 3. "Send test notification": both actions delivered, the receiver has them.
        editor.get_by_role("button", name="Send test notification").click()
        result = editor.locator(".test-result")
        expect(result.locator(".delivery-status", has_text="delivered")).to_have_count(
            2, timeout=DELIVERY_TIMEOUT_MS)
        test_hit = receiver.wait_for("/hook", lambda r: b"test notification" in r.body)
        assert signature_valid(test_hit.body, SECRET, test_hit.headers[SIGNATURE_HEADER])
        receiver.wait_for("/plugin", lambda r: b"test notification" in r.body)
        shot("2-test-delivered")

        editor.get_by_role("button", name="Create rule").click()
        expect(page.locator("#status")).to_have_text("Alert rule created")
        row = page.locator("table.alert-rules tbody tr", has_text=rule_name)
        expect(row.locator(".rule-conditions")).to_contain_text("A new issue is created")
        expect(row.locator(".rule-actions")).to_contain_text(f"Send a webhook to {hook}")
        expect(row.locator(".rule-actions")).to_contain_text("Send a notification via webhooks")
        log = page.locator("table.delivery-log")
        expect(log.locator("tbody tr", has_text="Test notification")).to_have_count(2)

        # 4. A real event from the Python SDK: a new issue fires the rule; the receiver gets
        # Sentry's legacy webhook payload (signed), and the log shows both deliveries.
        time.sleep(1.5)  # CRASHRAY_PROJECT_SETTINGS_REFRESH_S: the consumers see the rule
        send_event(alerting, marker)
        expect(row.locator(".rule-last .delivery-status")).to_have_text(
            "delivered", timeout=DELIVERY_TIMEOUT_MS)
        hit = receiver.wait_for("/hook", lambda r: marker.encode() in r.body)
        payload = hit.json()
        assert payload["triggering_rules"] == [rule_name]
        assert payload["project_slug"] and payload["level"] == "error"
        assert marker in json.dumps(payload["event"])
        assert signature_valid(hit.body, SECRET, hit.headers[SIGNATURE_HEADER])
        plugin_hit = receiver.wait_for("/plugin", lambda r: marker.encode() in r.body)
        assert plugin_hit.json()["triggering_rules"] == [rule_name]
        row.get_by_role("button", name=f"Delivery log of {rule_name}").click()
        expect(page.locator(".log-title")).to_have_text(f"Deliveries of {rule_name}")
        rule_rows = log.locator("tbody tr")
        expect(rule_rows).to_have_count(2)
        expect(rule_rows.locator(".delivery-status", has_text="delivered")).to_have_count(2)
        expect(rule_rows.first.locator(".response-code")).to_have_text("200")
        shot("3-rule-delivered")

        # Edit: the form comes back filled in (the secret too); a new frequency is saved.
        row.get_by_role("button", name=f"Edit {rule_name}").click()
        edit = page.get_by_role("form", name=f"Edit rule {rule_name}")
        expect(edit.get_by_label("Send a webhook to …: url")).to_have_value(hook)
        expect(edit.get_by_label("Send a webhook to …: secret")).to_have_value(SECRET)
        edit.get_by_label("Frequency (minutes)").fill("60")
        edit.get_by_role("button", name="Save rule").click()
        expect(page.locator("#status")).to_have_text("Alert rule saved")
        expect(row.locator("td.num")).to_have_text("60 min")

        # 5. A destination answering 500: retried, failed, and a warning naming it on this
        # page and above the issue stream.
        page.get_by_role("button", name="Show every delivery").click()
        page.get_by_role("button", name="New alert rule").click()
        editor = page.get_by_role("form", name="New alert rule")
        editor.get_by_label("Add an action").select_option(label="Send a webhook to …")
        editor.get_by_label("Send a webhook to …: url").fill(f"{receiver.base_url}/fail")
        editor.get_by_role("button", name="Send test notification").click()
        failed = editor.locator(".test-result li")
        expect(failed.locator(".delivery-status")).to_have_text(
            "failed", timeout=DELIVERY_TIMEOUT_MS)
        expect(failed).to_contain_text("answered 500")
        assert len(receiver.at("/fail")) == 3
        warning = page.locator(".notification-warnings")
        expect(warning).to_contain_text("/fail", timeout=DELIVERY_TIMEOUT_MS)
        expect(warning).to_contain_text("3 failed attempts in a row")
        expect(warning).to_contain_text("500")
        failed_row = log.locator("tbody tr", has_text="/fail")
        expect(failed_row.locator(".delivery-status")).to_have_text("failed")
        expect(failed_row.locator("td.num").first).to_have_text("3")
        shot("4-warning")
        editor.get_by_role("button", name="Cancel").click()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=f"Delete {rule_name}").click()
        expect(row).to_have_count(0)
        expect(page.locator("#status")).to_have_text(f"Alert rule {rule_name} deleted")
        page.get_by_role("link", name="← Back to issues").click()
        expect(page.get_by_role("heading", level=1, name=re.compile("^Issues"))).to_be_visible()
        expect(page.locator(".stream .notification-warnings")).to_contain_text("/fail")
        shot("5-stream-warning")
        assert errors == []
    finally:
        shot("last")
        page.context.close()
