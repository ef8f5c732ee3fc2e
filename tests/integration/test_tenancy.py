"""Organizations, members, teams, tokens and logins in a running Crashray (real Ray,
PostgreSQL, chDB). Tenants are made with the CLI, as an operator would; every endpoint is
tried from the wrong tenant and must answer 404."""

from __future__ import annotations

import io
import re
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


@dataclass
class Tenants:
    org: str
    alice: str  # owner's token
    bob: str  # member's token
    mallory: str  # token of a user of another organization
    web_id: int
    api_slug: str
    issue_id: str
    event_id: str
    public_key: str
    quota_id: str


@pytest.fixture(scope="module")
def tenants(crashray: RunningCrashray) -> Iterator[Tenants]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("CRASHRAY_POSTGRES_URL", crashray.runtime.postgres_url)
    monkeypatch.setenv("CRASHRAY_DATA_DIR", str(crashray.settings.data_dir))
    monkeypatch.setenv("CRASHRAY_PORT", str(crashray.settings.port))
    tag = uuid.uuid4().hex[:6]
    org, evil = f"acme-{tag}", f"evil-{tag}"

    def run(*argv: str, stdin: str = "") -> str:
        import contextlib

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main(list(argv)) == 0
        return buffer.getvalue()

    for user in ("alice", "bob", "mallory"):
        run("user", "create", f"{user}-{tag}", "--password-stdin", stdin=PASSWORD + "\n")
    run("org", "create", org, "--owner", f"alice-{tag}")
    run("org", "create", evil, "--owner", f"mallory-{tag}")
    run("user", "create", f"carol-{tag}", "--password-stdin", "--org", org,
        stdin=PASSWORD + "\n")
    from storage import postgres, tenancy

    with postgres.connect(crashray.runtime.postgres_url) as conn:
        tenancy.add_member(conn, tenancy.organization_id(conn, org),
                           tenancy.user_id(conn, f"bob-{tag}"), "member")
        conn.commit()
    run("team", "create", "backend", "--org", org, "--member", f"bob-{tag}")
    dsn = run("project", "create", "web", "--org", org).split()[-1]
    run("project", "create", "api", "--org", org, "--team", "backend")
    tokens = {u: run("token", "create", "--user", f"{u}-{tag}", "--scopes",
                     "org:read,project:read,project:write,event:read,event:write,event:admin,"
                     "team:read,team:write,member:read,member:write,org:write,org:admin"
                     ).split()[-1] for u in ("alice", "bob", "mallory")}
    key, rest = dsn.split("//", 1)[1].split("@", 1)
    web_id = int(rest.rsplit("/", 1)[1])
    event_id = uuid.uuid4().hex
    event = {"platform": "python", "exception": {"values": [
        {"type": f"Tenant{tag}", "value": "secret"}]}}
    wait_until(lambda: httpx.post(f"{crashray.base_url}/api/{web_id}/envelope/",
                                  content=gzip_bytes(envelope_bytes(event, event_id)),
                                  headers=python_sdk_headers(key), timeout=10
                                  ).status_code == 200, 15, "the new project's key accepted")
    issues = wait_until(lambda: get(crashray, tokens["alice"],
                                    f"projects/{org}/web/issues/").json(), 30, "the issue")
    quota = call(crashray, "POST", f"organizations/{org}/quotas/", tokens["alice"],
                 {"scope": "organization", "window": 3600, "limit": None}).json()
    yield Tenants(org, tokens["alice"], tokens["bob"], tokens["mallory"], web_id, "api",
                  issues[0]["id"], event_id, key, quota["id"])
    monkeypatch.undo()


def get(c: RunningCrashray, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{c.base_url}/api/0/{path}", timeout=10,
                     headers={"Authorization": f"Bearer {token}"})


def call(c: RunningCrashray, method: str, path: str, token: str | None = None,
         body: object = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=10,
                         headers=headers, **kwargs)


def every_endpoint(t: Tenants) -> list[tuple[str, str, object]]:
    """Every route of the API scoped to a tenant (not the caller's own routes), with the
    victim organization's names and ids in its URL, walked from the app's routers so a new
    route is tried too; a change gets a body (the access check comes first)."""
    from fastapi.routing import APIRoute

    from serve_apps.api.app import ROUTERS
    from serve_apps.api.deps import access_rule

    values = {"org": t.org, "project": "web", "team": "backend", "issue_id": t.issue_id,
              "event_id": t.event_id, "which": "latest", "key": "level",
              "key_id": t.public_key, "quota_id": t.quota_id,
              "bundle": 1, "version": "shop@1.0", "file_id": 1, "rule_id": 1, "note_id": 1}
    found = []
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            rules = [access_rule(d.call) for d in route.dependant.dependencies
                     if d.call is not None]
            if not any(r is not None and r.level not in ("caller", "public") for r in rules):
                continue
            path = re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]), route.path).lstrip("/")
            for method in sorted(route.methods):
                query = f"?id={t.issue_id}" if path.endswith("/issues/") and method == "PUT" \
                    else f"?id={'0' * 32}" if path.endswith("/hashes/") and method == "DELETE" \
                    else ""
                found.append((method, path + query, None if method == "GET" else {"name": "x"}))
    # Last: it would delete the issue if it passed.
    return sorted(found, key=lambda e: (e[0], e[1]) == ("DELETE", f"issues/{t.issue_id}/"))


def test_another_organizations_user_and_token_get_404_everywhere(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    endpoints = every_endpoint(tenants)
    assert len(endpoints) >= 37
    for token in (tenants.mallory, crashray.info.api_token or ""):
        for method, path, body in endpoints:
            response = call(crashray, method, path, token, body)
            assert response.status_code == 404, (method, path, response.status_code)
    assert get(crashray, tenants.alice, f"issues/{tenants.issue_id}/").status_code == 200
    orgs = [o["slug"] for o in get(crashray, tenants.mallory, "organizations/").json()]
    assert tenants.org not in orgs and len(orgs) == 1


def test_members_see_only_their_teams_projects_when_membership_is_closed(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    def project_slugs(token: str) -> list[str]:
        return [p["slug"] for p in get(crashray, token,
                                       f"organizations/{tenants.org}/projects/").json()]

    assert project_slugs(tenants.bob) == ["api", "web"]  # open membership (the default)
    from storage import postgres

    with postgres.connect(crashray.runtime.postgres_url) as conn:
        conn.execute("UPDATE organizations SET open_membership = false WHERE slug = %s",
                     (tenants.org,))
        conn.commit()
    try:
        assert project_slugs(tenants.bob) == ["api"]
        assert get(crashray, tenants.bob, f"projects/{tenants.org}/web/issues/"
                   ).status_code == 404
        assert get(crashray, tenants.bob, f"issues/{tenants.issue_id}/").status_code == 404
        assert project_slugs(tenants.alice) == ["api", "web"]  # the owner sees all
    finally:
        with postgres.connect(crashray.runtime.postgres_url) as conn:
            conn.execute("UPDATE organizations SET open_membership = true WHERE slug = %s",
                         (tenants.org,))
            conn.commit()


def test_a_members_token_cannot_do_more_than_the_members_role(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    # bob's token carries project:write, but a member may not change project settings.
    denied = call(crashray, "PUT", f"projects/{tenants.org}/web/", tenants.bob,
                  {"fingerprintingRules": ""})
    assert denied.status_code == 403 and "project:write" in denied.json()["detail"]
    allowed = call(crashray, "PUT", f"projects/{tenants.org}/web/", tenants.alice,
                   {"fingerprintingRules": ""})
    assert allowed.status_code == 200


def login(c: RunningCrashray, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{c.base_url}/api/0/auth/login/", timeout=30,
                      json={"username": username, "password": password})


def test_a_browser_login_needs_the_csrf_token_for_changes_and_ends_at_logout(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    tag = tenants.org.split("-", 1)[1]
    assert login(crashray, f"alice-{tag}", "wrong password").status_code == 401
    response = login(crashray, f"alice-{tag}", PASSWORD)
    assert response.status_code == 200
    cookie = response.cookies["crashray_session"]
    assert "httponly" in response.headers["set-cookie"].lower()
    assert "samesite=lax" in response.headers["set-cookie"].lower()
    csrf = response.json()["csrfToken"]
    jar = {"crashray_session": cookie}
    me = httpx.get(f"{crashray.base_url}/api/0/auth/", cookies=jar, timeout=10).json()
    assert me["user"]["username"] == f"alice-{tag}" and tenants.org in me["organizations"]
    assert httpx.get(f"{crashray.base_url}/api/0/issues/{tenants.issue_id}/", cookies=jar,
                     timeout=10).status_code == 200
    path = f"{crashray.base_url}/api/0/issues/{tenants.issue_id}/"
    forged = httpx.put(path, json={"status": "unresolved"}, cookies=jar, timeout=10)
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    ok = httpx.put(path, json={"status": "unresolved"}, cookies=jar, timeout=10,
                   headers={"X-CSRFToken": csrf})
    assert ok.status_code == 200
    assert httpx.delete(f"{crashray.base_url}/api/0/auth/", cookies=jar, timeout=10,
                        headers={"X-CSRFToken": csrf}).status_code == 204
    assert httpx.get(f"{crashray.base_url}/api/0/auth/", cookies=jar,
                     timeout=10).status_code == 401


def test_repeated_failed_logins_lock_the_username_out(crashray: RunningCrashray,
                                                      tenants: Tenants) -> None:
    tag = tenants.org.split("-", 1)[1]
    for _ in range(crashray.settings.login_max_failures):
        assert login(crashray, f"carol-{tag}", "guess").status_code == 401
    locked = login(crashray, f"carol-{tag}", PASSWORD)  # even the right password
    assert locked.status_code == 429 and re.search(r"try again in \d+ s",
                                                   locked.json()["detail"])


def test_teams_members_projects_keys_and_tokens_are_managed_through_the_api(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    o, tag = tenants.org, tenants.org.split("-", 1)[1]
    team = call(crashray, "POST", f"organizations/{o}/teams/", tenants.alice,
                {"slug": "mobile"})
    assert team.status_code == 201
    assert call(crashray, "POST", f"organizations/{o}/teams/", tenants.alice,
                {"slug": "mobile"}).status_code == 409
    assert call(crashray, "PUT", f"teams/{o}/mobile/", tenants.alice,
                {"name": "Mobile apps"}).json()["name"] == "Mobile apps"
    assert call(crashray, "PUT", f"teams/{o}/nope/", tenants.alice,
                {"name": "x"}).status_code == 404
    # A member may not create teams or add members (its role lacks team:write/member:write).
    assert call(crashray, "POST", f"organizations/{o}/teams/", tenants.bob,
                {"slug": "rogue"}).status_code == 403
    # A user of another organization cannot be added (it answers as an unknown user);
    # one an operator made without an organization can.
    assert call(crashray, "POST", f"organizations/{o}/members/", tenants.alice,
                {"username": f"mallory-{tag}"}).status_code == 404
    from storage import postgres, tenancy

    with postgres.connect(crashray.runtime.postgres_url) as conn:
        tenancy.create_user(conn, f"erin-{tag}", None, PASSWORD)
        erin = tenancy.create_token(conn, "erin", ["project:read"],
                                    user=tenancy.user_id(conn, f"erin-{tag}"))
        conn.commit()
    added = call(crashray, "POST", f"organizations/{o}/members/", tenants.alice,
                 {"username": f"erin-{tag}", "role": "member", "teams": ["mobile"]})
    assert added.status_code == 201
    members = {m["user"]["username"]: m for m in
               get(crashray, tenants.alice, f"organizations/{o}/members/").json()}
    assert members[f"erin-{tag}"]["teams"] == ["mobile"]
    assert members[f"alice-{tag}"]["role"] == "owner"
    assert "email" not in members[f"alice-{tag}"]["user"]
    last_owner = call(crashray, "POST", f"organizations/{o}/members/", tenants.alice,
                      {"username": f"alice-{tag}", "role": "member"})
    assert last_owner.status_code == 400 and "one owner" in last_owner.json()["detail"]
    project = call(crashray, "POST", f"teams/{o}/mobile/projects/", tenants.alice,
                   {"name": "iOS App", "platform": "cocoa"})
    assert project.status_code == 201 and project.json()["slug"] == "ios-app"
    assert project.json()["dsn"].endswith(f"/{project.json()['id']}")
    key = call(crashray, "POST", f"projects/{o}/ios-app/keys/", tenants.alice,
               {"name": "CI"})
    assert key.status_code == 201 and key.json()["name"] == "CI"
    assert len(get(crashray, tenants.alice, f"projects/{o}/ios-app/keys/").json()) == 2
    assert call(crashray, "DELETE", f"projects/{o}/ios-app/keys/{key.json()['id']}/",
                tenants.alice).status_code == 204
    assert len(get(crashray, tenants.alice, f"projects/{o}/ios-app/keys/").json()) == 1
    renamed = call(crashray, "PUT", f"projects/{o}/ios-app/", tenants.alice,
                   {"name": "iOS", "platform": "apple-ios"})
    assert (renamed.json()["name"], renamed.json()["platform"]) == ("iOS", "apple-ios")
    org = call(crashray, "PUT", f"organizations/{o}/", tenants.alice, {"name": "Acme Inc"})
    assert org.json()["name"] == "Acme Inc" and org.json()["openMembership"] is True
    assert call(crashray, "PUT", f"organizations/{o}/", tenants.bob,
                {"name": "Bob's"}).status_code == 403
    # Now a member, erin's token reaches acme (within the member role); mallory's does not.
    assert get(crashray, erin, f"organizations/{o}/projects/").status_code == 200
    assert get(crashray, tenants.mallory, f"organizations/{o}/projects/").status_code == 404


def test_a_logged_in_user_makes_its_own_tokens_and_organizations(
        crashray: RunningCrashray, tenants: Tenants) -> None:
    tag = tenants.org.split("-", 1)[1]
    session = login(crashray, f"bob-{tag}", PASSWORD)
    jar, csrf = {"crashray_session": session.cookies["crashray_session"]}, \
        session.json()["csrfToken"]
    made = httpx.post(f"{crashray.base_url}/api/0/api-tokens/", timeout=10, cookies=jar,
                      headers={"X-CSRFToken": csrf},
                      json={"scopes": ["event:read", "project:read"], "name": "script"})
    assert made.status_code == 201
    token = made.json()["token"]
    assert get(crashray, token, f"organizations/{tenants.org}/projects/").status_code == 200
    listed = httpx.get(f"{crashray.base_url}/api/0/api-tokens/", cookies=jar, timeout=10)
    assert "script" in [t["name"] for t in listed.json()] and "token" not in listed.json()[0]
    # A token cannot mint tokens; a bad scope is named.
    assert call(crashray, "POST", "api-tokens/", token,
                {"scopes": ["event:read"]}).status_code == 403
    bad = httpx.post(f"{crashray.base_url}/api/0/api-tokens/", timeout=10, cookies=jar,
                     headers={"X-CSRFToken": csrf}, json={"scopes": ["event:delete"]})
    assert bad.status_code == 400 and "event:delete" in bad.json()["detail"]
    org = httpx.post(f"{crashray.base_url}/api/0/organizations/", timeout=10, cookies=jar,
                     headers={"X-CSRFToken": csrf}, json={"slug": f"bobs-{tag}"})
    assert org.status_code == 201
    mine = httpx.get(f"{crashray.base_url}/api/0/organizations/", cookies=jar, timeout=10)
    assert f"bobs-{tag}" in [o["slug"] for o in mine.json()]


def test_an_admin_changes_only_its_teams_projects(crashray: RunningCrashray,
                                                  tenants: Tenants) -> None:
    from storage import postgres, tenancy

    tag = tenants.org.split("-", 1)[1]
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        org = tenancy.organization_id(conn, tenants.org)
        dave = tenancy.create_user(conn, f"dave-{tag}", None, PASSWORD)
        tenancy.add_member(conn, org, dave, "admin")
        tenancy.add_team_member(conn, tenancy.team_id(conn, org, "backend"), org, dave)
        token = tenancy.create_token(conn, "admin", ["project:read", "project:write",
                                                     "team:write", "event:read"], user=dave)
        conn.commit()
    o = tenants.org
    assert call(crashray, "PUT", f"projects/{o}/api/", token, {"name": "API"}
                ).status_code == 200  # a project of dave's team
    other = call(crashray, "PUT", f"projects/{o}/web/", token, {"name": "Web"})
    assert other.status_code == 403 and "its teams" in other.json()["detail"]
    assert call(crashray, "POST", f"projects/{o}/web/keys/", token, {"name": "x"}
                ).status_code == 403
    assert call(crashray, "PUT", f"teams/{o}/backend/", token, {"name": "Backend"}
                ).status_code == 200
