"""The web dashboard in a real browser (Debian's Chromium driven by Playwright) against a
running ``crashray up``: log in, find an issue the real Python SDK sent, read its stack trace
and resolve it. Screenshots of each step are saved under the test's ``tmp_path``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CrashrayProcess

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
#: Every wait in the browser; ingest → issue usually takes about a second.
STEP_TIMEOUT_MS = 15_000
ISSUE_APPEARS_TIMEOUT_S = 30

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="apt-get install chromium (.ci/run does)")


def open_page(browser: Any, tmp_path: Path) -> tuple[Any, list[str], Callable[[str], None]]:
    """A fresh page that collects uncaught errors and console errors (a 401/400 answer is
    logged by Chromium as a failed resource load: expected, so left out), and a function
    saving a full-page screenshot under ``tmp_path/screenshots``."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "Failed to load resource" not in msg.text else None)

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    return page, errors, shot


@pytest.fixture(scope="module")
def dashboard_user(crashray_up: CrashrayProcess) -> tuple[str, str]:
    """A user who owns the ``crashray`` organization, made with the CLI as a person would."""
    username, password = f"dash-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    subprocess.run([sys.executable, "-m", "cluster.cli", "user", "create", username,
                    "--password-stdin", "--org", "crashray", "--role", "owner",
                    "--data-dir", str(crashray_up.data_dir)], input=password + "\n",
                   capture_output=True, text=True, timeout=120, check=True, cwd=HERE.parents[1])
    return username, password


def send_python(c: CrashrayProcess, marker: str) -> None:
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker, "2",
                    "CardDeclined"],
                   env={**os.environ, "CRASHRAY_DSN": c.dsn}, capture_output=True, text=True,
                   timeout=60, check=True)


def test_dashboard_files_are_served_with_their_types_and_cache_headers(
        crashray_up: CrashrayProcess) -> None:
    base = crashray_up.base_url
    index = httpx.get(f"{base}/", timeout=10)
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in index.headers["content-security-policy"]
    versioned = re.search(r'src="(/static/v-[0-9a-f]+)/app\.js"', index.text)
    assert versioned, "index.html names its modules under a versioned prefix"

    module = httpx.get(f"{base}{versioned[1]}/stream.js", timeout=10)
    assert module.status_code == 200
    assert module.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "immutable" in module.headers["cache-control"]

    plain = httpx.get(f"{base}/static/app.css", timeout=10)
    assert plain.headers["content-type"] == "text/css; charset=utf-8"
    assert plain.headers["cache-control"] == "no-cache"
    again = httpx.get(f"{base}/static/app.css", headers={"If-None-Match": plain.headers["etag"]},
                      timeout=10)
    assert again.status_code == 304

    for bad in ("/static/../index.html", "/static/%2e%2e/assets.py", "/static/nope.js",
                "/static/v-0/../../cluster/settings.py"):
        assert httpx.get(f"{base}{bad}", timeout=10).status_code == 404, bad


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox"])
        yield launched
        launched.close()


def find_in_stream(page: object, query: str, title: str) -> object:
    """Search until the issue's row shows (the consumers make it within seconds)."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    search = page.get_by_role("searchbox", name="Search issues")
    search.fill(query)
    row = page.locator("table.issues tbody tr", has_text=title)
    for _ in range(ISSUE_APPEARS_TIMEOUT_S * 2):
        search.press("Enter")
        try:
            expect(row).to_be_visible(timeout=500)
            break
        except AssertionError:
            continue
    expect(row).to_be_visible()
    return row


@needs_chromium
def test_dashboard_modules_parse_links_routes_and_status_queries(
        crashray_up: CrashrayProcess, browser: object) -> None:
    """The pure helpers of the page, run by the browser itself (no Node.js needed)."""
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    page = browser.new_page()
    try:
        page.goto(f"{crashray_up.base_url}/")
        found = page.evaluate("""async () => {
            const api = await import("/static/api.js");
            const fmt = await import("/static/format.js");
            const router = await import("/static/router.js");
            const ev = await import("/static/event.js");
            const settings = await import("/static/project_settings.js");
            const meta = {extra: {password: {"": {rem: [["@password:filter", "s", 0, 10]]}}},
                          request: {data: {card: {"": {rem: [["@creditcard:filter", "s"]]}}}}};
            return {
                ruleError: settings.ruleErrorOf("fingerprintingRules: line 2, column 5: bad"),
                notRuleError: settings.ruleErrorOf("spikeProtection.enabled must be true"),
                remarks: ev.scrubRemarks(ev.metaAt(meta, ["request"])),
                direct: ev.scrubRemarks(ev.metaAt(meta, ["extra", "password"])),
                filtered: [ev.holdsFiltered({a: ["x", "[Filtered]"]}), ev.holdsFiltered("x")],
                settingsRoutes: [router.parseRoute(router.routes.projectSettings("acme", "web")),
                                 router.parseRoute(router.routes.orgSettings("acme"))],
                link: api.parseLink('<http://x/?query=a%2Cb&cursor=0:0:1>; rel="previous"; '
                    + 'results="false"; cursor="0:0:1", <http://x/?cursor=0:25:0>; rel="next"; '
                    + 'results="true"; cursor="0:25:0"'),
                resolved: fmt.withStatus("is:unresolved level:error", "resolved"),
                fromNothing: fmt.withStatus(null, "ignored"),
                statuses: [fmt.statusOfQuery(null), fmt.statusOfQuery("level:error is:ignored"),
                           fmt.statusOfQuery("is:resolved is:ignored")],
                route: router.parseRoute(router.routes.stream("acme", "web app", {query: "is:resolved x"})),
                issue: router.parseRoute("#/acme/issues/42?event=latest"),
                bars: fmt.sparkBars([[0, 0], [3600, 4], [7200, 2]], 30, 10).map((b) => b.height),
                sizes: [0, 1, 1023, 1536, 10 * 1024 * 1024, -1].map(fmt.byteSize),
                noColumn: ev.describeProcessingError({type: "js_no_column",
                    message: "Frame without a column number", data: {url: "app:///a.js"}}),
                unknown: ev.describeProcessingError({type: "invalid_data",
                    message: "Discarded invalid value", data: {name: "user.ip", value: "x"}}),
                raw: [ev.hasRawFrames([{stacktrace: {frames: [{}]}, rawStacktrace: null}]),
                      ev.hasRawFrames([{}, {rawStacktrace: {frames: [{}]}}])],
                bundleNames: [settings.bundleName({bundleId: "b-1", checksum: "c".repeat(40)}),
                              settings.bundleName({bundleId: null, checksum: "0123456789abcdef"})],
            };
        }""")
    finally:
        page.close()
    assert found["link"] == {"previous": {"cursor": "0:0:1", "results": False},
                             "next": {"cursor": "0:25:0", "results": True}}
    assert found["resolved"] == "is:resolved level:error"
    assert found["fromNothing"] == "is:ignored"
    assert found["statuses"] == ["unresolved", "ignored", None]
    assert (found["route"]["name"], found["route"]["org"], found["route"]["project"]) == (
        "stream", "acme", "web app")
    assert (found["issue"]["name"], found["issue"]["id"]) == ("issue", "42")
    assert found["bars"] == [0, 10, 5]
    assert found["sizes"] == ["0 bytes", "1 byte", "1023 bytes", "1.5 KiB", "10 MiB", "—"]
    assert found["noColumn"]["title"] == "Frame without a column number"
    assert found["noColumn"]["details"] == [["File", "app:///a.js"]]
    assert found["noColumn"]["reason"] is None and "column" in found["noColumn"]["hint"]
    assert (found["unknown"]["title"], found["unknown"]["details"]) == (
        "Discarded invalid value", [["Field", "user.ip"], ["Value", "x"]])
    assert found["raw"] == [False, True]
    assert found["bundleNames"] == ["b-1", "0123456789ab"]
    assert found["ruleError"] == {"setting": "fingerprintingRules", "line": 2}
    assert found["notRuleError"] is None
    assert found["remarks"] == [{"path": "data.card", "rule": "@creditcard:filter"}]
    assert found["direct"] == [{"path": "", "rule": "@password:filter"}]
    assert found["filtered"] == [True, False]
    assert [(r["name"], r["org"], r.get("project")) for r in found["settingsRoutes"]] == [
        ("projectSettings", "acme", "web"), ("orgSettings", "acme", None)]


@needs_chromium
def test_log_in_find_an_sdk_issue_read_its_stack_trace_and_resolve_it(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    title = f"CardDeclined: card {marker} declined"
    send_python(crashray_up, marker)
    page, errors, shot = open_page(browser, tmp_path)

    try:
        # 1. Not logged in: the login form; a wrong password shows the API's words.
        page.goto(f"{crashray_up.base_url}/")
        expect(page.get_by_role("heading", name="Log in to Crashray")).to_be_visible()
        username, password = dashboard_user
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_have_text("wrong username or password")
        shot("1-login-error")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()

        # 2. The stream of the default project, then a search by the marker (free text),
        # repeated until the consumers have made the issue.
        expect(page.get_by_role("heading", name=re.compile(r"^Issues"))).to_be_visible()
        expect(page.get_by_role("link", name="Unresolved")).to_have_attribute(
            "aria-current", "page")
        shot("2-stream")
        row: Any = find_in_stream(page, f"is:unresolved {marker}", title)
        search = page.get_by_role("searchbox", name="Search issues")
        expect(row.locator("svg.spark")).to_have_attribute(
            "aria-label", "2 events in the last 24 hours")
        # The row may already show in the stream the search started from (the issue is
        # unresolved), so the URL is waited for, not read once.
        expect(page).to_have_url(re.compile(re.escape(f"query=is%3Aunresolved+{marker}")))
        shot("3-search")

        # A malformed query: the API's 400, position and all, under the search bar.
        search.fill('level:"unclosed')
        search.press("Enter")
        expect(page.locator("#search-error")).to_contain_text("position")
        search.fill(f"is:unresolved {marker}")
        search.press("Enter")
        expect(row).to_be_visible()

        # 3. The issue: its stack trace, crash frame first, in the function that raised.
        row.get_by_role("link", name=title).click()
        expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
        expect(page.locator(".exc-value")).to_have_text(f"card {marker} declined")
        crash_frame = page.locator(".frames > li.frame.in-app").first
        expect(crash_frame.locator(".frame-function")).to_have_text("charge")
        expect(crash_frame.locator(".source-line.current")).to_contain_text("raise ERROR")
        expect(page.locator(".facet h3", has_text="release")).to_be_visible()
        shot("4-issue")

        # 4. Resolve it; the activity log says so.
        page.get_by_role("button", name="Resolve", exact=True).click()
        expect(page.locator("#issue-status")).to_have_text("Resolved")
        expect(page.locator(".activity")).to_contain_text("Resolved")
        shot("5-resolved")

        # 5. Back in the stream it has left the Unresolved tab for the Resolved one.
        page.get_by_role("link", name=re.compile("Issues ·")).click()
        expect(page.get_by_role("link", name="Unresolved")).to_have_attribute(
            "aria-current", "page")
        expect(page.locator(".results .empty")).to_contain_text("No issues match")
        expect(row).to_have_count(0)
        page.get_by_role("link", name="Resolved", exact=True).click()
        expect(row).to_be_visible()
        shot("6-resolved-tab")
        assert errors == []
    finally:
        shot("last")
        page.context.close()


@needs_chromium
def test_settings_pages_save_a_key_rate_limit_rules_and_a_team(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    """Project settings: a new key's rate limit survives a reload, a broken fingerprint rule
    is refused next to its textarea (line named, text kept), a valid one saves; organization
    settings: a team is created, and the same slug again gets the API's 409. What the test
    changes is its own (a new key, a new team) or undone, as other e2e tests share the
    instance and its default key."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:8]
    page, errors, shot = open_page(browser, tmp_path)

    try:
        page.goto(f"{crashray_up.base_url}/")
        username, password = dashboard_user
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Project settings").click()
        expect(page.get_by_role("heading", level=1, name=re.compile("^Project settings"))
               ).to_be_visible()

        # 1. A new key, rate-limited; the limit is still there after a reload.
        key_name = f"e2e-{marker}"
        page.get_by_label("New key name").fill(key_name)
        page.get_by_role("button", name="Create key").click()
        card = page.locator(".key-card", has=page.get_by_role("heading", name=key_name))
        expect(card.locator("code.dsn")).to_contain_text("@")
        card.get_by_label("Events").fill("100")
        card.get_by_label("Per (seconds)").fill("60")
        card.get_by_role("button", name="Save limit").click()
        expect(card.locator(".current-limit")).to_have_text("(100 events per 60 s)")
        page.reload()
        expect(card.get_by_label("Events")).to_have_value("100")
        expect(card.get_by_label("Per (seconds)")).to_have_value("60")
        card.get_by_role("button", name="Disable").click()
        expect(card.locator(".badge")).to_have_text("disabled")
        shot("1-key-rate-limit")

        # 2. A fingerprint rule that does not parse: the error names line 2, next to the
        # textarea, which keeps the text; then a valid rule (matching nothing) saves.
        rules = page.get_by_label("Fingerprint rules")
        original_rules = rules.input_value()
        broken = f"error.type:NoSuch{marker} -> no-such\nmessage:\"unclosed -> x"
        rules.fill(broken)
        page.get_by_role("button", name="Save grouping").click()
        rule_error = page.locator("#rules-fingerprintingRules-error")
        expect(rule_error).to_contain_text("Line 2")
        expect(rule_error).to_contain_text("column")
        expect(rules).to_have_attribute("aria-invalid", "true")
        expect(rules).to_have_value(broken)
        shot("2-rule-error")
        rules.fill(f"error.type:NoSuch{marker} -> no-such-{marker}")
        page.get_by_role("button", name="Save grouping").click()
        expect(page.locator("#status")).to_have_text("Grouping saved")
        expect(rule_error).to_be_empty()
        expect(rules).not_to_have_attribute("aria-invalid", "true")
        rules.fill(original_rules)
        page.get_by_role("button", name="Save grouping").click()
        expect(page.locator("#status")).to_have_text("Grouping saved")

        # The new key goes again (a confirm dialog asks first).
        page.once("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Delete").click()
        expect(card).to_have_count(0)

        # 3. Organization settings: a new team; the same slug again is the API's 409.
        page.get_by_role("navigation", name="Settings").get_by_role(
            "link", name="Organization settings").click()
        expect(page.get_by_role("heading", level=1, name=re.compile("^Organization settings"))
               ).to_be_visible()
        expect(page.locator(".settings-table").first).to_contain_text(username)
        team = f"team-{marker}"
        page.get_by_label("New team slug").fill(team)
        page.get_by_role("button", name="Create team").click()
        expect(page.locator(".team-list")).to_contain_text(team)
        page.get_by_label("New team slug").fill(team)
        page.get_by_role("button", name="Create team").click()
        expect(page.get_by_role("alert").filter(has_text="409")).to_contain_text(
            "exists already")

        # 4. A personal API token: shown once, selected for copying, then listed by name.
        page.get_by_label("Token name").fill(f"token-{marker}")
        page.get_by_role("button", name="Create token").click()
        expect(page.get_by_label("Your new token")).to_have_value(re.compile(r"^crs_"))
        expect(page.locator(".settings-table", has_text=f"token-{marker}")).to_contain_text(
            "event:read")
        shot("3-org-settings")
        assert errors == []
    finally:
        shot("last")
        page.context.close()


# --- source maps: the event page and the project's uploads (issue 12) -------------------
def esbuild_with_banner(out_dir: Path, banner: str) -> Path:
    """The source map test app as a minified CommonJS bundle for node (it throws while it
    loads); the banner makes each build, and so its injected debug id, this test's own."""
    from tests.e2e.test_sourcemaps import APP_DIR, ESBUILD

    dist = out_dir / "dist"
    subprocess.run([str(ESBUILD), str(APP_DIR / "src" / "app.js"), "--bundle", "--minify",
                    "--sourcemap", "--platform=node", "--format=cjs",
                    f"--banner:js=/* {banner} */", f"--outfile={dist / 'app.min.js'}"],
                   check=True, capture_output=True)
    return dist


def inject_debug_id(c: CrashrayProcess, dist: Path) -> str:
    from tests.e2e.test_sourcemaps import sentry_cli

    injected = sentry_cli(c, "sourcemaps", "inject", str(dist))
    found: str = re.findall(r"([0-9a-f-]{36}) - \S*app\.min\.js\b", injected)[0]
    return found


def upload_unparsable_map(c: CrashrayProcess, debug_id: str) -> None:
    """An artifact bundle whose map for ``debug_id`` is not a source map (a damaged upload),
    sent as sentry-cli sends bundles: one chunk, then assemble."""
    import hashlib
    import io
    import json
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"debug_id": debug_id, "files": {
            "files/_/_/app.min.js.map": {"url": "~/app.min.js.map", "type": "source_map",
                                         "headers": {"debug-id": debug_id}}}}))
        archive.writestr("files/_/_/app.min.js.map", "this is not a source map")
    bundle = b"SYSB\x02\x00\x00\x00" + out.getvalue()
    sha1 = hashlib.sha1(bundle).hexdigest()
    auth = {"Authorization": f"Bearer {c.token}"}
    api = f"{c.base_url}/api/0/organizations/crashray"
    assert httpx.post(f"{api}/chunk-upload/", headers=auth, timeout=30,
                      files=[("file", (sha1, bundle))]).status_code == 200
    done = httpx.post(f"{api}/artifactbundle/assemble/", headers=auth, timeout=30,
                      json={"checksum": sha1, "chunks": [sha1], "projects": ["default"]})
    assert done.json()["state"] == "ok", done.text


def log_in(page: Any, c: CrashrayProcess, user: tuple[str, str]) -> None:
    from playwright.sync_api import expect

    page.goto(f"{c.base_url}/")
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Issues"))).to_be_visible()


needs_sourcemap_tools = pytest.mark.skipif(
    not ((HERE / "sourcemaps" / "node_modules" / ".bin" / "esbuild").exists()
         and (HERE / "node" / "node_modules").exists()
         and shutil.which("sentry-cli")),
    reason="npm ci in tests/e2e/sourcemaps and tests/e2e/node; pip install sentry-cli==3.8.2")


@needs_chromium
@needs_sourcemap_tools
def test_event_page_shows_original_frames_the_minified_ones_and_why_a_map_failed(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    """The real @sentry/node throws from two esbuild bundles with sentry-cli's debug ids:
    one uploaded with ``sentry-cli sourcemaps upload`` (the page shows cart.js, line 4, in
    checkout, with its source line; the toggle shows the minified frame), one whose map was
    uploaded damaged (the page says the map does not parse, for which file)."""
    from playwright.sync_api import Browser, expect

    from tests.e2e.test_sourcemaps import run_node_bundle, sentry_cli, stored_event

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    release = f"dash-shop@{marker}"
    good = esbuild_with_banner(tmp_path / "good", f"good {marker}")
    inject_debug_id(crashray_up, good)
    sentry_cli(crashray_up, "sourcemaps", "upload", "--release", release, str(good))
    damaged = esbuild_with_banner(tmp_path / "damaged", f"damaged {marker}")
    damaged_id = inject_debug_id(crashray_up, damaged)
    upload_unparsable_map(crashray_up, damaged_id)

    good_event = stored_event(crashray_up, run_node_bundle(crashray_up, good / "app.min.js",
                                                           release))
    bad_event = stored_event(crashray_up, run_node_bundle(crashray_up,
                                                          damaged / "app.min.js", release))
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, dashboard_user)

        # 1. The symbolicated event: the crash frame is the original code, with its line.
        page.goto(f"{crashray_up.base_url}/#/crashray/issues/{good_event['groupID']}"
                  f"?event={good_event['eventID']}")
        exception = page.locator("section.entry", has=page.get_by_role(
            "heading", name="Exception"))
        crash = exception.locator(".stack-view:visible .frames > li.frame.in-app").first
        expect(crash.locator(".frame-file")).to_contain_text("src/cart.js:4")
        expect(crash.locator(".frame-function")).to_have_text("checkout")
        expect(crash.locator(".badge-sourcemap")).to_be_visible()
        expect(crash.locator(".source-line.current")).to_contain_text(
            'throw new Error("cart is empty: nothing to check out");')
        expect(page.locator(".processing-error", has_text="app.min.js")).to_have_count(0)
        shot("1-symbolicated")

        # 2. The toggle: the same frame as the SDK sent it, minified; and back.
        toggle = exception.get_by_role("group", name="Frames to show")
        toggle.get_by_role("button", name="Minified").click()
        expect(toggle.get_by_role("button", name="Minified")).to_have_attribute(
            "aria-pressed", "true")
        raw_crash = exception.locator(".stack-view:visible .frames > li.frame").first
        expect(raw_crash.locator(".frame-file")).to_contain_text(
            re.compile(r"app\.min\.js:\d+:\d+"))
        expect(raw_crash.locator(".frame-function")).not_to_have_text("checkout")
        expect(exception.locator(".stack-view:visible")).not_to_contain_text("src/cart.js")
        shot("2-minified")
        toggle.get_by_role("button", name="Symbolicated").click()
        expect(crash.locator(".frame-function")).to_have_text("checkout")

        # 3. The event whose map was damaged: its frames as sent, and why.
        page.goto(f"{crashray_up.base_url}/#/crashray/issues/{bad_event['groupID']}"
                  f"?event={bad_event['eventID']}")
        problems = page.locator("section.entry", has=page.get_by_role(
            "heading", name="Processing errors"))
        problem = problems.locator(".processing-error[data-type=js_invalid_source]")
        expect(problem).to_contain_text("Invalid source map")
        expect(problem.locator(".processing-reason")).to_contain_text(
            "the source map does not parse")
        expect(problem).to_contain_text("damaged/dist/app.min.js")
        expect(page.locator(".frames > li.frame.in-app").first.locator(".frame-file")
               ).to_contain_text("app.min.js")
        expect(page.get_by_role("group", name="Frames to show")).to_have_count(0)
        shot("3-processing-error")
        assert errors == []
    finally:
        shot("last")
        page.context.close()


@needs_chromium
@needs_sourcemap_tools
def test_project_settings_list_uploads_with_debug_ids_and_delete_them(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    """A bundle uploaded with sentry-cli 3.8.2 and a release file uploaded as sentry-cli 2.x
    does are listed in the project settings (debug id, release, size, upload time); deleting
    them there removes them from the API's lists too. The source fetching settings save."""
    from playwright.sync_api import Browser, expect

    from tests.e2e.test_sourcemaps import sentry_cli

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    release = f"dash-files@{marker}"
    dist = esbuild_with_banner(tmp_path, f"settings {marker}")
    debug_id = inject_debug_id(crashray_up, dist)
    sentry_cli(crashray_up, "sourcemaps", "upload", "--release", release, str(dist))
    auth = {"Authorization": f"Bearer {crashray_up.token}"}
    project_api = f"{crashray_up.base_url}/api/0/projects/crashray/default"
    assert httpx.post(f"{project_api}/releases/", headers=auth, timeout=30,
                      json={"version": release}).status_code == 201
    script = (dist / "app.min.js").read_bytes()
    assert httpx.post(f"{project_api}/releases/{release}/files/", headers=auth, timeout=30,
                      data={"name": "~/static/app.min.js"},
                      files={"file": ("app.min.js", script)}).status_code == 201
    bundle = next(b for b in httpx.get(f"{project_api}/files/artifact-bundles/", headers=auth,
                                       timeout=30).json() if debug_id in b["debugIds"])
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, dashboard_user)
        page.get_by_role("link", name="Project settings").click()
        section = page.locator("section.settings-section", has=page.get_by_role(
            "heading", name="Source maps"))

        # 1. The bundle: its debug id, release, files, size and when it came.
        row = section.locator("table.bundles tbody tr", has_text=debug_id)
        expect(row).to_contain_text(release)
        expect(row.locator("td").nth(3)).to_have_text("2")
        expect(row.locator(f'td[title="{bundle["size"]} bytes"]')).to_have_text(
            re.compile(r"^\d+(\.\d)? (bytes|KiB)$"))
        expect(row.locator("time")).to_have_text(re.compile(r"just now|sec"))

        # 2. The newest release is open with its file: name, size, upload time.
        file_row = section.locator("table.release-file-table tbody tr",
                                   has_text="~/static/app.min.js")
        expect(file_row.locator(f'td[title="{len(script)} bytes"]')).to_have_text(
            re.compile(r"^\d+(\.\d)? (bytes|KiB)$"))
        expect(file_row.locator("time")).to_be_visible()
        shot("1-uploads")

        # 3. Delete both (a confirm dialog asks first); the API lists neither any more.
        page.on("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name=re.compile("^Delete bundle")).click()
        expect(page.locator("#status")).to_contain_text("Deleted bundle")
        expect(row).to_have_count(0)
        file_row.get_by_role("button", name=f"Delete ~/static/app.min.js of release {release}"
                             ).click()
        expect(file_row).to_have_count(0)
        expect(section.locator(".release-files[open]").first).to_contain_text(
            "No files in this release.")
        shot("2-deleted")

        # 4. Source fetching: a bad domain is refused naming it; a good one saves, and the
        # project is left as it was (the instance is shared).
        page.get_by_label("Fetch source files from the web").check()
        domains = page.get_by_label("Allowed domains")
        domains.fill(f"cdn-{marker}.example.com\nbad domain!")
        page.get_by_role("button", name="Save source fetching").click()
        expect(section.get_by_role("alert")).to_contain_text("'bad domain!' is not a domain")
        expect(domains).to_have_value(f"cdn-{marker}.example.com\nbad domain!")
        domains.fill(f"cdn-{marker}.example.com")
        page.get_by_role("button", name="Save source fetching").click()
        expect(page.locator("#status")).to_have_text("Source fetching saved")
        saved = httpx.get(f"{project_api}/", headers=auth, timeout=30).json()
        assert (saved["scrapeJavaScript"], saved["allowedDomains"]) == (
            True, [f"cdn-{marker}.example.com"])
        page.get_by_label("Fetch source files from the web").uncheck()
        domains.fill("")
        page.get_by_role("button", name="Save source fetching").click()
        expect(page.locator("#status")).to_have_text("Source fetching saved")
        bundles = httpx.get(f"{project_api}/files/artifact-bundles/", headers=auth,
                            timeout=30).json()
        assert not [b for b in bundles if debug_id in b["debugIds"]]
        assert httpx.get(f"{project_api}/releases/{release}/files/", headers=auth,
                         timeout=30).json() == []
        assert errors == []
    finally:
        shot("last")
        page.context.close()


@needs_chromium
def test_open_anomalies_show_above_the_stream_and_on_their_issue(
        crashray_up: CrashrayProcess, dashboard_user: tuple[str, str], browser: object,
        tmp_path: Path) -> None:
    """Anomalies as a detector records them (storage.anomalies.record, into the instance's
    private PostgreSQL): the project's open one above its issue stream, an issue's on the
    issue page."""
    import datetime as dt

    import psycopg
    from playwright.sync_api import Browser, expect

    from events.anomaly import Anomaly
    from storage import anomalies

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker, "1",
                    f"Spiky{marker}"],  # a class of its own: an issue of its own
                   env={**os.environ, "CRASHRAY_DSN": crashray_up.dsn}, capture_output=True,
                   text=True, timeout=60, check=True)
    # The running instance's private PostgreSQL, joined as a management command joins it.
    url = subprocess.run(
        [sys.executable, "-c", "import sys; from cluster.runtime import Runtime;"
         " from cluster.settings import Settings;"
         " r = Runtime(Settings(data_dir=sys.argv[1])); r.start_databases();"
         " print(r.postgres_url)", str(crashray_up.data_dir)],
        capture_output=True, text=True, timeout=120, check=True, cwd=HERE.parents[1],
        env={k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    ).stdout.strip().splitlines()[-1]
    now = dt.datetime.now(dt.UTC)
    issue_id = None
    for _ in range(60):
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT i.id, i.project_id, p.organization_id FROM issues i JOIN projects p"
                " ON p.id = i.project_id WHERE i.title LIKE %s", (f"%{marker}%",)).fetchone()
        if row:
            issue_id, project_id, org_id = row
            break
        time.sleep(0.5)
    assert issue_id is not None, "the issue was not made"
    with psycopg.connect(url) as conn:
        recorded = anomalies.record(conn, f"seasonal-{marker}", [
            Anomaly("project", org_id, project_id, None, now - dt.timedelta(minutes=5), now,
                    8.4, "up", f"events rose to 900 a minute ({marker} project)",
                    {"expected": 40.0}, kind="spike"),
            Anomaly("issue", org_id, project_id, issue_id, now - dt.timedelta(minutes=3),
                    now, 6.5, "up", f"this issue is escalating ({marker})", {}, kind="spike")])
        conn.commit()
    page, errors, shot = open_page(browser, tmp_path)
    try:
        page.goto(f"{crashray_up.base_url}/")
        username, password = dashboard_user
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        banner = page.locator(".anomalies")
        expect(banner).to_contain_text(f"events rose to 900 a minute ({marker} project)")
        expect(banner).to_contain_text("↑ spike")
        expect(banner).to_contain_text("score 8.4")
        shot("anomalies-stream")
        banner.get_by_role("link", name=f"issue {issue_id}").click()
        panel = page.get_by_role("region", name="Anomalies")
        expect(panel).to_contain_text(f"this issue is escalating ({marker})")
        expect(panel).not_to_contain_text(f"({marker} project)")
        shot("anomalies-issue")
        assert errors == []
    finally:
        with psycopg.connect(url) as conn:  # the module's other tests share the instance
            conn.execute("DELETE FROM anomalies WHERE id = ANY(%s)",
                         ([r.id for r in recorded],))
            conn.commit()
        page.context.close()
