"""The Web API against hostile input, in a running Crashray (real Ray, Serve with its
HAProxy, PostgreSQL, chDB): body limits, logins that cannot be used to lock others out or
to fill tables, nothing of a tenant before a login, token scopes, membership probing, and
no odd value anywhere that answers a 5xx."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cluster.cli import main
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until

PASSWORD = "correct horse battery"
#: A second loopback address: a client that is not one of the trusted proxies (127.0.0.1).
OTHER_ADDRESS = "127.0.0.2"


@dataclass
class Guarded:
    tag: str
    org: str
    owner: str  # the owner's full token
    reader: str  # the owner's token with org:read only
    issue_id: str
    event_id: str
    public_key: str
    quota_id: str


@pytest.fixture(scope="module")
def guarded(crashray: RunningCrashray) -> Iterator[Guarded]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("CRASHRAY_POSTGRES_URL", crashray.runtime.postgres_url)
    monkeypatch.setenv("CRASHRAY_DATA_DIR", str(crashray.settings.data_dir))
    monkeypatch.setenv("CRASHRAY_PORT", str(crashray.settings.port))
    tag = uuid.uuid4().hex[:6]
    org = f"guard-{tag}"

    def run(*argv: str, stdin: str = "") -> str:
        import contextlib

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(list(argv)) == 0
        return buffer.getvalue()

    for user in ("owner", "outsider", "loner"):
        run("user", "create", f"{user}-{tag}", "--password-stdin", stdin=PASSWORD + "\n")
    run("org", "create", org, "--owner", f"owner-{tag}")
    run("org", "create", f"other-{tag}", "--owner", f"outsider-{tag}")
    dsn = run("project", "create", "web", "--org", org).split()[-1]
    scopes = ("org:read,org:write,org:admin,project:read,project:write,event:read,"
              "event:write,event:admin,team:read,team:write,member:read,member:write")
    owner = run("token", "create", "--user", f"owner-{tag}", "--scopes", scopes).split()[-1]
    reader = run("token", "create", "--user", f"owner-{tag}", "--scopes", "org:read"
                 ).split()[-1]
    key, rest = dsn.split("//", 1)[1].split("@", 1)
    project_id = int(rest.rsplit("/", 1)[1])
    event_id = uuid.uuid4().hex
    event = {"platform": "python", "environment": "production",
             "exception": {"values": [{"type": f"Guard{tag}", "value": "boom"}]}}
    wait_until(lambda: httpx.post(f"{crashray.base_url}/api/{project_id}/envelope/",
                                  content=gzip_bytes(envelope_bytes(event, event_id)),
                                  headers=python_sdk_headers(key), timeout=10
                                  ).status_code == 200, 15, "the new project's key accepted")
    issues = wait_until(lambda: api(crashray, "GET", f"projects/{org}/web/issues/",
                                    owner).json(), 30, "the issue")
    quota = api(crashray, "POST", f"organizations/{org}/quotas/", owner,
                {"scope": "organization", "window": 3600, "limit": None}).json()
    yield Guarded(tag, org, owner, reader, issues[0]["id"], event_id, key, quota["id"])
    monkeypatch.undo()


def api(c: RunningCrashray, method: str, path: str, token: str | None = None,
        body: object = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=30,
                         headers=headers, **kwargs)


def login(c: RunningCrashray, username: str, password: str, source: str | None = None,
          **kwargs: Any) -> httpx.Response:
    """A login from ``source`` (a local address the connection is made from)."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(f"{c.base_url}/api/0/auth/login/",
                           json={"username": username, "password": password}, **kwargs)


# --- 1. the body limit --------------------------------------------------------------------


def test_a_25_mb_login_body_answers_413_in_the_api_error_shape(
        crashray: RunningCrashray) -> None:
    body = b'{"username": "' + b"a" * (25 * 1000 * 1000) + b'", "password": "x"}'
    response = httpx.post(f"{crashray.base_url}/api/0/auth/login/", content=body,
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "CRASHRAY_API_MAX_BODY_BYTES" in response.json()["detail"]


def test_a_chunked_body_without_length_over_the_limit_answers_413(
        crashray: RunningCrashray) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"username": "'
        for _ in range(40):  # 2.5 MB, no Content-Length: Transfer-Encoding: chunked
            yield b"a" * 64_000
        yield b'", "password": "x"}'

    response = httpx.post(f"{crashray.base_url}/api/0/auth/login/", content=chunks(),
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413 and response.json()["code"] == "too_large"


def test_a_body_within_the_limit_still_works(crashray: RunningCrashray,
                                             guarded: Guarded) -> None:
    # Within the rule limits too (1,000 rules, 64 KiB): no wildcards, long literals.
    rules = "\n".join(f"message:\"a literal text, number {i:04d}, padded\" -> group-{i}"
                      for i in range(900))
    assert 50_000 < len(rules) < crashray.settings.api_max_body_bytes
    response = api(crashray, "PUT", f"projects/{guarded.org}/web/", guarded.owner,
                   {"fingerprintingRules": rules})
    assert response.status_code == 200, response.text
    api(crashray, "PUT", f"projects/{guarded.org}/web/", guarded.owner,
        {"fingerprintingRules": ""})


# --- 2. logins ---------------------------------------------------------------------------


def failure_addresses(c: RunningCrashray, username: str) -> list[str]:
    from storage import postgres

    with postgres.connect(c.runtime.postgres_url) as conn:
        rows = conn.execute("SELECT client_ip FROM login_failures WHERE username = %s",
                            (username,)).fetchall()
    return [str(r[0]) for r in rows]


def test_the_login_address_is_the_peer_haproxy_saw_not_a_forged_header(
        crashray: RunningCrashray) -> None:
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    assert login(crashray, name, "x", OTHER_ADDRESS,
                 headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert login(crashray, name, "x", OTHER_ADDRESS).status_code == 401
    assert failure_addresses(crashray, name) == [OTHER_ADDRESS, OTHER_ADDRESS]


def test_a_trusted_local_proxy_passes_on_the_client_address(crashray: RunningCrashray) -> None:
    name = f"proxied-{uuid.uuid4().hex[:8]}"
    # From 127.0.0.1 (a trusted proxy): the address it appended is the client.
    assert login(crashray, name, "x", "127.0.0.1",
                 headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 401
    assert failure_addresses(crashray, name) == ["198.51.100.7"]


def test_an_attackers_failures_do_not_lock_the_owner_out(
        crashray: RunningCrashray, guarded: Guarded) -> None:
    victim = f"owner-{guarded.tag}"
    answers = [login(crashray, victim, f"guess-{i}", OTHER_ADDRESS).status_code
               for i in range(crashray.settings.login_max_failures + 3)]
    assert answers[:crashray.settings.login_max_failures] == [401] * 5
    assert 429 in answers[crashray.settings.login_max_failures:]
    owner = login(crashray, victim, PASSWORD, "127.0.0.1")
    assert owner.status_code == 200, owner.text


#: Failed logins in a row after which one must be refused: each failure at least doubles the
#: delay (1, 2, 4, 8, 16 s), so only a login slower than that delay could pass them all.
REFUSED_WITHIN_ATTEMPTS = 5


def refused_login(crashray: RunningCrashray, name: str) -> httpx.Response:
    """The first of the next failing logins that the throttle refuses. The delay after the
    free failures starts at 1 s from the last failure: on a busy machine (a login hashes
    with scrypt) the next attempt may come after it ran out, and fails (401), which
    doubles the delay for the one after."""
    for _ in range(REFUSED_WITHIN_ATTEMPTS):
        answer = login(crashray, name, "x", OTHER_ADDRESS)
        if answer.status_code == 429:
            return answer
        assert answer.status_code == 401, answer.text
    raise AssertionError(f"{REFUSED_WITHIN_ATTEMPTS} failing logins in a row, none refused")


def test_failures_from_one_address_grow_its_delay(crashray: RunningCrashray) -> None:
    name = f"target-{uuid.uuid4().hex[:8]}"
    for _ in range(crashray.settings.login_max_failures):
        assert login(crashray, name, "x", OTHER_ADDRESS).status_code == 401
    waits = []
    for _ in range(3):
        refused = refused_login(crashray, name)
        assert re.search(r"try again in \d+ s", refused.json()["detail"])
        waits.append(int(refused.headers["retry-after"]))
        time.sleep(waits[-1] + 0.2)
        assert login(crashray, name, "x", OTHER_ADDRESS).status_code == 401
    assert waits == sorted(waits) and waits[-1] > waits[0], waits


def test_a_100_kb_username_is_a_400_naming_the_field_and_is_not_stored(
        crashray: RunningCrashray) -> None:
    name = "u" * 100_000
    response = login(crashray, name, "x")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("username:")
    assert failure_addresses(crashray, name) == []
    long_password = login(crashray, "someone", "p" * 100_000)
    assert long_password.status_code == 400
    assert long_password.json()["detail"].startswith("password:")


def test_old_login_failures_and_expired_sessions_are_pruned_by_logins(
        crashray: RunningCrashray) -> None:
    from storage import postgres

    stale = f"stale-{uuid.uuid4().hex[:8]}"
    window = crashray.settings.login_window_s
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        user = conn.execute("INSERT INTO users (username, password_hash) VALUES (%s, '')"
                            " RETURNING id", (stale,)).fetchone()
        assert user is not None
        conn.execute("INSERT INTO login_failures (username, client_ip, at) SELECT %s,"
                     " '192.0.2.1', now() - make_interval(secs => %s) FROM"
                     " generate_series(1, 50)", (stale, 2 * window))
        conn.execute("INSERT INTO user_sessions (session_hash, user_id, csrf_token,"
                     " expires_at) SELECT md5(random()::text), %s, 'x', now() - interval"
                     " '1 day' FROM generate_series(1, 50)", (user[0],))
        conn.commit()
    assert login(crashray, f"pruner-{uuid.uuid4().hex[:6]}", "x").status_code == 401
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        failures = conn.execute("SELECT count(*) FROM login_failures WHERE username = %s",
                                (stale,)).fetchone()
        sessions = conn.execute("SELECT count(*) FROM user_sessions WHERE user_id = %s",
                                (user[0],)).fetchone()
    assert failures == (0,) and sessions == (0,)


# --- 3. nothing of a tenant before a login ------------------------------------------------


def test_the_start_page_shows_no_dsn_or_organization_before_a_login(
        crashray: RunningCrashray, guarded: Guarded) -> None:
    page = httpx.get(f"{crashray.base_url}/", timeout=10)
    assert page.status_code == 200
    assert crashray.public_key not in page.text and guarded.public_key not in page.text
    assert "@" not in page.text and guarded.org not in page.text
    assert crashray.info.organization_slug not in page.text


def test_the_openapi_schema_is_not_served(crashray: RunningCrashray,
                                          guarded: Guarded) -> None:
    for path in ("openapi.json", "docs", "redoc"):
        assert api(crashray, "GET", path).status_code == 404
        assert api(crashray, "GET", path, guarded.owner).status_code == 404


# --- 4. authorization ---------------------------------------------------------------------


def test_a_read_only_token_cannot_create_organizations(crashray: RunningCrashray,
                                                       guarded: Guarded) -> None:
    slug = f"ro-{guarded.tag}"
    refused = api(crashray, "POST", "organizations/", guarded.reader, {"slug": slug})
    assert refused.status_code == 403 and "org:write" in refused.json()["detail"]
    created = api(crashray, "POST", "organizations/", guarded.owner, {"slug": slug})
    assert created.status_code == 201
    mine = api(crashray, "GET", "organizations/", guarded.owner).json()
    assert slug in [o["slug"] for o in mine]
    members = api(crashray, "GET", f"organizations/{slug}/members/", guarded.owner).json()
    assert [m["role"] for m in members] == ["owner"]


def test_adding_a_user_of_another_tenant_answers_as_a_user_that_does_not_exist(
        crashray: RunningCrashray, guarded: Guarded) -> None:
    path = f"organizations/{guarded.org}/members/"
    outsider = api(crashray, "POST", path, guarded.owner, {"username": f"outsider-{guarded.tag}"})
    missing = api(crashray, "POST", path, guarded.owner, {"username": f"ghost-{guarded.tag}"})
    assert outsider.status_code == missing.status_code == 404
    assert outsider.json()["detail"].replace("outsider", "ghost") == missing.json()["detail"]
    # A user of no organization yet (made by an operator to be added) can be added.
    loner = api(crashray, "POST", path, guarded.owner, {"username": f"loner-{guarded.tag}"})
    assert loner.status_code == 201


# --- 5. odd input is a 4xx ----------------------------------------------------------------

ODD_VALUES = ["%00", "x%00y", "99999999999999999999", "-1", "0", "%C3%A9t%C3%A9",
              "%F0%9F%92%A5", "a" * 300, "%FF%FE", "null", "1e999", "9" * 400]
ODD_QUERIES = [
    "environment=production&statsPeriod=99999w", "statsPeriod=99999w", "statsPeriod=0s",
    "start=0001-01-01T00:00:00&end=9999-12-31T23:59:59", "start=1900-01-01&end=2300-01-01",
    "start=9999-12-31&end=9999-12-31T23:59:59", "cursor=0:999999999:0",
    "cursor=0:99999999999999999999:0", "limit=99999999999999999999", "limit=0", "limit=-5",
    "limit=%D9%A3", "query=%00", "query=%C3%A9%F0%9F%92%A5", "environment=%00",
    "environment=%E2%80%AE", "id=99999999999999999999", "id=-1", "project=99999999999999999999",
    "since=1e300&until=1e308", "since=-99999999999&until=99999999999999",
    "resolution=1d&since=0&until=4102444800", "field=sum(quantity)&interval=1s",
    "field=sum(quantity)&statsPeriod=99999w&interval=1h",
    "field=sum(quantity)&start=0001-01-01T00:00:00Z&end=9999-12-31T00:00:00Z&interval=1d",
    "field=sum(quantity)&interval=99999999999999999999d", "sort=%00", "query=age:-99999999w",
    "query=timestamp:>0001-01-01", "query=times_seen:>99999999999999999999999",
    "query=lastSeen:-9999999999d",
]
ODD_BODIES: list[object] = [
    {"name": "a\u0000b", "slug": "x\u0000", "username": "\u0000", "status": "resolved\u0000"},
    {"name": "x", "window": 10**30, "limit": 10**30, "scopeId": 10**30,
     "rateLimit": {"window": 10**30, "count": 10**30},
     "spikeProtection": {"floorPerHour": 10**30, "multiplier": 1e308},
     "statusDetails": {"ignoreCount": 10**30, "ignoreWindow": 10**30,
                       "ignoreUserCount": 10**30, "ignoreDuration": 10**30}},
    {"scopes": ["\u0000"], "categories": ["\u0000"], "teams": ["\u0000"],
     "sensitiveFields": ["\u0000"], "fingerprintingRules": "\u0000"},
    [], "text", 10**30,
]


def route_paths() -> list[tuple[str, str]]:
    """Every route of the API, walked from its routers so a new one is swept too."""
    from fastapi.routing import APIRoute

    from serve_apps.api.app import ROUTERS

    found = []
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            found += [(method, route.path) for method in sorted(route.methods)]
    return found


def fill(path: str, g: Guarded, odd: str | None = None, which: str | None = None) -> str:
    values = {"org": g.org, "project": "web", "team": "default", "issue_id": g.issue_id,
              "event_id": g.event_id, "which": "latest", "key": "level",
              "key_id": g.public_key, "quota_id": g.quota_id,
              "bundle": 1, "file_id": 1, "version": "shop@1.0", "rule_id": 1, "note_id": 1}
    return re.sub(r"\{(\w+)\}", lambda m: odd if odd is not None and m[1] == which
                  else str(values[m[1]]), path).lstrip("/")


def raw(client: httpx.Client, c: RunningCrashray, method: str, path: str, token: str,
        body: object = None) -> int:
    """The status of a request sent as written (no URL normalization by the client)."""
    content = None if body is None else json.dumps(body).encode()  # ints past 64 bits too
    request = httpx.Request(method, f"{c.base_url}/api/0/", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=content)
    request.url = request.url.copy_with(raw_path=f"/api/0/{path}".encode())
    return client.send(request).status_code


def test_no_route_answers_a_5xx_to_odd_path_values_queries_or_bodies(
        crashray: RunningCrashray, guarded: Guarded) -> None:
    failures = []
    # One client for the sweep's thousands of requests (kept-alive connections): a
    # connection per request made this the suite's slowest test (190 s).
    client = httpx.Client(timeout=60)
    for method, path in route_paths():
        if (method, path) == ("DELETE", "/issues/{issue_id}/"):
            continue  # it would delete the issue the sweep works on
        tries = [(fill(path, guarded, odd, name), None)
                 for name in re.findall(r"\{(\w+)\}", path) for odd in ODD_VALUES]
        tries += [(f"{fill(path, guarded)}?{query}", None) for query in ODD_QUERIES]
        if method in ("POST", "PUT"):
            tries += [(fill(path, guarded), body) for body in ODD_BODIES]
        for url, body in tries:
            status = raw(client, crashray, method, url, guarded.owner, body)
            if status >= 500:
                failures.append((method, url[:120], str(body)[:60], status))
    client.close()
    assert not failures, "\n".join(map(str, failures))
