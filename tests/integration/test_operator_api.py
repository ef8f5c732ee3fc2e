"""The operator API (serve_apps/api/operations.py): an organization's owners list, replay
and drop their own dead letters and read their organization's figures; another
organization's owner can neither see nor replay them; a member who is not an owner is
refused; the instance's figures are for instance admins only, and on the running instance
they show its nodes, deployments, actors and consumers.

Real parts: PostgreSQL (a scratch database built by the migrations), the ClickHouse engine
(chDB), the real consumer code, and for the last test the integration suite's running
Crashray (Ray, Serve) over HTTP."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from tests.integration.conftest import RunningCrashray
from tests.integration.consumer_harness import Harness, harness
from tests.integration.test_dead_letters import poison
from tests.support import error_event

pytestmark = pytest.mark.integration


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_operator")


def user_token(url: str, org_id: int | None, role: str | None, *,
               superuser: bool = False) -> str:
    """A new user (a member of ``org_id`` with ``role``, when given) and a token of theirs
    carrying every scope (what they may do is cut down to their role)."""
    from events.access import ALL_SCOPES

    with postgres.connect(url) as conn:
        user = tenancy.create_user(conn, f"u-{uuid.uuid4().hex[:8]}", None,
                                   f"pw-{uuid.uuid4().hex}", superuser=superuser)
        if org_id is not None and role is not None:
            tenancy.add_member(conn, org_id, user, role)
        token = tenancy.create_token(conn, "operator", sorted(ALL_SCOPES), user=user)
        conn.commit()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dead_letter_ids(h: Harness, corpus_dir: Path, count: int) -> list[int]:
    """``count`` dead letters of the harness's organization (events of a deleted project)."""
    before = {row[0] for row in h.dead_letters()}
    # With a good event beside them, as in real batches (the consumer then singles out
    # the items that fail on their own).
    h.enqueue([poison(h, corpus_dir, h.project_id + 1) for _ in range(count)]
              + [h.event_item(error_event(corpus_dir, "GoodNeighbour: fine"))])
    assert h.consumer().run_once() == count + 1
    return sorted(int(row[0]) for row in h.dead_letters() if row[0] not in before)


def test_an_owner_lists_replays_and_drops_the_organizations_dead_letters(
        h: Harness, corpus_dir: Path) -> None:
    ids = dead_letter_ids(h, corpus_dir, 3)
    org = f"/organizations/{h.organization_slug}"
    listed = h.get(f"{org}/dead-letters/items/")
    assert sorted(int(d["id"]) for d in listed) == ids
    assert all(d["project"] is None and d["itemType"] == "event" for d in listed)
    assert all("foreign key" in d["error"] for d in listed)

    replayed = h.api.post(f"{org}/dead-letters/replay/", json={"ids": [str(ids[0])]},
                          headers=bearer(h.token))
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"replayed": [str(ids[0])], "notFound": []}
    assert h.queue_size() == 1  # back in the queue, as if never claimed
    figures = h.get(f"{org}/operations/")
    assert figures["queue"]["items"] == 1 and figures["deadLetters"] == 2
    # Sizes per table are the instance's, not the organization's: instance admins only.
    assert figures["storage"] is None

    dropped = h.api.post(f"{org}/dead-letters/drop/", json={"all": True},
                         headers=bearer(h.token))
    assert dropped.json()["dropped"] == [str(i) for i in ids[1:]]
    assert h.get(f"{org}/dead-letters/")["total"] == 0
    both = h.api.post(f"{org}/dead-letters/drop/", json={"ids": [1], "all": True},
                      headers=bearer(h.token))
    assert both.status_code == 400 and "not both" in both.json()["detail"]


def test_another_organizations_owner_can_neither_see_nor_replay_them(
        h: Harness, corpus_dir: Path) -> None:
    ids = dead_letter_ids(h, corpus_dir, 2)
    with postgres.connect(h.url) as conn:
        other = tenancy.create_organization(conn, f"b-{uuid.uuid4().hex[:8]}", "B", None)
        other_slug = tenancy.get_organization(conn, other).slug
        conn.commit()
    owner_b = bearer(user_token(h.url, other, "owner"))
    # A's pages answer 404 to B's owner: A's organization does not exist for them.
    for path in ("dead-letters/", "dead-letters/items/", "operations/"):
        seen = h.api.get(f"/organizations/{h.organization_slug}/{path}", headers=owner_b)
        assert seen.status_code == 404, path
    assert h.api.post(f"/organizations/{h.organization_slug}/dead-letters/replay/",
                      json={"ids": ids}, headers=owner_b).status_code == 404
    # Through their own organization, A's ids are not found, and "all" is only B's (none).
    refused = h.api.post(f"/organizations/{other_slug}/dead-letters/replay/",
                         json={"ids": ids}, headers=owner_b)
    assert refused.status_code == 404 and str(ids[0]) in refused.json()["detail"]
    assert h.api.post(f"/organizations/{other_slug}/dead-letters/drop/", json={"all": True},
                      headers=owner_b).json() == {"dropped": [], "notFound": []}
    assert h.api.get(f"/organizations/{other_slug}/dead-letters/items/",
                     headers=owner_b).json() == []
    assert sorted(int(r[0]) for r in h.dead_letters()) == ids and h.queue_size() == 0
    # Nor are the instance's figures theirs.
    assert h.api.get("/operations/", headers=owner_b).status_code == 403
    assert h.api.post("/operations/dead-letters/replay/", json={"ids": ids},
                      headers=owner_b).status_code == 403


@pytest.mark.parametrize("role", ["member", "admin", "manager"])
def test_a_member_who_is_not_an_owner_is_refused(h: Harness, corpus_dir: Path,
                                                 role: str) -> None:
    ids = dead_letter_ids(h, corpus_dir, 1)
    member = bearer(user_token(h.url, h.organization_id, role))
    org = f"/organizations/{h.organization_slug}"
    for path in ("dead-letters/items/", "operations/"):
        refused = h.api.get(f"{org}/{path}", headers=member)
        assert refused.status_code == 403 and "org:admin" in refused.json()["detail"]
    replay = h.api.post(f"{org}/dead-letters/replay/", json={"ids": ids}, headers=member)
    assert replay.status_code == 403
    assert [int(r[0]) for r in h.dead_letters()] == ids


def test_instance_admins_see_and_replay_every_organizations_dead_letters(
        h: Harness, corpus_dir: Path) -> None:
    ids = dead_letter_ids(h, corpus_dir, 2)
    admin = bearer(user_token(h.url, None, None, superuser=True))
    figures = h.api.get("/operations/", headers=admin)
    assert figures.status_code == 200, figures.text
    body: dict[str, Any] = figures.json()
    assert body["deadLetters"] == {"total": 2, "byItemType": {"event": 2}}
    assert body["queue"]["waiting"] == 0 and body["queue"]["oldestAgeSeconds"] == 0
    # Storage sizes and retention (storage/sizes.py, as `crashray storage` prints them):
    # the dead letters are rows of their table, the retention horizon is the setting's.
    storage = body["storage"]
    tables = {(t["store"], t["table"]): t for t in storage["tables"]}
    assert tables[("postgres", "ingest_dead_letters")]["rows"] == 2
    assert tables[("postgres", "ingest_dead_letters")]["bytes"] > 0
    assert storage["retention"]["horizonDays"] == 90
    assert {d["rule"] for d in storage["due"]} >= {"processed_events", "issue_activity"}
    listed = h.api.get("/operations/dead-letters/", headers=admin).json()
    assert [d["organizationId"] for d in listed] == [str(h.organization_id)] * 2
    replayed = h.api.post("/operations/dead-letters/replay/", json={"all": True},
                          headers=admin)
    assert replayed.json()["replayed"] == [str(i) for i in ids]
    assert h.queue_size() == 2 and h.dead_letters() == []
    # An organization token of an owner-level scope is no instance admin.
    with postgres.connect(h.url) as conn:
        org_token = tenancy.create_token(conn, "ci", ["org:admin"], org_id=h.organization_id)
        conn.commit()
    assert h.api.get("/operations/", headers=bearer(org_token)).status_code == 403


def test_the_running_instance_shows_its_nodes_deployments_actors_and_consumers(
        crashray: RunningCrashray, corpus_dir: Path) -> None:
    admin = bearer(user_token(crashray.runtime.postgres_url, None, None, superuser=True))
    api = f"{crashray.base_url}/api/0"
    # Something to count: two events through real ingest.
    for n in range(2):
        event = error_event(corpus_dir, f"OperatorFigures: event {n}")
        httpx.post(f"{crashray.base_url}/api/{crashray.info.dsn.rsplit('/', 1)[1]}/store/",
                   json=event, timeout=30,
                   headers={"X-Sentry-Auth": "Sentry sentry_version=7, sentry_key="
                            f"{crashray.public_key}"}).raise_for_status()
    started = time.monotonic()
    found = httpx.get(f"{api}/operations/", headers=admin, timeout=60)
    # Within the operator page's poll, though the local Ray runs without the API server
    # that Ray's state API needs (cluster/ray_head.py): each of its calls waited 40 s.
    assert time.monotonic() - started < 10
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["ray"]["ok"] is True
    [node] = body["nodes"]
    assert node["alive"] and re.fullmatch(r"http://\S+:\d+/metrics", node["metrics"])
    assert body["actorsByNodeKnown"] is True
    assert "crashray-consumer-0" in node["actors"], node
    assert [a for a in node["actors"] if "ingest#ingest" in a], node
    deployments = {(d["application"], d["status"]) for d in body["deployments"]}
    # On one node the ingest replicas answer the API too (CRASHRAY_API_OWN_REPLICAS unset):
    # this very call came through them, and no application of the API's own runs.
    assert {app for app, _ in deployments} == {"ingest"}
    assert not [a for a in node["actors"] if "api#api" in a], node
    assert all(status == "healthy" for _, status in deployments)
    assert any(name.startswith("crashray-consumer-") for name in body["actors"])
    assert body["consumers"] and all(c["ok"] for c in body["consumers"])
    assert set(body["intake"]) >= {"requestsAccepted", "itemsRefused", "windowSeconds"}
    # Not for anyone else.
    with psycopg.connect(crashray.runtime.postgres_url) as conn:
        org_id = tenancy.organization_id(conn, crashray.info.organization_slug)
    owner = bearer(user_token(crashray.runtime.postgres_url, org_id, "owner"))
    assert httpx.get(f"{api}/operations/", headers=owner, timeout=30).status_code == 403
    org = httpx.get(f"{api}/organizations/{crashray.info.organization_slug}/operations/",
                    headers=owner, timeout=30)
    assert org.status_code == 200 and set(org.json()) >= {"queue", "outcomesLastHours"}
