"""The environment selector and the time-range picker in a real browser (Debian's Chromium
driven by Playwright, the browser fixture of tests/e2e/test_dashboard.py) against a running
``crashray up``, and the event page's rendering fixes: context labels whole (``calendar``,
not ``calenda r``), no ``None.`` under a request without a body, no internal
``sentry_user``, teams listing their projects. Screenshots of each step are saved under the
test's ``tmp_path``.

Events come from the real Python SDK: one issue in a production-like environment now, one
in a staging-like environment three days ago (``before_send`` sets the event's time, as an
SDK replaying a queue would send it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e import test_dashboard as dashboard
from tests.e2e.conftest import CrashrayProcess
from tests.e2e.test_dashboard import find_in_stream, log_in, needs_chromium, open_page

pytestmark = pytest.mark.e2e

#: The browser and the dashboard's user of tests/e2e/test_dashboard.py, shared, not copied.
browser = dashboard.browser
dashboard_user = dashboard.dashboard_user

#: Sends one error of its own class through sentry-sdk: argv = marker, error class,
#: environment, age in days; with a culture context, a user and a GET request without body.
SEND = """
import datetime as dt, os, sys
import sentry_sdk

marker, name, environment, days = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def before_send(event, hint):
    event["timestamp"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat()
    event["request"] = {"method": "GET", "url": f"https://shop.example/checkout/{marker}",
                        "data": "", "headers": {"Accept": "text/html"}}
    return event

sentry_sdk.init(dsn=os.environ["CRASHRAY_DSN"], environment=environment,
                before_send=before_send, send_default_pii=True)
sentry_sdk.set_user({"id": "42", "email": "ada@example.com", "ip_address": "{{auto}}"})
sentry_sdk.set_context("culture", {"calendar": "GregorianCalendar", "timezone": "Europe/Paris",
                                   "locale": "fr-FR", "is_24_hour_format": True})
error = type(name, (ValueError,), {})
try:
    raise error(f"card {marker} declined")
except ValueError as exc:
    sentry_sdk.capture_exception(exc)
sentry_sdk.flush(10)
"""

#: How many line boxes the text of an element takes (1: it did not wrap).
LINES_OF = """(el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
}"""


def local_input(page: object, unix_s: float) -> str:
    """A datetime-local input's value for a time, in the browser's own time zone."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    value: str = page.evaluate("""(ms) => { const d = new Date(ms);
        return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); }""",
                              unix_s * 1000)
    return value


def send(c: CrashrayProcess, marker: str, name: str, environment: str, days: int) -> None:
    subprocess.run([sys.executable, "-c", SEND, marker, name, environment, str(days)],
                   env={**os.environ, "CRASHRAY_DSN": c.dsn}, capture_output=True, text=True,
                   timeout=60, check=True)


@needs_chromium
def test_environment_and_time_range_narrow_the_stream_and_the_issue_page(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    from playwright.sync_api import Browser, Locator, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    prod, stage = f"prod-{marker}", f"stage-{marker}"
    fresh, old = f"Fresh{marker}", f"Old{marker}"
    send(crashray_up, marker, fresh, prod, 0)
    send(crashray_up, marker, old, stage, 3)
    fresh_title, old_title = f"{fresh}: card {marker} declined", f"{old}: card {marker} declined"
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, dashboard_user)
        find_in_stream(page, marker, fresh_title)
        find_in_stream(page, marker, old_title)
        rows = page.locator("table.issues tbody tr")
        expect(rows).to_have_count(2)

        # The environment selector lists the project's environments; staging narrows to
        # the old issue, and the choice is kept in the location.
        picker = page.get_by_label("Environment", exact=True)
        expect(picker.locator("option", has_text=stage)).to_have_count(1, timeout=15_000)
        picker.select_option(label=stage)
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(old_title)
        expect(page).to_have_url(re.compile(re.escape(f"environment={stage}")))
        shot("1-stream-staging")

        # The last 24 hours in staging: nothing (its event is three days old).
        page.locator(".period-choices a[data-period='24h']").click()
        expect(page.locator(".results .empty")).to_contain_text(f"in {stage} seen in the last 24 hours")
        expect(page).to_have_url(re.compile("statsPeriod=24h"))
        shot("2-stream-staging-24h")

        # Every environment, last 24 hours: only the fresh issue; 7 days: both again.
        page.get_by_label("Environment", exact=True).select_option(label="All environments")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(fresh_title)
        expect(page.locator(".period-choices a[data-period='24h']")).to_have_attribute(
            "aria-current", "true")
        page.locator(".period-choices a[data-period='7d']").click()
        expect(rows).to_have_count(2)
        shot("3-stream-7d")

        # A custom range, four to two days ago (the browser's time): only the old issue.
        now = page.evaluate("() => Date.now()") / 1000
        page.get_by_text("Custom range").click()
        page.get_by_label("From").fill(local_input(page, now - 4 * 86400))
        page.get_by_label("to", exact=True).fill(local_input(page, now - 2 * 86400))
        page.get_by_role("button", name="Apply").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(old_title)
        expect(page).to_have_url(re.compile(r"start=.*end="))
        assert "statsPeriod" not in page.url
        shot("3b-stream-custom-range")
        page.locator(".period-choices a[data-period='7d']").click()
        expect(rows).to_have_count(2)

        # The issue page keeps the filters; its event follows the environment.
        rows.filter(has_text=fresh_title).get_by_role("link", name=fresh_title).click()
        expect(page.get_by_role("heading", level=1, name=fresh_title)).to_be_visible()
        expect(page.get_by_label("Environment", exact=True)).to_have_value("")
        event = page.locator("section.event")
        expect(event.get_by_role("heading", name="Request")).to_be_visible()

        # Rendering fixes: whole context labels, no "None." under the body-less request,
        # no internal sentry_user field.
        culture = page.locator(".context[data-context='culture']")
        for label in ("calendar", "timezone", "is_24_hour_format"):
            th = culture.locator("th", has_text=label)
            expect(th).to_have_text(label)
            assert th.evaluate(LINES_OF) == 1, f"the label {label} wraps"
        request = page.locator("section.entry", has=page.get_by_role("heading", name="Request"))
        expect(request).to_contain_text(f"/checkout/{marker}")
        expect(request).not_to_contain_text("None.")
        user = page.locator(".context[data-context='user']")
        expect(user).to_contain_text("ada@example.com")
        expect(page.locator("main")).not_to_contain_text("sentry_user")
        shot("4-issue-event")

        page.get_by_label("Environment", exact=True).select_option(label=stage)
        expect(event).to_contain_text(f"No event of this issue in {stage}")
        shot("5-issue-no-event-in-staging")
        page.get_by_label("Environment", exact=True).select_option(label=prod)
        expect(event.get_by_role("heading", name="Request")).to_be_visible()

        # Organization settings: the team lists its project.
        page.goto(f"{crashray_up.base_url}/#/crashray/settings")
        team = page.locator(".team-list li[data-team='crashray']")
        projects = team.locator(".team-projects")
        assert isinstance(projects, Locator)
        expect(projects.get_by_role("link", name="default")).to_be_visible()
        shot("6-teams-with-projects")
        assert errors == []
    finally:
        shot("last")
        page.context.close()
