"""Per-organization backlog caps in a running Crashray (real Ray and Serve ingest with two
replicas, the machine's PostgreSQL, chDB): an organization whose queued items reach
``max_queued_items_per_org`` (2,000 in this suite) is refused with 429s while another
organization is served, and is served again once its backlog has drained."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import orjson

from events.access import ROLE_SCOPES
from events.grouping import DEFAULT_GROUPING_CONFIG
from events.quotas import ORG_BACKLOG_RETRY_AFTER_S
from storage import postgres
from storage.bootstrap import ensure_project
from storage.tenancy import create_organization
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until


@dataclass(frozen=True)
class Tenant:
    org_id: int
    slug: str
    project_id: int
    key: str
    token: str


def new_tenant(c: RunningCrashray) -> Tenant:
    slug = f"backlog-{uuid.uuid4().hex[:8]}"
    with postgres.connect(c.runtime.postgres_url) as conn:
        org_id = create_organization(conn, slug, slug, None)
        project_id, key = ensure_project(conn, org_id, "default", DEFAULT_GROUPING_CONFIG)
        token = postgres.create_api_token(conn, org_id, "backlog",
                                          sorted(ROLE_SCOPES["owner"]))
        conn.commit()
    return Tenant(org_id, slug, project_id, key, token)


class Sender:
    """Sends a small error event for a tenant and keeps every answer's status."""

    def __init__(self, c: RunningCrashray, tenant: Tenant) -> None:
        self.c, self.tenant = c, tenant
        self.statuses: list[int] = []

    def send(self, client: httpx.Client) -> httpx.Response:
        body = {"message": "backlog test", "level": "error", "platform": "python"}
        response = client.post(f"{self.c.base_url}/api/{self.tenant.project_id}/envelope/",
                               content=gzip_bytes(envelope_bytes(body)),
                               headers=python_sdk_headers(self.tenant.key))
        self.statuses.append(response.status_code)
        return response


def stall_a_backlog(c: RunningCrashray, tenant: Tenant, items: int) -> None:
    """``items`` accepted events of ``tenant`` waiting in the queue, held by a consumer
    that stalled (their claim lasts an hour), as a flood that outruns the consumers
    leaves them."""
    payload = orjson.dumps({"message": "queued earlier", "level": "error"})
    with postgres.connect(c.runtime.postgres_url) as conn:
        conn.execute(
            "INSERT INTO ingest_queue (project_id, organization_id, key_id, item_type,"
            " event_id, received_at, meta, payload, attempts, claimed_until)"
            " SELECT %s, %s, NULL, 'event', md5(%s || g), now(),"
            " '{\"client_ip\": null, \"sent_at\": null, \"item_headers\": {}}', %s, 1,"
            " now() + interval '1 hour' FROM generate_series(1, %s) g",
            (tenant.project_id, tenant.org_id, uuid.uuid4().hex, payload, items))
        conn.commit()


def release_the_backlog(c: RunningCrashray, tenant: Tenant) -> None:
    """The stalled consumer's claim ends; the running consumers work the items off."""
    with postgres.connect(c.runtime.postgres_url) as conn:
        conn.execute("UPDATE ingest_queue SET claimed_until = NULL, attempts = 0"
                     " WHERE organization_id = %s", (tenant.org_id,))
        conn.commit()


def outcomes(c: RunningCrashray, tenant: Tenant) -> dict[tuple[str, str], int]:
    response = httpx.get(
        f"{c.base_url}/api/0/organizations/{tenant.slug}/stats_v2/",
        params=[("field", "sum(quantity)"), ("groupBy", "outcome"), ("groupBy", "reason"),
                ("category", "error"), ("statsPeriod", "2h")],
        headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {(g["by"]["outcome"], g["by"]["reason"]): g["totals"]["sum(quantity)"]
            for g in response.json()["groups"]}


def test_a_flooded_organization_gets_429s_while_another_keeps_getting_200s(
        crashray: RunningCrashray) -> None:
    cap = crashray.settings.max_queued_items_per_org
    flooded, calm = Sender(crashray, new_tenant(crashray)), Sender(crashray, new_tenant(crashray))
    with httpx.Client(timeout=30) as client:
        for sender in (flooded, calm):  # the replicas' key caches learn the new keys
            wait_until(lambda s=sender: s.send(client).status_code == 200, 15,
                       f"{sender.tenant.slug}'s key accepted")
        stall_a_backlog(crashray, flooded.tenant, cap)
        # Each replica sees the backlog within its next check (once a second).
        wait_until(lambda: all(flooded.send(client).status_code == 429 for _ in range(6)),
                   10, "the flooded organization refused")

    def both(_: int) -> tuple[httpx.Response, httpx.Response]:
        return flooded.send(client), calm.send(client)

    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(both, range(40)))
    assert [a.status_code for a, _ in answers] == [429] * 40
    assert [b.status_code for _, b in answers] == [200] * 40
    for refused, _ in answers:
        assert re.fullmatch(rf"{ORG_BACKLOG_RETRY_AFTER_S}:error:organization:org_backlog",
                            refused.headers["X-Sentry-Rate-Limits"])
        assert refused.headers["Retry-After"] == str(ORG_BACKLOG_RETRY_AFTER_S)
        assert "CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG" in refused.json()["causes"][0]

    release_the_backlog(crashray, flooded.tenant)
    with httpx.Client(timeout=30) as client:
        wait_until(lambda: flooded.send(client).status_code == 200, 120,
                   "the flooded organization served again", 0.5)
    # Every answer is accounted for: each refusal as rate limited for its reason, each 200
    # and each event of the backlog as accepted; nothing of it in the other organization.
    expected = {("accepted", ""): flooded.statuses.count(200) + cap,
                ("rate_limited", "org_backlog"): flooded.statuses.count(429)}
    assert set(flooded.statuses) == {200, 429}
    wait_until(lambda: outcomes(crashray, flooded.tenant) == expected, 60,
               f"the flooded organization's outcomes to be {expected}")
    assert outcomes(crashray, calm.tenant) == {("accepted", ""): calm.statuses.count(200)}
