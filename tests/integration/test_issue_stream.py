"""The issue stream with Sentry's search syntax, sorts, cursors and 24h stats, in a running
Crashray (real Ray, PostgreSQL, chDB), over events sent through the ingest endpoint."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from storage import postgres
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.integration.test_pipeline import other_tenant_token
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until


@dataclass
class Stream:
    project_id: int
    slug: str
    tag: str


def event(tag: str, error: str, **fields: Any) -> dict[str, Any]:
    frames = [{"function": "main", "module": "shop.app", "filename": "shop/app.py",
               "lineno": 3, "in_app": True},
              {"function": f"handle_{error.lower()}", "module": "shop.views",
               "filename": "shop/views.py", "lineno": 42, "in_app": True,
               "pre_context": ["def handle():", "    cart = load()"],
               "context_line": "    raise Broke(cart)", "post_context": ["", "# end"],
               "vars": {"cart": "<Cart 3 items>"}}]
    return {"platform": "python", "level": "error", "environment": "prod",
            "exception": {"values": [{"type": f"{error}{tag}", "value": "it broke",
                                      "stacktrace": {"frames": frames}}]},
            "breadcrumbs": {"values": [{"category": "http", "message": "GET /cart",
                                        "timestamp": 1795000000}]},
            **fields}


@pytest.fixture(scope="module")
def stream(crashray: RunningCrashray) -> Iterator[Stream]:
    tag = uuid.uuid4().hex[:6]
    slug = f"stream-{tag}"
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, slug, "v2")
        conn.commit()
    events = (
        [event(tag, "Checkout", tags={"browser": "Chrome 120"},
               user={"email": f"ada-{n}@example.com"}) for n in range(3)]
        + [event(tag, "Search", level="warning", environment="staging",
                 tags={"browser": "Firefox 119"}) for _ in range(2)]
        + [event(tag, "Login", tags={"browser": "Chrome 121"}, user={"id": "u1"})]
    )
    with httpx.Client(timeout=10) as client:
        for body in events:
            wait_until(lambda b=body: client.post(
                f"{crashray.base_url}/api/{project_id}/envelope/",
                content=gzip_bytes(envelope_bytes(b)),
                headers=python_sdk_headers(key)).status_code == 200, 15, "accepted")
    wait_until(lambda: len(issues(crashray, slug, "")) == 3, 30, "three issues")
    yield Stream(project_id, slug, tag)


def get(c: RunningCrashray, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{c.base_url}/api/0/{path}", params=params, timeout=10,
                     headers={"Authorization": f"Bearer {c.info.api_token}"})


def issues(c: RunningCrashray, slug: str, query: str | None, **params: Any
           ) -> list[dict[str, Any]]:
    if query is not None:
        params["query"] = query
    response = get(c, f"projects/crashray/{slug}/issues/", **params)
    assert response.status_code == 200, response.text
    return list(response.json())


def titles(found: list[dict[str, Any]], tag: str) -> list[str]:
    return [i["title"].split(tag)[0] for i in found]


@pytest.mark.parametrize(("query", "expected"), [
    ("level:warning", ["Search"]),
    ("environment:staging", ["Search"]),
    ("!environment:staging", ["Login", "Checkout"]),
    ("browser:Chrome*", ["Login", "Checkout"]),
    ('browser:"Firefox 119"', ["Search"]),
    ("user.email:ada-1@example.com", ["Checkout"]),
    ("has:user", ["Login", "Checkout"]),
    ("!has:user", ["Search"]),
    ("times_seen:>1", ["Search", "Checkout"]),
    ("is:unresolved lastSeen:-1h", ["Login", "Search", "Checkout"]),
    ("is:resolved", []),
])
def test_sentry_search_syntax_filters_the_stream(crashray: RunningCrashray, stream: Stream,
                                                 query: str, expected: list[str]) -> None:
    assert titles(issues(crashray, stream.slug, query), stream.tag) == expected


def test_free_text_searches_titles_and_exception_values(crashray: RunningCrashray,
                                                        stream: Stream) -> None:
    assert titles(issues(crashray, stream.slug, f"Search{stream.tag}"), stream.tag) == [
        "Search"]
    assert len(issues(crashray, stream.slug, '"it broke"')) == 3


def test_sorts_stats_and_user_counts(crashray: RunningCrashray, stream: Stream) -> None:
    by_freq = issues(crashray, stream.slug, "", sort="freq")
    assert titles(by_freq, stream.tag) == ["Checkout", "Search", "Login"]
    assert [sum(n for _, n in i["stats"]["24h"]) for i in by_freq] == [3, 2, 1]
    assert all(len(i["stats"]["24h"]) == 24 for i in by_freq)
    by_users = issues(crashray, stream.slug, "", sort="user")
    assert titles(by_users, stream.tag)[0] == "Checkout" and by_users[0]["userCount"] == 3


def test_cursor_pagination_follows_the_link_header(crashray: RunningCrashray,
                                                   stream: Stream) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"query": "", "limit": 2, "sort": "freq"}
    for _ in range(3):
        response = get(crashray, f"projects/crashray/{stream.slug}/issues/", **params)
        seen += [i["id"] for i in response.json()]
        following = re.search(r'rel="next"; results="(\w+)"; cursor="([^"]+)"',
                              response.headers["Link"])
        assert following is not None
        if following[1] == "false":
            break
        params["cursor"] = following[2]
    assert len(seen) == 3 and len(set(seen)) == 3


def test_a_syntax_error_is_a_400_pointing_at_the_position(crashray: RunningCrashray,
                                                          stream: Stream) -> None:
    response = get(crashray, f"projects/crashray/{stream.slug}/issues/",
                   query="times_seen:>lots")
    assert response.status_code == 400 and "position 11" in response.json()["detail"]


def test_the_organization_stream_spans_projects_within_the_tenant(
        crashray: RunningCrashray, stream: Stream) -> None:
    found = get(crashray, "organizations/crashray/issues/", query="browser:Chrome*",
                project=stream.project_id).json()
    assert titles(found, stream.tag) == ["Login", "Checkout"]
    outsider = httpx.get(f"{crashray.base_url}/api/0/organizations/crashray/issues/",
                         params={"project": stream.project_id}, timeout=10,
                         headers={"Authorization": f"Bearer {other_tenant_token(crashray)}"})
    assert outsider.status_code == 404


def checkout_issue(c: RunningCrashray, stream: Stream) -> dict[str, Any]:
    return next(i for i in issues(c, stream.slug, "") if i["title"].startswith("Checkout"))


def test_an_issues_events_read_like_sentrys_with_neighbours(crashray: RunningCrashray,
                                                            stream: Stream) -> None:
    issue = checkout_issue(crashray, stream)
    latest = get(crashray, f"issues/{issue['id']}/events/latest/").json()
    oldest = get(crashray, f"issues/{issue['id']}/events/oldest/").json()
    assert latest["groupID"] == issue["id"] and latest["nextEventID"] is None
    assert oldest["previousEventID"] is None and oldest["id"] != latest["id"]
    middle = get(crashray, f"issues/{issue['id']}/events/{latest['previousEventID']}/").json()
    assert (middle["previousEventID"], middle["nextEventID"]) == (oldest["id"], latest["id"])
    [exception] = [e for e in latest["entries"] if e["type"] == "exception"]
    frame = exception["data"]["values"][0]["stacktrace"]["frames"][-1]
    assert (frame["function"], frame["lineNo"], frame["inApp"]) == ("handle_checkout", 42, True)
    assert frame["context"] == [[40, "def handle():"], [41, "    cart = load()"],
                                [42, "    raise Broke(cart)"], [43, ""], [44, "# end"]]
    assert frame["vars"] == {"cart": "<Cart 3 items>"}
    assert any(e["type"] == "breadcrumbs" for e in latest["entries"])
    assert {"key": "browser", "value": "Chrome 120"} in latest["tags"]
    same = get(crashray, f"projects/crashray/{stream.slug}/events/{latest['id']}/").json()
    assert same["entries"] == latest["entries"]


def test_an_issues_events_are_searchable_and_its_tags_faceted(crashray: RunningCrashray,
                                                              stream: Stream) -> None:
    issue = checkout_issue(crashray, stream)
    everything = get(crashray, f"issues/{issue['id']}/events/").json()
    one = get(crashray, f"issues/{issue['id']}/events/",
              query="user.email:ada-1@example.com").json()
    assert len(everything) == 3 and len(one) == 1
    tags = {t["key"]: t for t in get(crashray, f"issues/{issue['id']}/tags/").json()}
    assert tags["browser"]["topValues"] == [
        {"key": "browser", "name": "Chrome 120", "value": "Chrome 120", "count": 3}]
    assert tags["environment"]["topValues"][0]["value"] == "prod"
    values = get(crashray, f"issues/{issue['id']}/tags/level/values/").json()
    assert values[0]["value"] == "error" and values[0]["count"] == 3
    outsider = {"Authorization": f"Bearer {other_tenant_token(crashray)}"}
    for path in ("events/", "events/latest/", "tags/", "tags/browser/values/"):
        response = httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/{path}",
                             headers=outsider, timeout=10)
        assert response.status_code == 404, path


def test_issue_and_project_stats_come_from_the_rollup(crashray: RunningCrashray,
                                                      stream: Stream) -> None:
    issue = get(crashray, f"issues/{checkout_issue(crashray, stream)['id']}/").json()
    assert len(issue["stats"]["24h"]) == 24 and len(issue["stats"]["30d"]) == 30
    assert sum(n for _, n in issue["stats"]["24h"]) == 3
    assert sum(n for _, n in issue["stats"]["30d"]) == 3
    hourly = get(crashray, f"projects/crashray/{stream.slug}/stats/").json()
    assert len(hourly) in (24, 25) and sum(n for _, n in hourly) == 6
    daily = get(crashray, f"projects/crashray/{stream.slug}/stats/", resolution="1d").json()
    assert sum(n for _, n in daily) == 6
    bad = get(crashray, f"projects/crashray/{stream.slug}/stats/", resolution="5m")
    assert bad.status_code == 400
