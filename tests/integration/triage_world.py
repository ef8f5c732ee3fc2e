"""Two organizations for the triage tests (test_assign*.py, test_comments*.py): ``crashray``
with its owner ada and bob (a member of team ``backend``), three issues stored by a real
consumer; and ``rivals`` with eve and its team ``intruders``, who must never be assigned,
mentioned or shown anything of ``crashray``.

Real parts: the consumer harness (scratch PostgreSQL built by the migrations, the session's
chDB engine, the FastAPI app in-process), users with user tokens as a client sends them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from tests.integration.consumer_harness import Harness, harness


@dataclass
class World:
    h: Harness
    tokens: dict[str, str]  # username → user token
    user_ids: dict[str, int]
    backend_team: int
    rival_team: int
    issues: dict[str, int]  # error type → issue id

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self.h.token if who == "org-token" else self.tokens[who]
        response: httpx.Response = self.h.api.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        return response

    def issue(self, who: str, issue_id: int) -> dict[str, Any]:
        response = self.call(who, "GET", f"/issues/{issue_id}/")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def search(self, who: str, query: str) -> list[int]:
        response = self.call(who, "GET", f"/projects/{self.h.organization_slug}/"
                             f"{self.h.project_slug}/issues/", params={"query": query})
        assert response.status_code == 200, response.text
        return sorted(int(i["id"]) for i in response.json())


def error_event(error_type: str) -> dict[str, Any]:
    return {"platform": "python", "level": "error",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "exception": {"values": [{"type": error_type, "value": "it broke"}]}}


def build_world(clickhouse: ClickHouseStore, prefix: str) -> Iterator[World]:
    """A fixture body: yields the world, drops its database afterwards."""
    for h in harness(clickhouse, prefix):
        h.enqueue([h.event_item(error_event(t)) for t in ("Alpha", "Beta", "Gamma")])
        consumer = h.consumer(project_settings_refresh_s=0.0)
        while consumer.run_once():
            pass
        issues = {i["metadata"]["type"]: int(i["id"]) for i in h.issues()}
        assert sorted(issues) == ["Alpha", "Beta", "Gamma"]
        with postgres.connect(h.url) as conn:
            tokens, user_ids, teams = _people(conn, h.organization_id)
            conn.commit()
        yield World(h, tokens, user_ids, teams["backend"], teams["intruders"], issues)


def _people(conn: Any, org_id: int) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    rivals = tenancy.create_organization(conn, "rivals", "Rivals", None)
    teams = {"backend": tenancy.create_team(conn, org_id, "backend", "Backend"),
             "intruders": tenancy.create_team(conn, rivals, "intruders", "Intruders")}
    people = {"ada": (org_id, "owner"), "bob": (org_id, "member"), "eve": (rivals, "owner")}
    tokens, user_ids = {}, {}
    for name, (org, role) in people.items():
        user = tenancy.create_user(conn, name, f"{name}@example.com", "correct horse")
        tenancy.add_member(conn, org, user, role)
        user_ids[name] = user
        tokens[name] = tenancy.create_token(
            conn, f"{name}'s", ["event:read", "event:write", "project:read", "project:write",
                                "member:read", "team:read"], user=user)
    tenancy.add_team_member(conn, teams["backend"], org_id, user_ids["bob"])
    return tokens, user_ids, teams
