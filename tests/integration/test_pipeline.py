"""The ingest pipeline end to end: real Ray + Serve, PostgreSQL, the ClickHouse engine,
and the real ``sentry-sdk`` as the client."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
import pytest
import sentry_sdk

from actors.clickhouse import clickhouse_store
from events.access import ROLE_SCOPES
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.support import (
    corpus_event,
    envelope_bytes,
    error_event,
    gzip_bytes,
    python_sdk_headers,
    wait_until,
)

pytestmark = pytest.mark.integration


def api_get(c: RunningCrashray, path: str) -> Any:
    response = httpx.get(f"{c.base_url}/api/0/projects/crashray/default/{path}",
                         headers={"Authorization": f"Bearer {c.info.api_token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def issue_titled(c: RunningCrashray, title: str) -> dict[str, Any] | None:
    """The issue of ``title``, searched by its unique first word: the shared instance holds
    many issues, and one whose events are hours old is not on the first page by date."""
    word = quote(title.split(":")[0].split()[0])
    return next((i for i in api_get(c, f"issues/?query={word}&statsPeriod=14d")
                 if i["title"] == title), None)


def raise_and_capture(exc_type: type[Exception], message: str) -> str:
    try:
        raise exc_type(message)
    except Exception as exc:
        event_id = sentry_sdk.capture_exception(exc)
    assert event_id is not None
    return event_id


def test_python_sdk_exceptions_group_into_one_issue_visible_through_the_api(
        crashray: RunningCrashray) -> None:
    sentry_sdk.init(dsn=crashray.info.dsn, release="demo@1.0", environment="ci")
    try:
        marker = uuid.uuid4().hex[:8]
        ids = [raise_and_capture(LookupError, f"missing {marker}") for _ in range(2)]
        sentry_sdk.flush(10)
    finally:
        sentry_sdk.get_client().close()
    issue = wait_until(lambda: (i := issue_titled(crashray, f"LookupError: missing {marker}"))
                       and i["count"] == "2" and i, 15, "the issue with count 2")
    assert issue["level"] == "error" and issue["status"] == "unresolved"
    assert "raise_and_capture" in issue["culprit"]
    events = {e["eventID"]: e for e in api_get(crashray, "events/")}
    assert set(ids) <= set(events)
    assert events[ids[0]]["groupID"] == issue["id"]
    assert {"key": "environment", "value": "ci"} in events[ids[0]]["tags"] or any(
        t["key"] == "server_name" for t in events[ids[0]]["tags"])


def post_envelope(c: RunningCrashray, body: bytes, headers: dict[str, str],
                  project: int = 1, endpoint: str = "envelope") -> httpx.Response:
    return httpx.post(f"{c.base_url}/api/{project}/{endpoint}/", content=body, headers=headers,
                      timeout=10)


def test_missing_auth_is_401_with_relays_detail(crashray: RunningCrashray,
                                                corpus_dir: Path) -> None:
    response = post_envelope(crashray, envelope_bytes(corpus_event(corpus_dir)), {})
    assert response.status_code == 401
    assert response.json() == {"detail": "missing authorization information"}


def test_unknown_key_and_other_projects_key_are_403(crashray: RunningCrashray,
                                                    corpus_dir: Path) -> None:
    body = gzip_bytes(envelope_bytes(corpus_event(corpus_dir)))
    unknown = post_envelope(crashray, body, python_sdk_headers("0" * 32))
    other_project = post_envelope(crashray, body, python_sdk_headers(crashray.public_key),
                                  project=999)
    for response in (unknown, other_project):
        assert response.status_code == 403
        assert response.json()["detail"] == "event submission rejected with_reason: ProjectId"


def test_malformed_envelope_is_400_naming_the_item(crashray: RunningCrashray) -> None:
    body = b'{"event_id":"' + uuid.uuid4().hex.encode() + b'"}\n{"type":"event","length":500}\n{}'
    response = post_envelope(crashray, body, python_sdk_headers(crashray.public_key, False))
    assert response.status_code == 400
    assert response.json()["detail"] == "invalid event envelope"
    assert "item 1" in " ".join(response.json()["causes"])


def test_oversized_event_is_413_naming_the_setting(crashray: RunningCrashray,
                                                   corpus_dir: Path) -> None:
    event = {**corpus_event(corpus_dir), "extra": {"blob": "x" * (1_100_000)}}
    response = post_envelope(crashray, gzip_bytes(envelope_bytes(event)),
                             python_sdk_headers(crashray.public_key))
    assert response.status_code == 413
    assert "CRASHRAY_MAX_EVENT_BYTES" in orjson.dumps(response.json()).decode()


def test_cors_preflight_allows_browser_sdks(crashray: RunningCrashray) -> None:
    response = httpx.options(f"{crashray.base_url}/api/1/envelope/",
                             headers={"Origin": "https://shop.example.com",
                                      "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "x-sentry-auth" in response.headers["access-control-allow-headers"]


def test_store_endpoint_accepts_plain_json_and_answers_its_event_id(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    event = {**corpus_event(corpus_dir), "event_id": event_id}
    headers = {**python_sdk_headers(crashray.public_key, False),
               "Content-Type": "application/json"}
    response = post_envelope(crashray, orjson.dumps(event), headers, endpoint="store")
    assert response.status_code == 200
    assert response.json() == {"id": event_id}
    wait_until(lambda: any(e["eventID"] == event_id for e in api_get(crashray, "events/?limit=100")),
               15, "the /store/ event in the events list")


def test_revoked_key_is_refused_within_the_refresh_interval(crashray: RunningCrashray,
                                                            corpus_dir: Path) -> None:
    url = crashray.runtime.postgres_url
    key = uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO project_keys (project_id, public_key, secret_key)"
                     " VALUES (1, %s, 'x')", (key,))
    body = gzip_bytes(envelope_bytes(corpus_event(corpus_dir)))
    wait_until(lambda: post_envelope(crashray, body, python_sdk_headers(key)).status_code == 200,
               10, "the new key to be accepted")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE project_keys SET is_active = false WHERE public_key = %s", (key,))
    wait_until(lambda: post_envelope(crashray, body, python_sdk_headers(key)).status_code == 403,
               10, "the revoked key to be refused")


def test_default_scrubbing_filters_secrets_before_storage(crashray: RunningCrashray,
                                                          corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    event = {**corpus_event(corpus_dir),
             "request": {"url": "https://shop.example.com/login", "method": "POST",
                         "headers": {"Authorization": "Bearer abcdef", "Accept": "*/*"}},
             "extra": {"password": "hunter2", "card": "4242 4242 4242 4242"},
             "user": {"id": "42", "ip_address": "10.1.2.3"}}
    response = post_envelope(crashray, gzip_bytes(envelope_bytes(event, event_id)),
                             python_sdk_headers(crashray.public_key))
    assert response.status_code == 200
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    body = wait_until(lambda: store.event_body(1, 1, event_id), 15, "the stored event")
    stored = orjson.loads(body)
    assert stored["extra"]["password"] == "[Filtered]"
    assert "4242" not in orjson.dumps(stored["extra"]).decode()
    assert ["Authorization", "[Filtered]"] in stored["request"]["headers"]
    assert "ip_address" not in stored["user"] or stored["user"]["ip_address"] is None
    assert "hunter2" not in body
    assert stored["_meta"]["extra"]["password"][""]["rem"][0][0] == "@password:filter"


def other_tenant_token(c: RunningCrashray) -> str:
    """An admin token of a second organization, which must see nothing of `crashray`."""
    from storage import postgres

    with postgres.connect(c.runtime.postgres_url) as conn:
        row = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, 'Other')"
                           " ON CONFLICT (slug) DO UPDATE SET name = 'Other' RETURNING id",
                           (f"other-{uuid.uuid4().hex[:6]}",)).fetchone()
        assert row is not None
        ensure_project(conn, int(row[0]), "default", DEFAULT_GROUPING_CONFIG)
        token = postgres.create_api_token(conn, int(row[0]), "other", sorted(ROLE_SCOPES["owner"]))
        conn.commit()
    return token


def test_grouping_info_and_issue_hashes_explain_the_grouping_within_the_tenant(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    marker = uuid.uuid4().hex[:8]
    event = {**corpus_event(corpus_dir), "exception": {"values": [
        {"type": f"Grouping{marker}", "value": "x", "stacktrace": {"frames": [
            {"function": "handle", "module": "shop.views", "in_app": True,
             "context_line": "    charge(order)"}]}}]}}
    response = post_envelope(crashray, gzip_bytes(envelope_bytes(event, event_id)),
                             python_sdk_headers(crashray.public_key))
    assert response.status_code == 200
    issue = wait_until(lambda: issue_titled(crashray, f"Grouping{marker}: x"), 15, "the issue")
    info = api_get(crashray, f"events/{event_id}/grouping-info/")
    assert info["config"] == DEFAULT_GROUPING_CONFIG == "v3"
    assert info["variants"]["app"]["contributes"] is True
    assert info["variants"]["app"]["hash"] == info["hashes"][0]
    hashes = httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/hashes/",
                       headers={"Authorization": f"Bearer {crashray.info.api_token}"}).json()
    assert info["hashes"][0] in {h["id"] for h in hashes}
    # Another organization's token finds neither, and cannot tell they exist.
    other = {"Authorization": f"Bearer {other_tenant_token(crashray)}"}
    assert httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/hashes/",
                     headers=other).status_code == 404
    assert httpx.get(f"{crashray.base_url}/api/0/projects/crashray/default/events/{event_id}"
                     "/grouping-info/", headers=other).status_code == 404
    for listing in ("issues", "events"):
        assert httpx.get(f"{crashray.base_url}/api/0/projects/crashray/default/{listing}/",
                         headers=other).status_code == 404
    assert httpx.get(f"{crashray.base_url}/api/0/projects/crashray/default/events/not-an-id"
                     "/grouping-info/", headers={"Authorization":
                     f"Bearer {crashray.info.api_token}"}).status_code == 404


def put_issue(c: RunningCrashray, issue_id: str, body: object, token: str | None = None
              ) -> httpx.Response:
    return httpx.put(f"{c.base_url}/api/0/issues/{issue_id}/", json=body, timeout=10,
                     headers={"Authorization": f"Bearer {token or c.info.api_token}"})


def test_a_resolved_issue_reopens_as_regressed_on_a_new_event(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    event = {**corpus_event(corpus_dir), "exception": {"values": [
        {"type": f"Regress{marker}", "value": "again"}]}}

    def send() -> None:
        response = post_envelope(crashray, gzip_bytes(envelope_bytes(event)),
                                 python_sdk_headers(crashray.public_key))
        assert response.status_code == 200

    send()
    issue = wait_until(lambda: issue_titled(crashray, f"Regress{marker}: again"), 15, "issue")
    resolved = put_issue(crashray, issue["id"], {"status": "resolved"})
    assert resolved.status_code == 200
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["activity"][0]["type"] == "set_resolved"
    send()
    reopened = wait_until(lambda: (i := issue_titled(crashray, f"Regress{marker}: again"))
                          and i["status"] == "unresolved" and i, 15, "the regression")
    assert reopened["substatus"] == "regressed" and reopened["count"] == "2"
    activity = httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/activity/",
                         headers={"Authorization": f"Bearer {crashray.info.api_token}"}).json()
    assert [a["type"] for a in activity] == ["set_regression", "set_resolved"]


def test_issue_updates_are_validated_and_scoped(crashray: RunningCrashray,
                                                corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    event = {**corpus_event(corpus_dir), "exception": {"values": [
        {"type": f"Scoped{marker}", "value": "x"}]}}
    post_envelope(crashray, gzip_bytes(envelope_bytes(event)),
                  python_sdk_headers(crashray.public_key))
    issue = wait_until(lambda: issue_titled(crashray, f"Scoped{marker}: x"), 15, "issue")
    bogus = put_issue(crashray, issue["id"], {"status": "fixed"})
    assert bogus.status_code == 400 and "unresolved, resolved, ignored" in bogus.json()["detail"]
    window = put_issue(crashray, issue["id"], {"status": "ignored",
                                               "statusDetails": {"ignoreWindow": 60}})
    assert window.status_code == 400 and "ignoreWindow" in window.json()["detail"]
    assert put_issue(crashray, issue["id"], {"status": "ignored"},
                     token=other_tenant_token(crashray)).status_code == 404
    from storage import postgres

    with postgres.connect(crashray.runtime.postgres_url) as conn:
        read_only = postgres.create_api_token(conn, 1, "reader", ["event:read"])
        conn.commit()
    assert put_issue(crashray, issue["id"], {"status": "ignored"},
                     token=read_only).status_code == 403
    assert issue_titled(crashray, f"Scoped{marker}: x")["status"] == "unresolved"


def send_release(c: RunningCrashray, event: dict[str, object], release: str) -> None:
    response = post_envelope(c, gzip_bytes(envelope_bytes({**event, "release": release})),
                             python_sdk_headers(c.public_key))
    assert response.status_code == 200


def issue_with_count(c: RunningCrashray, title: str, count: int) -> dict[str, Any] | None:
    issue = issue_titled(c, title)
    return issue if issue is not None and issue["count"] == str(count) else None


def test_resolved_in_next_release_ignores_old_releases_and_reopens_on_newer(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    title = f"NextRelease{uuid.uuid4().hex[:8]}: boom"
    event = error_event(corpus_dir, title)
    send_release(crashray, event, "shop@1.4.2")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    assert put_issue(crashray, issue["id"], {"status": "resolved", "statusDetails": {
        "inNextRelease": True}}).json()["statusDetails"]["inRelease"] == "shop@1.4.2"
    send_release(crashray, event, "shop@1.4.2")  # the old release: stays resolved
    old = wait_until(lambda: issue_with_count(crashray, title, 2), 15, "the second event")
    assert old["status"] == "resolved"
    send_release(crashray, event, "shop@1.4.10")  # newer: regression
    new = wait_until(lambda: issue_with_count(crashray, title, 3), 15, "the third event")
    assert (new["status"], new["substatus"]) == ("unresolved", "regressed")


def test_ignored_until_two_more_events_comes_back_at_the_second(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    title = f"IgnoreCount{uuid.uuid4().hex[:8]}: noisy"
    event = error_event(corpus_dir, title)
    send_release(crashray, event, "shop@1")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    assert put_issue(crashray, issue["id"], {"status": "ignored", "statusDetails": {
        "ignoreCount": 2}}).status_code == 200
    send_release(crashray, event, "shop@1")
    assert wait_until(lambda: issue_with_count(crashray, title, 2), 15, "event 2")[
        "status"] == "ignored"
    send_release(crashray, event, "shop@1")
    back = wait_until(lambda: issue_with_count(crashray, title, 3), 15, "event 3")
    assert (back["status"], back["substatus"]) == ("unresolved", "escalating")


def bulk_put(c: RunningCrashray, ids: list[str], body: object, token: str | None = None,
             project: str = "crashray/default") -> httpx.Response:
    query = "&".join(f"id={i}" for i in ids)
    return httpx.put(f"{c.base_url}/api/0/projects/{project}/issues/?{query}", json=body,
                     headers={"Authorization": f"Bearer {token or c.info.api_token}"},
                     timeout=10)


def two_issues(c: RunningCrashray, corpus_dir: Path, prefix: str
               ) -> tuple[list[str], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Issue A with two events and issue B with one: (titles, events, A, B)."""
    marker = uuid.uuid4().hex[:8]
    titles = [f"{prefix}A{marker}: a", f"{prefix}B{marker}: b"]
    events = [error_event(corpus_dir, t) for t in titles]
    for event, times in zip(events, (2, 1), strict=True):
        for _ in range(times):
            send_release(c, event, "shop@1")
    a = wait_until(lambda: issue_with_count(c, titles[0], 2), 15, "issue A")
    b = wait_until(lambda: issue_with_count(c, titles[1], 1), 15, "issue B")
    return titles, events, a, b


def test_merged_issues_keep_one_count_and_new_events_land_in_the_survivor(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    titles, events, a, b = two_issues(crashray, corpus_dir, "Merge")
    other = other_tenant_token(crashray)
    assert bulk_put(crashray, [a["id"], b["id"]], {"merge": 1}, token=other).status_code == 404
    merged = bulk_put(crashray, [a["id"], b["id"]], {"merge": 1})
    assert merged.status_code == 200
    assert merged.json() == {"merge": {"parent": a["id"], "children": [b["id"]]}}
    assert issue_titled(crashray, titles[1]) is None  # no longer listed on its own
    send_release(crashray, events[1], "shop@1")  # B's hash now belongs to A
    survivor = wait_until(lambda: issue_with_count(crashray, titles[0], 4), 15, "count 4")
    assert survivor["id"] == a["id"]
    old = httpx.get(f"{crashray.base_url}/api/0/issues/{b['id']}/", follow_redirects=False,
                    headers={"Authorization": f"Bearer {crashray.info.api_token}"})
    assert old.status_code == 302 and old.headers["location"] == f"/api/0/issues/{a['id']}/"
    groups = {e["groupID"] for e in api_get(crashray, "events/?limit=100")
              if e["title"] in titles}
    assert groups == {a["id"]}


def test_bulk_status_updates_only_touch_the_projects_issues(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    title = f"Bulk{marker}: x"
    send_release(crashray, {**corpus_event(corpus_dir), "exception": {"values": [
        {"type": f"Bulk{marker}", "value": "x"}]}}, "shop@1")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    response = bulk_put(crashray, [issue["id"], "999999999"], {"status": "ignored"})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert issue_titled(crashray, title)["status"] == "ignored"
    assert bulk_put(crashray, [issue["id"]], {"status": "resolved"},
                    token=other_tenant_token(crashray)).status_code == 404
    assert issue_titled(crashray, title)["status"] == "ignored"
    assert bulk_put(crashray, [], {"status": "resolved"}).status_code == 400


def test_a_deleted_issue_stays_gone_and_its_new_events_are_filtered(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    title = f"Deleted{marker}: gone"
    event = {**corpus_event(corpus_dir), "exception": {"values": [
        {"type": f"Deleted{marker}", "value": "gone"}]}}
    send_release(crashray, event, "shop@1")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    url = f"{crashray.base_url}/api/0/issues/{issue['id']}/"
    assert httpx.delete(url, headers={"Authorization": f"Bearer {other_tenant_token(crashray)}"}
                        ).status_code == 404
    auth = {"Authorization": f"Bearer {crashray.info.api_token}"}
    assert httpx.delete(url, headers=auth).status_code == 202
    assert httpx.get(url, headers=auth).status_code == 404
    event_id = uuid.uuid4().hex
    response = post_envelope(crashray, gzip_bytes(envelope_bytes(event, event_id)),
                             python_sdk_headers(crashray.public_key))
    assert response.status_code == 200  # accepted, then discarded as Sentry does
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    wait_until(lambda: store.query_rows(
        "SELECT sum(quantity) FROM outcomes WHERE project_id = 1 AND outcome = 'filtered'"
        " AND reason = 'discarded_hash'", {})[0][0], 15, "the filtered outcome")
    assert store.event_body(1, 1, event_id) is None
    assert issue_titled(crashray, title) is None


def test_user_counts_are_distinct_users_across_merged_issues(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    titles = [f"UsersA{marker}: a", f"UsersB{marker}: b"]
    users = [[{"id": "1"}, {"id": "2"}, {"id": "2"}], [{"id": "2"}, {"email": "c@example.com"}]]
    for title, people in zip(titles, users, strict=True):
        for user in people:
            event = {**corpus_event(corpus_dir), "user": user, "exception": {"values": [
                {"type": title.split(":")[0], "value": title.split(": ")[1]}]}}
            send_release(crashray, event, "shop@1")
    a = wait_until(lambda: issue_with_count(crashray, titles[0], 3), 15, "issue A")
    b = wait_until(lambda: issue_with_count(crashray, titles[1], 2), 15, "issue B")
    assert (a["userCount"], b["userCount"]) == (2, 2)
    assert bulk_put(crashray, [a["id"], b["id"]], {"merge": 1}).status_code == 200
    merged = wait_until(lambda: issue_with_count(crashray, titles[0], 5), 15, "the merge")
    assert merged["userCount"] == 3  # user 2 is in both, counted once


def test_fingerprint_rules_set_through_the_api_regroup_new_events(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    url = f"{crashray.base_url}/api/0/projects/crashray/default/"
    auth = {"Authorization": f"Bearer {crashray.info.api_token}"}
    bad = httpx.put(url, headers=auth, json={"fingerprintingRules":
                                             f"type:Rule{marker}* -> db\nstack.file:x -> y"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("fingerprintingRules: line 2, column 1")
    rules = f'# database errors are one problem\ntype:Rule{marker}* -> database-failure' \
            f' title="Database failure ({{{{ type }}}})"'
    saved = httpx.put(url, headers=auth, json={"fingerprintingRules": rules})
    assert saved.status_code == 200 and saved.json()["fingerprintingRules"] == rules
    assert httpx.put(url, json={"fingerprintingRules": ""}, headers={
        "Authorization": f"Bearer {other_tenant_token(crashray)}"}).status_code == 404
    time.sleep(1.0)  # consumers re-read project settings every project_settings_refresh_s
    for kind in ("A", "B"):
        event = {**corpus_event(corpus_dir), "exception": {"values": [
            {"type": f"Rule{marker}{kind}", "value": "connection reset"}]}}
        send_release(crashray, event, "shop@1")
    issue = wait_until(lambda: next((i for i in api_get(crashray, "issues/?query=")
                                     if i["title"].startswith("Database failure (Rule")
                                     and marker in i["title"] and i["count"] == "2"), None),
                       15, "both events in the rule's issue")
    hashes = httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/hashes/",
                       headers=auth).json()
    assert hashlib.md5(b"database-failure").hexdigest() in {h["id"] for h in hashes}
    httpx.put(url, headers=auth, json={"fingerprintingRules": ""})


def test_unmerge_moves_chosen_hashes_and_their_events_to_a_new_issue(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    titles, events, a, b = two_issues(crashray, corpus_dir, "Unmerge")
    auth = {"Authorization": f"Bearer {crashray.info.api_token}"}
    b_hashes = [h["id"] for h in httpx.get(
        f"{crashray.base_url}/api/0/issues/{b['id']}/hashes/", headers=auth).json()]
    assert bulk_put(crashray, [a["id"], b["id"]], {"merge": 1}).status_code == 200
    wait_until(lambda: issue_with_count(crashray, titles[0], 3), 15, "the merge")
    query = "&".join(f"id={h}" for h in b_hashes)
    url = f"{crashray.base_url}/api/0/issues/{a['id']}/hashes/?{query}"
    assert httpx.delete(url, headers={"Authorization": f"Bearer {other_tenant_token(crashray)}"}
                        ).status_code == 404
    split = httpx.delete(url, headers=auth)
    assert split.status_code == 202 and split.json()["events"] == 1
    new_id = split.json()["issue"]
    assert issue_with_count(crashray, titles[0], 2) is not None
    groups = {e["title"]: e["groupID"] for e in api_get(crashray, "events/?limit=100")
              if e["title"] in titles}
    assert groups == {titles[0]: a["id"], titles[1]: new_id}
    send_release(crashray, events[1], "shop@1")  # B's errors now land in the new issue
    wait_until(lambda: next((i for i in api_get(crashray, "issues/?query=")
                             if i["id"] == new_id and i["count"] == "2"), None), 15,
               "the new issue to count the next B event")
    everything = httpx.delete(f"{crashray.base_url}/api/0/issues/{new_id}/hashes/?{query}",
                              headers=auth)
    assert everything.status_code == 400  # all of an issue's hashes cannot leave it


def test_stack_trace_rules_set_through_the_api_stop_frames_from_splitting_issues(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    url = f"{crashray.base_url}/api/0/projects/crashray/default/"
    auth = {"Authorization": f"Bearer {crashray.info.api_token}"}
    bad = httpx.put(url, headers=auth, json={"groupingEnhancements": "function:x +sideways"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("groupingEnhancements: line 1")
    saved = httpx.put(url, headers=auth, json={
        "groupingEnhancements": f"function:retry_{marker}_* -group"})
    assert saved.status_code == 200
    time.sleep(1.0)  # consumers re-read project settings every project_settings_refresh_s
    title = f"Frames{marker}: timeout"
    for attempt in ("first", "second"):  # different retry wrappers, same failure
        event = {**corpus_event(corpus_dir), "exception": {"values": [{
            "type": f"Frames{marker}", "value": "timeout", "stacktrace": {"frames": [
                {"function": f"retry_{marker}_{attempt}", "module": "shop.retry", "in_app": True},
                {"function": "charge", "module": "shop.billing", "in_app": True}]}}]}}
        send_release(crashray, event, "shop@1")
    issue = wait_until(lambda: issue_with_count(crashray, title, 2), 15,
                       "both events in one issue")
    assert issue["title"] == title
    httpx.put(url, headers=auth, json={"groupingEnhancements": ""})


def test_ignored_until_two_more_users_comes_back_with_the_second_new_user(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    title = f"IgnoreUsers{uuid.uuid4().hex[:8]}: noisy"

    def send_as(user_id: str) -> None:
        send_release(crashray, {**corpus_event(corpus_dir), "user": {"id": user_id},
                                "exception": {"values": [{"type": title.split(":")[0],
                                                          "value": "noisy"}]}}, "shop@1")

    send_as("ada")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    assert put_issue(crashray, issue["id"], {"status": "ignored", "statusDetails": {
        "ignoreUserCount": 2}}).json()["statusDetails"]["ignoreUserCountBase"] == 1
    send_as("ada")  # a user already counted
    send_as("bob")  # one new user
    assert wait_until(lambda: issue_with_count(crashray, title, 3), 15, "events 2 and 3")[
        "status"] == "ignored"
    send_as("cy")  # the second new user
    back = wait_until(lambda: issue_with_count(crashray, title, 4), 15, "event 4")
    assert (back["status"], back["substatus"], back["userCount"]) == (
        "unresolved", "escalating", 3)


def test_ignored_until_n_events_in_an_hour_stays_ignored_for_old_events(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    title = f"Burst{uuid.uuid4().hex[:8]}: flaky"
    event = error_event(corpus_dir, title)
    hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).timestamp()
    send_release(crashray, {**event, "timestamp": hours_ago}, "shop@1")
    issue = wait_until(lambda: issue_titled(crashray, title), 15, "the issue")
    ignored = put_issue(crashray, issue["id"], {"status": "ignored", "statusDetails": {
        "ignoreCount": 2, "ignoreWindow": 60}})
    assert ignored.json()["statusDetails"] == {"ignoreCount": 2, "ignoreWindow": 60}
    for _ in range(3):  # three more events, but from three hours ago: not a burst now
        send_release(crashray, {**event, "timestamp": hours_ago}, "shop@1")
    assert wait_until(lambda: issue_with_count(crashray, title, 4), 15, "events 2-4")[
        "status"] == "ignored"
    send_release(crashray, event, "shop@1")  # one in the last hour
    assert wait_until(lambda: issue_with_count(crashray, title, 5), 15, "event 5")[
        "status"] == "ignored"
    send_release(crashray, event, "shop@1")  # the second in the last hour
    back = wait_until(lambda: issue_with_count(crashray, title, 6), 15, "event 6")
    assert (back["status"], back["substatus"]) == ("unresolved", "escalating")
    activity = httpx.get(f"{crashray.base_url}/api/0/issues/{issue['id']}/activity/",
                         headers={"Authorization": f"Bearer {crashray.info.api_token}"},
                         timeout=10).json()
    assert activity[0]["data"] == {"reason": "ignoreCount", "ignoreCount": 2,
                                   "ignoreWindow": 60}
