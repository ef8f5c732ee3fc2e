"""The security-report endpoint of a running Crashray (real Ray and Serve, the machine's
PostgreSQL, chDB): a browser's CSP report becomes a stored ``csp`` event and an issue of its
project, answered as Relay answers it; bad keys, content types and bodies are refused; a
quota on the ``security`` category applies. Each test uses its own project."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import RunningCrashray
from tests.integration.test_rate_limits import api, new_project
from tests.support import wait_until

pytestmark = pytest.mark.integration

CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
             " Chrome/156.0.0.0 Safari/537.36")


def csp_report(blocked: str) -> bytes:
    """A ``report-uri`` body as Chromium sends it (captured from Chromium 156)."""
    return orjson.dumps({"csp-report": {
        "document-uri": "https://shop.example/cart", "referrer": "",
        "violated-directive": "script-src-elem", "effective-directive": "script-src-elem",
        "original-policy": "script-src 'self'; report-uri /api/", "disposition": "enforce",
        "blocked-uri": blocked, "status-code": 200, "script-sample": ""}})


def post_report(c: RunningCrashray, project_id: int, key: str, body: bytes,
                content_type: str = "application/csp-report", query: str = ""
                ) -> httpx.Response:
    """POSTed as a browser does: no auth header, the key in the URL, from another origin."""
    return httpx.post(f"{c.base_url}/api/{project_id}/security/?sentry_key={key}{query}",
                      content=body, timeout=10,
                      headers={"Content-Type": content_type, "User-Agent": CHROME_UA,
                               "Origin": "https://shop.example"})


def post_until_key_known(c: RunningCrashray, project_id: int, key: str, body: bytes,
                         query: str = "") -> httpx.Response:
    """The ingest key caches learn a new project's key within their refresh (403 until)."""
    return wait_until(lambda: (r := post_report(c, project_id, key, body, query=query))
                      .status_code != 403 and r, 15, "the new key known to ingest")


def project_events(c: RunningCrashray, slug: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api(c, "GET", f"projects/crashray/{slug}/events/")
    return events


def test_a_csp_report_becomes_a_csp_event_and_one_issue_per_violation(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    marker = uuid.uuid4().hex[:8]
    blocked = f"https://evil-{marker}.example/steal.js"
    query = "&sentry_version=7&sentry_release=shop%402.0&sentry_environment=production"
    first = post_until_key_known(crashray, project_id, key, csp_report(blocked), query)
    # Relay's answer: a bare 200 (not 201), readable from any origin.
    assert first.status_code == 200 and first.content == b""
    assert first.headers["access-control-allow-origin"] == "*"
    assert post_report(crashray, project_id, key, csp_report(blocked), query=query
                       ).status_code == 200

    events = wait_until(lambda: len(e := project_events(crashray, slug)) == 2 and e, 30,
                        "the two reports stored")
    assert {e["title"] for e in events} == {f"Blocked 'script' from 'evil-{marker}.example'"}
    assert len({e["groupID"] for e in events}) == 1  # the same violation: one issue
    detail = api(crashray, "GET", f"projects/crashray/{slug}/events/{events[0]['id']}/")
    assert detail["type"] == "csp" and detail["culprit"] == "script-src-elem"
    assert (detail["release"], detail["environment"]) == ("shop@2.0", "production")
    tags = {t["key"]: t["value"] for t in detail["tags"]}
    assert tags["effective-directive"] == "script-src-elem"
    assert tags["blocked-uri"] == blocked and tags["blocked-host"] == f"evil-{marker}.example"
    assert detail["contexts"]["browser"]["name"] == "Chrome"
    issues = api(crashray, "GET", f"projects/crashray/{slug}/issues/")
    assert [(i["title"], int(i["count"])) for i in issues] == [
        (f"Blocked 'script' from 'evil-{marker}.example'", 2)]


def test_a_reporting_api_batch_stores_one_event_per_csp_violation(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    report = {"type": "csp-violation", "age": 2, "url": "https://shop.example/",
              "user_agent": CHROME_UA, "body": {
                  "documentURL": "https://shop.example/", "blockedURL": "https://a.example/x.js",
                  "effectiveDirective": "script-src-elem", "disposition": "enforce",
                  "originalPolicy": "script-src 'self'; report-to csp", "statusCode": 200}}
    other = {**report, "body": {**report["body"], "blockedURL": "https://b.example/y.js"}}
    body = orjson.dumps([report, {"type": "deprecation", "body": {"id": "x"}}, other])
    wait_until(lambda: post_report(crashray, project_id, key, body,
                                   "application/reports+json").status_code == 200, 15,
               "the batch accepted")
    events = wait_until(lambda: len(e := project_events(crashray, slug)) == 2 and e, 30,
                        "the two CSP violations stored")
    assert sorted(e["title"] for e in events) == ["Blocked 'script' from 'a.example'",
                                                  "Blocked 'script' from 'b.example'"]


def test_wrong_keys_content_types_and_bodies_are_refused_as_relay_refuses_them(
        crashray: RunningCrashray) -> None:
    project_id, _, key = new_project(crashray)
    assert post_until_key_known(crashray, project_id, key, csp_report("https://x.example/"))\
        .status_code == 200
    url = f"{crashray.base_url}/api/{project_id}/security/"
    other_project, _, other_key = new_project(crashray)
    wrong = post_report(crashray, project_id, other_key, csp_report("https://x.example/"))
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == "event submission rejected with_reason: ProjectId"
    no_key = httpx.post(url, content=csp_report("x"), timeout=10,
                        headers={"Content-Type": "application/csp-report"})
    assert no_key.status_code == 401
    form = post_report(crashray, project_id, key, b"a=b", "application/x-www-form-urlencoded")
    assert (form.status_code, form.content) == (415, b"")
    bad = post_report(crashray, project_id, key, b'{"csp-report": {"line-number": -1,'
                      b' "effective-directive": "script-src"}}')
    assert bad.status_code == 400
    assert bad.json()["detail"] == "invalid security report"
    assert "field csp-report.line-number" in bad.json()["causes"][0]
    empty = post_report(crashray, project_id, key, b"")
    assert (empty.status_code, empty.json()["detail"]) == (400, "empty request body")
    preflight = httpx.options(f"{url}?sentry_key={key}", timeout=10, headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "POST"
    assert "content-type" in preflight.headers["access-control-allow-headers"]
    assert other_project != project_id


def test_a_quota_on_the_security_category_refuses_reports_but_not_errors(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    assert post_until_key_known(crashray, project_id, key, csp_report("https://q.example/1"))\
        .status_code == 200
    api(crashray, "POST", "organizations/crashray/quotas/", {
        "scope": "project", "scopeId": project_id, "categories": ["security"], "window": 3600,
        "limit": 0, "reasonCode": "no_csp"}, status=201)
    time.sleep(1.0)  # the rate limiter re-reads quotas every 0.5 s in this suite
    refused = post_report(crashray, project_id, key, csp_report("https://q.example/2"))
    assert refused.status_code == 429
    assert refused.headers["X-Sentry-Rate-Limits"].endswith(":security:project:no_csp")
    assert int(refused.headers["Retry-After"]) >= 1
    envelope = (b'{}\n{"type":"event"}\n' + orjson.dumps({"message": "still fine"}))
    errors = httpx.post(f"{crashray.base_url}/api/{project_id}/envelope/?sentry_key={key}",
                        content=envelope, timeout=10)
    assert errors.status_code == 200
    wait_until(lambda: len(project_events(crashray, slug)) == 2, 30,
               "the first report and the message stored, the refused report not")
