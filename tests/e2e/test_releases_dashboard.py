"""The releases page in a real browser (Debian's Chromium driven by Playwright, the
browser fixture of tests/e2e/test_dashboard.py) against a running ``crashray up``: a
release the real Python SDK reported (an unhandled crash and application-mode sessions)
is listed with its new issue, its events and its crash-free rates; its page lists the new
issue, which leads to the issue page, which names the release back and counts the issue's
events in the environment chosen. Screenshots of each
step are saved under the test's ``tmp_path``."""

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

#: Four sessions of release argv[2] through sentry-sdk: ada's first crashes on an unhandled
#: error of its own class (argv[1] names it), ada's second, bob's and cy's end well. Then the
#: same error once more from a staging deployment of the release (no session there).
SEND = """
import os, sys
import sentry_sdk
from sentry_sdk.utils import event_from_exception

marker, release = sys.argv[1], sys.argv[2]
error = type(f"Crash{marker}", (RuntimeError,), {})

def crash():
    try:
        raise error(f"checkout {marker} crashed")
    except RuntimeError:
        event, hint = event_from_exception(
            sys.exc_info(), client_options=sentry_sdk.get_client().options,
            mechanism={"type": "excepthook", "handled": False})
        sentry_sdk.capture_event(event, hint=hint)

def session(user, crashes):
    scope = sentry_sdk.get_isolation_scope()
    scope.set_user({"id": user})
    scope.start_session(session_mode="application")
    if crashes:
        crash()
    scope.end_session()

sentry_sdk.init(dsn=os.environ["CRASHRAY_DSN"], release=release, environment="production")
session("ada", True)
session("ada", False)
session("bob", False)
session("cy", False)
sentry_sdk.flush(10)
sentry_sdk.init(dsn=os.environ["CRASHRAY_DSN"], release=release, environment="staging")
crash()
sentry_sdk.flush(10)
"""

#: Sessions are stored by the consumers within seconds; the page is reloaded until then.
HEALTH_APPEARS_TIMEOUT_S = 60


@needs_chromium
def test_the_releases_page_shows_a_releases_crash_free_rates_and_leads_to_its_new_issue(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    release, title = f"shop@{marker}", f"Crash{marker}: checkout {marker} crashed"
    subprocess.run([sys.executable, "-c", SEND, marker, release],
                   env={**os.environ, "CRASHRAY_DSN": crashray_up.dsn}, capture_output=True,
                   text=True, timeout=60, check=True)
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, dashboard_user)
        find_in_stream(page, marker, title)

        # The releases page, from the navigation: the release's row, once its sessions are
        # stored: four sessions, one crashed (75%); three users, ada crashed (66.66%).
        page.get_by_role("link", name="Releases", exact=True).click()
        expect(page.get_by_role("heading", level=1, name="Releases")).to_be_visible()
        row = page.locator(f"table.releases tbody tr[data-release='{release}']")
        sessions = row.locator("[data-column='crash-free-sessions']")
        for _ in range(HEALTH_APPEARS_TIMEOUT_S):
            try:
                expect(sessions).to_have_text("75%", timeout=1000)
                break
            except AssertionError:
                page.reload()
        expect(sessions).to_have_text("75%")
        expect(row.locator("[data-column='crash-free-users']")).to_have_text("66.66%")
        expect(row.locator("[data-column='new-issues']")).to_have_text("1")
        expect(row.locator("[data-column='events']")).to_have_text("2")
        shot("1-releases")

        # The version search keeps the release (and only it: its version is this test's own).
        page.get_by_role("searchbox", name="Search releases").fill(marker)
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("table.releases tbody tr")).to_have_count(1)
        expect(page).to_have_url(re.compile(re.escape(f"query={marker}")))
        expect(row.locator("[data-column='crash-free-sessions']")).to_have_text("75%")

        # The release's page: its figures and its new issue, which opens the issue page.
        row.get_by_role("link", name=release).click()
        expect(page.get_by_role("heading", level=1, name=release)).to_be_visible()
        expect(page.locator("[data-figure='crash-free-sessions'] .op-value")).to_have_text("75%")
        expect(page.locator("[data-figure='new-issues'] .op-value")).to_have_text("1")
        new_issue = page.locator("table.new-issues").get_by_role("link", name=title)
        expect(new_issue).to_be_visible()
        shot("2-release")
        new_issue.click()
        expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
        first = page.locator(".counts .release-link").first
        expect(first).to_have_text(release)
        events = page.locator(".counts div", has=page.locator("dt", has_text="Events")).locator("dd")
        expect(events).to_have_text("2")
        shot("3-issue-with-its-release")

        # The issue's counts follow the environment chosen: one event in staging.
        page.get_by_label("Environment", exact=True).select_option(label="staging")
        expect(events).to_have_text("1")
        shot("4-issue-in-staging")
        page.get_by_label("Environment", exact=True).select_option(label="All environments")
        expect(events).to_have_text("2")

        # And back to the release from the issue page.
        first.click()
        expect(page.get_by_role("heading", level=1, name=release)).to_be_visible()
        assert errors == []
    finally:
        shot("last")
        page.context.close()


@needs_chromium
def test_release_helpers_format_rates_combine_projects_and_route_versions(
        crashray_up: CrashrayProcess, browser: object) -> None:
    """The releases page's pure helpers, run by the browser itself."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page()
    try:
        page.goto(f"{crashray_up.base_url}/")
        found = page.evaluate("""async () => {
            const rel = await import("/static/releases.js");
            const router = await import("/static/router.js");
            const health = (sessions, crashed, users, freeUsers) => ({healthData: {
                hasHealthData: true, totalSessions: sessions, sessionsCrashed: crashed,
                totalUsers: users, crashFreeUsers: freeUsers}});
            return {
                rates: [100, 75, 200 / 3, 99.999, 0, null].map(rel.percentText),
                combined: rel.releaseHealth({projects: [health(3, 1, 2, 50),
                                                        health(1, 0, 1, 100), {}]}),
                none: rel.releaseHealth({projects: [{healthData: {hasHealthData: false}}]}),
                list: router.parseRoute(router.routes.releases("acme")),
                one: router.parseRoute(router.routes.release("acme", "shop@1.0+build 7")),
                projectPage: router.parseRoute("#/acme/releases/issues"),
            };
        }""")
    finally:
        page.close()
    assert found["rates"] == ["100%", "75%", "66.66%", "99.99%", "0%", "—"]
    assert found["combined"] == {"sessions": 4, "users": 3, "crashFreeSessions": 75,
                                 "crashFreeUsers": 50}
    assert found["none"]["crashFreeSessions"] is None
    assert (found["list"]["name"], found["list"]["org"]) == ("releases", "acme")
    assert (found["one"]["name"], found["one"]["version"]) == ("release", "shop@1.0+build 7")
    # A project named "releases" keeps its stream.
    assert (found["projectPage"]["name"], found["projectPage"]["project"]) == (
        "stream", "releases")


@needs_chromium
def test_ownership_rules_are_edited_on_the_project_settings_page(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    """A rule naming a stranger is refused under the text, which stays as typed; a rule
    naming the organization's team saves and is there after a reload. The rules match no
    other test's events (a tag value of this test's own) and are emptied at the end: the
    instance is shared."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:8]
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, dashboard_user)
        page.get_by_role("link", name="Project settings").click()
        section = page.locator("section", has=page.get_by_role("heading", name="Ownership rules"))
        rules = section.get_by_label("Rules", exact=True)
        stranger = f"tags.shard:{marker} nobody-{marker}@example.com"
        rules.fill(stranger)
        section.get_by_role("button", name="Save rules").click()
        expect(section.get_by_role("alert")).to_contain_text(f"nobody-{marker}@example.com")
        expect(section.get_by_role("alert")).to_contain_text("no member or team")
        expect(rules).to_have_value(stranger)
        shot("1-ownership-refused")

        owned = f"tags.shard:{marker} #crashray"
        rules.fill(owned)
        section.get_by_label("Auto-assign new issues to their owner").uncheck()
        section.get_by_role("button", name="Save rules").click()
        expect(page.locator("#status")).to_have_text("Ownership rules saved")
        page.reload()
        expect(rules).to_have_value(owned)
        expect(section.get_by_label("Auto-assign new issues to their owner")).not_to_be_checked()
        shot("2-ownership-saved")

        rules.fill("")
        section.get_by_label("Auto-assign new issues to their owner").check()
        section.get_by_role("button", name="Save rules").click()
        expect(page.locator("#status")).to_have_text("Ownership rules saved")
        assert errors == []
    finally:
        shot("last")
        page.context.close()
