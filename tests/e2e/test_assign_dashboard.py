"""Triage in a real browser (Debian's Chromium driven by Playwright, the browser fixture of
tests/e2e/test_dashboard.py) against a running ``crashray up``: assign an issue the real
Python SDK sent, bookmark it, comment on it, and find it again in the stream with
``assigned:me is:bookmarked``. Screenshots of each step are saved under the test's
``tmp_path``."""

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
from tests.e2e.test_dashboard import (
    HERE,
    find_in_stream,
    log_in,
    needs_chromium,
    open_page,
)

pytestmark = pytest.mark.e2e

#: The browser and the dashboard's user of tests/e2e/test_dashboard.py, shared, not copied.
browser = dashboard.browser
dashboard_user = dashboard.dashboard_user


def send_own_error(c: CrashrayProcess, marker: str, error_type: str) -> None:
    """Two events of an exception type of this test's own, so that they make an issue of
    their own (the other browser tests' CardDeclined events share one issue)."""
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker, "2",
                    error_type], env={**os.environ, "CRASHRAY_DSN": c.dsn},
                   capture_output=True, text=True, timeout=60, check=True)


@needs_chromium
def test_assign_bookmark_and_comment_on_an_issue_then_find_it_as_mine(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    from playwright.sync_api import Browser, Locator, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    error_type = f"Triage{marker}"
    title = f"{error_type}: card {marker} declined"
    send_own_error(crashray_up, marker, error_type)
    page, errors, shot = open_page(browser, tmp_path)
    username = dashboard_user[0]
    try:
        log_in(page, crashray_up, dashboard_user)
        row = find_in_stream(page, f"is:unresolved {marker}", title)
        assert isinstance(row, Locator)
        expect(row.locator(".avatar")).to_have_attribute("title", "Unassigned")

        # The issue page: assign it to me (the picker lists the organization's members
        # and teams), which also subscribes me.
        row.get_by_role("link", name=title).click()
        expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
        picker = page.get_by_label("Assignee")
        expect(picker.locator("option", has_text="#crashray")).to_have_count(1)
        picker.select_option(label=username)
        expect(page.locator(".activity")).to_contain_text(f"Assigned to {username}")
        expect(page.get_by_label("Assignee")).to_have_value(username)
        expect(page.locator("#subscribe")).to_have_attribute("aria-pressed", "true")

        # Bookmark it, then comment with a mention; the comment shows in the activity.
        page.get_by_role("button", name="☆ Bookmark").click()
        expect(page.locator("#bookmark")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#bookmark")).to_have_text("★ Bookmarked")
        page.get_by_label("Comment", exact=True).fill(f"Looking into it @{username} <b>not bold</b>")
        page.get_by_role("button", name="Comment", exact=True).click()
        note = page.locator(".activity .note-text")
        expect(note).to_have_text(f"Looking into it @{username} <b>not bold</b>")
        expect(page.locator(".activity b")).to_have_count(0)  # text, never markup
        shot("1-issue-triaged")

        # The stream: found by assigned:me is:bookmarked, with my avatar and the star.
        page.get_by_role("link", name=re.compile("Issues ·")).click()
        mine = find_in_stream(page, f"assigned:me is:bookmarked {marker}", title)
        assert isinstance(mine, Locator)
        expect(mine.locator(".avatar")).to_have_attribute("title", f"Assigned to {username}")
        expect(mine.locator(".bookmarked")).to_be_visible()
        shot("2-stream-assigned-to-me")

        # Unassigned again from the issue page, it leaves assigned:me.
        mine.get_by_role("link", name=title).click()
        page.get_by_label("Assignee").select_option(label="Unassigned")
        expect(page.locator(".activity")).to_contain_text("Unassigned")
        page.get_by_role("link", name=re.compile("Issues ·")).click()
        search = page.get_by_role("searchbox", name="Search issues")
        search.fill(f"assigned:me {marker}")
        search.press("Enter")
        expect(page.locator(".results .empty")).to_contain_text("No issues match")
        shot("3-unassigned")
        assert errors == []
    finally:
        shot("last")
        page.context.close()
