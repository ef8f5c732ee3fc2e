"""What a Sentry user tries first, against a running Crashray (real Ray, PostgreSQL, chDB):
the token printed at the first start works as Sentry's organization owner token, lists are
paginated as Sentry's, and errors answer in Sentry's shape."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration


def api(c: RunningCrashray, method: str, path: str, body: object = None,
        token: str | None = None) -> httpx.Response:
    return httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {token or c.info.api_token}"})


def test_the_first_token_lists_teams_and_creates_a_project_under_the_default_team(
        crashray: RunningCrashray) -> None:
    teams = api(crashray, "GET", "organizations/crashray/teams/")
    assert teams.status_code == 200, teams.text
    assert "crashray" in [t["slug"] for t in teams.json()]
    slug = f"sentry-style-{uuid.uuid4().hex[:6]}"
    created = api(crashray, "POST", "teams/crashray/crashray/projects/",
                  {"name": slug, "platform": "python"})
    assert created.status_code == 201, created.text
    host = crashray.base_url.split("://", 1)[1]
    assert created.json()["dsn"].endswith(f"@{host}/{created.json()['id']}")
    listed = api(crashray, "GET", "projects/").json()
    assert {"default", slug} <= {p["slug"] for p in listed}
    assert all(p["organization"]["slug"] == "crashray" for p in listed)


def test_the_default_project_belongs_to_the_default_team(crashray: RunningCrashray) -> None:
    members = api(crashray, "GET", "organizations/crashray/teams/").json()
    assert any(t["slug"] == "crashray" for t in members)
    # An admin of that team may change the project: it is the team's.
    detail = api(crashray, "GET", "projects/crashray/default/")
    assert detail.status_code == 200 and detail.json()["slug"] == "default"


def test_project_events_are_paginated_with_cursor_and_link(crashray: RunningCrashray) -> None:
    marker = uuid.uuid4().hex[:8]
    sent = []
    for n in range(5):
        event_id = uuid.uuid4().hex
        sent.append(event_id)
        response = httpx.post(
            f"{crashray.base_url}/api/1/envelope/", timeout=10,
            content=gzip_bytes(envelope_bytes(
                {"platform": "python", "message": f"page {marker} {n}"}, event_id)),
            headers=python_sdk_headers(crashray.public_key))
        assert response.status_code == 200
    # Its own five, not any five: other tests' events are in the project too.
    wait_until(lambda: set(sent) <= {e["id"] for e in api(
        crashray, "GET", "projects/crashray/default/events/?limit=100").json()}, 30,
        "the events stored")
    seen: list[str] = []
    url = "projects/crashray/default/events/?limit=2"
    for _ in range(100):
        page = api(crashray, "GET", url)
        assert page.status_code == 200 and len(page.json()) <= 2
        seen += [e["id"] for e in page.json()]
        following = re.search(r'<[^>]*/api/0/([^>]+)>; rel="next"; results="(\w+)"',
                              page.headers["Link"])
        assert following is not None
        if following[2] != "true":
            break
        url = following[1]
    assert set(sent) <= set(seen) and len(seen) == len(set(seen))


def test_bad_input_answers_400_naming_the_field_or_the_position(
        crashray: RunningCrashray) -> None:
    missing = api(crashray, "POST", "organizations/crashray/teams/", {"name": "no slug"})
    assert (missing.status_code, missing.json()) == (
        400, {"detail": "slug: Field required", "code": "invalid"})
    wrong = api(crashray, "PUT", "projects/crashray/default/keys/nope/",
                {"rateLimit": {"window": "60", "count": 1}})
    assert wrong.status_code == 400 and wrong.json()["detail"].startswith(
        "rateLimit.window:")
    search = api(crashray, "GET", "projects/crashray/default/issues/?query=level:error%20(")
    assert search.status_code == 400
    assert search.json()["detail"].startswith("query position 12:")
    assert search.json()["code"] == "invalid_search"
