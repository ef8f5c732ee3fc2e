"""Quotas in a running Crashray: real Ray (two ingest replicas, a rate-limiter actor), the
machine's PostgreSQL and chDB. Each test uses its own project, so limits never leak into
other tests."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import ray

from actors.shared_process import find, process_of
from events.quotas import window_at
from storage import postgres
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.integration.test_pipeline import other_tenant_token
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until


def new_project(c: RunningCrashray) -> tuple[int, str, str]:
    slug = f"quota-{uuid.uuid4().hex[:8]}"
    with postgres.connect(c.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, slug, "v2")
        conn.commit()
    return project_id, slug, key


def api(c: RunningCrashray, method: str, path: str, body: object = None,
        status: int = 200) -> Any:
    response = httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {c.info.api_token}"})
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def event(marker: str) -> dict[str, Any]:
    return {"platform": "python", "level": "error", "exception": {"values": [
        {"type": f"Flood{marker}", "value": "again"}]}}


def post(client: httpx.Client, c: RunningCrashray, project_id: int, key: str,
         body: dict[str, Any]) -> httpx.Response:
    return client.post(f"{c.base_url}/api/{project_id}/envelope/",
                       content=gzip_bytes(envelope_bytes(body)),
                       headers=python_sdk_headers(key))


def wait_for_key(c: RunningCrashray, project_id: int, key: str) -> None:
    """The ingest key caches learn a new key within their refresh."""
    with httpx.Client(timeout=10) as client:
        wait_until(lambda: post(client, c, project_id, key, {"message": "hello"}
                                ).status_code == 200, 15, "the new key accepted")


def set_key_limit(c: RunningCrashray, slug: str, key: str, window: int, count: int) -> None:
    updated = api(c, "PUT", f"projects/crashray/{slug}/keys/{key}/",
                  {"rateLimit": {"window": window, "count": count}})
    assert updated["rateLimit"] == {"window": window, "count": count}
    time.sleep(1.0)  # the rate limiter re-reads quotas every 0.5 s in this suite


def send_concurrently(c: RunningCrashray, project_id: int, key: str, count: int,
                      marker: str, senders: int = 16) -> list[httpx.Response]:
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=senders)) as client, \
            ThreadPoolExecutor(senders) as pool:
        return list(pool.map(lambda _: post(client, c, project_id, key, event(marker)),
                             range(count)))


def stored_events(c: RunningCrashray, slug: str) -> int:
    issues = api(c, "GET", f"projects/crashray/{slug}/issues/")
    return sum(int(i["count"]) for i in issues)


def outcome_totals(c: RunningCrashray, project_id: int) -> dict[str, int]:
    """Events per outcome, as the organization stats endpoint reports them."""
    stats = api(c, "GET", f"organizations/crashray/stats_v2/?field=sum(quantity)"
                f"&groupBy=outcome&category=error&project={project_id}&statsPeriod=2h")
    return {g["by"]["outcome"]: g["totals"]["sum(quantity)"] for g in stats["groups"]}


def wait_for_window_room(organization_id: int, window_s: int, needed_s: float) -> None:
    """Start a burst early in a fixed window, so it cannot straddle two windows."""
    now = time.time()
    left = window_at(organization_id, window_s, now).expires_at - now
    if left < needed_s:
        time.sleep(left + 0.2)


def test_a_key_limited_to_100_a_minute_takes_exactly_100_of_300_concurrent_events(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)  # one message event, category default
    set_key_limit(crashray, slug, key, window=60, count=100)
    wait_for_window_room(1, 60, needed_s=25)
    responses = send_concurrently(crashray, project_id, key, 300, uuid.uuid4().hex[:8])
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 100 and statuses.count(429) == 200
    for refused in (r for r in responses if r.status_code == 429):
        assert re.fullmatch(r"\d+:error:key:key_quota",
                            refused.headers["X-Sentry-Rate-Limits"])
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Only the accepted ones are stored; every one of the 300 is accounted for.
    wait_until(lambda: stored_events(crashray, slug) == 101, 30, "the 100 events stored")
    totals = wait_until(lambda: (t := outcome_totals(crashray, project_id)).get(
        "rate_limited", 0) >= 200 and t, 30, "the outcomes")
    assert totals == {"accepted": 101, "rate_limited": 200}
    # Another organization's token sees none of it.
    other = httpx.get(f"{crashray.base_url}/api/0/organizations/crashray/stats_v2/",
                      params={"field": "sum(quantity)", "category": "error"}, timeout=10,
                      headers={"Authorization": f"Bearer {other_tenant_token(crashray)}"})
    assert other.status_code == 404


def test_another_project_keeps_getting_200s_during_a_flood(crashray: RunningCrashray) -> None:
    flooded_id, flooded_slug, flooded_key = new_project(crashray)
    calm_id, calm_slug, calm_key = new_project(crashray)
    wait_for_key(crashray, flooded_id, flooded_key)
    wait_for_key(crashray, calm_id, calm_key)
    set_key_limit(crashray, flooded_slug, flooded_key, window=3600, count=5)
    marker = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(1) as flood:
        flooding = flood.submit(send_concurrently, crashray, flooded_id, flooded_key, 400,
                                marker, 12)
        with httpx.Client(timeout=30) as client:
            calm = [post(client, crashray, calm_id, calm_key, event(marker)).status_code
                    for _ in range(40)]
        flooded = [r.status_code for r in flooding.result()]
    assert calm == [200] * 40
    assert flooded.count(200) == 5 and flooded.count(429) == 395
    wait_until(lambda: stored_events(crashray, calm_slug) == 41, 30, "the calm project's events")


def test_a_killed_rate_limiter_comes_back_without_resetting_the_window(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)
    set_key_limit(crashray, slug, key, window=3600, count=20)
    wait_for_window_room(1, 3600, needed_s=120)
    marker = uuid.uuid4().hex[:8]
    first = send_concurrently(crashray, project_id, key, 15, marker, senders=4)
    assert [r.status_code for r in first] == [200] * 15
    shard = find(f"crashray-ratelimit-{1 % crashray.settings.rate_limit_shards}")
    ray.kill(process_of(shard), no_restart=False)

    def restarted() -> bool:
        try:
            return ray.get(shard.stats.remote(), timeout=10)["checked"] == 0
        except ray.exceptions.RayError:  # still restarting
            return False

    wait_until(restarted, 60, "the rate limiter restarted (with nothing checked yet)")
    second = [r.status_code for r in send_concurrently(crashray, project_id, key, 10, marker,
                                                       senders=4)]
    assert second.count(200) == 5 and second.count(429) == 5


def test_key_rate_limits_are_validated_and_scoped(crashray: RunningCrashray) -> None:
    _, slug, key = new_project(crashray)
    keys = api(crashray, "GET", f"projects/crashray/{slug}/keys/")
    assert [k["public"] for k in keys] == [key] and keys[0]["rateLimit"] is None
    assert keys[0]["dsn"]["public"].endswith(f"{key}@127.0.0.1:{crashray.settings.port}/"
                                             f"{keys[0]['projectId']}")
    bad = api(crashray, "PUT", f"projects/crashray/{slug}/keys/{key}/",
              {"rateLimit": {"window": 0, "count": 5}}, status=400)
    assert "rateLimit.window" in bad["detail"]
    # A key of another project, addressed through this one, does not exist here.
    _, other_slug, other_key = new_project(crashray)
    api(crashray, "PUT", f"projects/crashray/{slug}/keys/{other_key}/",
        {"rateLimit": {"window": 60, "count": 1}}, status=404)
    assert api(crashray, "GET", f"projects/crashray/{other_slug}/keys/")[0]["rateLimit"] is None


def test_organization_quotas_are_managed_within_the_organization(
        crashray: RunningCrashray) -> None:
    project_id, _, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)
    created = api(crashray, "POST", "organizations/crashray/quotas/", {
        "scope": "project", "scopeId": project_id, "categories": ["error"], "window": 3600,
        "limit": 0, "reasonCode": "disabled"}, status=201)
    assert created["scopeId"] == project_id
    wrong = api(crashray, "POST", "organizations/crashray/quotas/", {
        "scope": "project", "scopeId": 999_999, "window": 60, "limit": 1}, status=404)
    assert "999999" in wrong["detail"]
    api(crashray, "POST", "organizations/crashray/quotas/", {
        "scope": "project", "categories": ["errors"], "window": 60, "limit": 1}, status=400)
    time.sleep(1.0)
    with httpx.Client(timeout=10) as client:
        refused = post(client, crashray, project_id, key, event("Disabled"))
    assert refused.status_code == 429
    assert refused.headers["X-Sentry-Rate-Limits"].endswith(":error:project:disabled")
    api(crashray, "DELETE", f"organizations/crashray/quotas/{created['id']}/", status=204)
    assert all(q["id"] != created["id"]
               for q in api(crashray, "GET", "organizations/crashray/quotas/"))


def test_spike_protection_caps_a_project_at_its_floor_and_can_be_turned_off(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)  # one event this hour already
    settings = api(crashray, "PUT", f"projects/crashray/{slug}/",
                   {"spikeProtection": {"floorPerHour": 10}})
    assert settings["spikeProtection"] == {"enabled": True, "multiplier": 10.0,
                                           "floorPerHour": 10}
    # The first event's lease (under the default floor) is handed back within a lease's
    # life plus a flush, and the new floor is read within the refresh.
    time.sleep(2.5)
    wait_for_window_room(1, 3600, needed_s=60)
    responses = send_concurrently(crashray, project_id, key, 15, uuid.uuid4().hex[:8], 4)
    assert [r.status_code for r in responses].count(200) == 9
    refused = next(r for r in responses if r.status_code == 429)
    assert re.fullmatch(r"\d+:error:project:spike_protection",
                        refused.headers["X-Sentry-Rate-Limits"])
    api(crashray, "PUT", f"projects/crashray/{slug}/", {"spikeProtection": {"enabled": False}})
    # Replicas forget a refusal within the settings refresh (0.5 s in this suite).
    with httpx.Client(timeout=10) as client:
        wait_until(lambda: post(client, crashray, project_id, key, event("off")).status_code
                   == 200, 15, "events accepted again")


def test_unreadable_and_oversized_envelopes_are_counted_as_invalid_outcomes(
        crashray: RunningCrashray) -> None:
    project_id, _, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)
    url = f"{crashray.base_url}/api/{project_id}/envelope/"
    headers = python_sdk_headers(key, gzipped=False)
    bad = httpx.post(url, content=b'{"event_id": "x"}\n{"type": "event", "length": 99}\n{}',
                     headers=headers, timeout=10)
    assert bad.status_code == 400
    huge = httpx.post(url, content=b"x" * (crashray.settings.max_request_bytes + 1),
                      headers=headers, timeout=30)
    assert huge.status_code == 413

    def invalid() -> dict[str, int] | None:
        stats = api(crashray, "GET", "organizations/crashray/stats_v2/?field=sum(quantity)"
                    f"&groupBy=reason&outcome=invalid&category=error&project={project_id}")
        found = {g["by"]["reason"]: g["totals"]["sum(quantity)"] for g in stats["groups"]}
        return found if len(found) == 2 else None

    assert wait_until(invalid, 30, "the invalid outcomes") == {"invalid_envelope": 1,
                                                               "too_large": 1}


def test_leases_of_a_roomy_limit_are_counted_back_exactly(crashray: RunningCrashray) -> None:
    """A key limited to 20,000 an hour: a replica admits on a lease (200 units, 1 %) instead
    of asking per batch, and hands back what it did not use, so usage ends at what was
    sent."""
    project_id, slug, key = new_project(crashray)
    wait_for_key(crashray, project_id, key)
    set_key_limit(crashray, slug, key, window=3600, count=20_000)
    wait_for_window_room(1, 3600, needed_s=60)
    shard = find(f"crashray-ratelimit-{1 % crashray.settings.rate_limit_shards}")
    checked_before = ray.get(shard.stats.remote())["checked"]
    responses = send_concurrently(crashray, project_id, key, 300, uuid.uuid4().hex[:8], 8)
    assert [r.status_code for r in responses] == [200] * 300
    # Many requests were admitted on a lease without asking the rate limiter (leases on a
    # quota hold at most 1 % of it together, so the second replica mostly asks).
    assert ray.get(shard.stats.remote())["checked"] - checked_before < 200
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        row = conn.execute("SELECT id FROM project_keys WHERE public_key = %s",
                           (key,)).fetchone()
    assert row is not None

    def key_usage() -> int | None:
        usage = api(crashray, "GET", "organizations/crashray/quota-usage/")
        return next((u["used"] for u in usage
                     if u["quota"] == f"key{row[0]}" and u["scopeId"] == row[0]), None)

    wait_until(lambda: key_usage() == 300, 15, "the leases handed back")
