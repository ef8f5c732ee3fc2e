"""A project's environments (``GET /api/0/projects/{org}/{project}/environments/``), the
stream's ``environment`` and ``statsPeriod`` as the dashboard's pickers send them, and a
team's projects (``GET /api/0/teams/{org}/{team}/projects/``), over real PostgreSQL and
chDB with events stored by a real consumer. The tenant line: another project's
environments are not listed, another organization's owner sees neither list.

Real parts: the consumer harness (tests/integration/consumer_harness.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from tests.integration.consumer_harness import Harness, harness

pytestmark = pytest.mark.integration


@dataclass
class Envs:
    h: Harness
    issues: dict[str, int]  # error type → issue id
    eve: str  # the owner of another organization
    team: str  # the slug of the team owning the harness's project
    other_project: str

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        response: httpx.Response = self.h.api.get(
            path, params=params, headers={"Authorization": f"Bearer {token or self.h.token}"})
        return response

    def stream(self, **params: str) -> list[str]:
        response = self.get(f"/projects/{self.h.organization_slug}/{self.h.project_slug}"
                            "/issues/", query="", **params)
        assert response.status_code == 200, response.text
        return sorted(i["metadata"]["type"] for i in response.json())


def event(error_type: str, environment: str, age: dt.timedelta) -> dict[str, Any]:
    return {"platform": "python", "level": "error", "environment": environment,
            "timestamp": (dt.datetime.now(dt.UTC) - age).isoformat(),
            "exception": {"values": [{"type": error_type, "value": "it broke"}]}}


@pytest.fixture
def envs(chdb_store: ClickHouseStore) -> Iterator[Envs]:
    for h in harness(chdb_store, "crashray_envs"):
        with postgres.connect(h.url) as conn:
            team_row = conn.execute(
                "SELECT t.slug FROM project_teams pt JOIN teams t ON t.id = pt.team_id"
                " WHERE pt.project_id = %s", (h.project_id,)).fetchone()
            other = tenancy.create_project(conn, h.organization_id, "other", "Other",
                                           DEFAULT_GROUPING_CONFIG)
            rivals = tenancy.create_organization(conn, "rivals", "Rivals", None)
            eve = tenancy.create_user(conn, "eve", "eve@example.com", "correct horse")
            tenancy.add_member(conn, rivals, eve, "owner")
            eve_token = tenancy.create_token(conn, "eve's", ["project:read", "event:read",
                                                            "team:read"], user=eve)
            conn.commit()
        assert team_row is not None
        h.enqueue([
            h.event_item(event("Alpha", "production", dt.timedelta(minutes=5))),
            h.event_item(event("Beta", "staging", dt.timedelta(days=3))),
            h.event_item(event("Gamma", "production", dt.timedelta(hours=1))),
            h.event_item(event("Gamma", "staging", dt.timedelta(days=10))),
            # Another project of the same organization, in an environment of its own.
            h.event_item(event("Delta", "other-only", dt.timedelta(minutes=5)),
                         project_id=other.id),
        ])
        consumer = h.consumer(project_settings_refresh_s=0.0)
        while consumer.run_once():
            pass
        found = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/issues/",
                      statsPeriod="30d")
        issues = {i["metadata"]["type"]: int(i["id"]) for i in found}
        assert sorted(issues) == ["Alpha", "Beta", "Gamma"]
        yield Envs(h, issues, eve_token, str(team_row[0]), "other")


def environments_path(e: Envs, project: str | None = None) -> str:
    return f"/projects/{e.h.organization_slug}/{project or e.h.project_slug}/environments/"


def test_a_project_lists_the_environments_of_its_own_events_in_sentrys_shape(
        envs: Envs) -> None:
    response = envs.get(environments_path(envs))
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [e["name"] for e in listed] == ["production", "staging"]
    assert all(e["isHidden"] is False and e["id"].isdigit() for e in listed)
    assert len({e["id"] for e in listed}) == 2
    # Stable ids: the same environment answers the same id again.
    assert envs.get(environments_path(envs)).json() == listed
    assert envs.get(environments_path(envs), visibility="all").json() == listed
    assert envs.get(environments_path(envs), visibility="hidden").json() == []
    # The other project's own environment, and only it, is listed under that project.
    other = envs.get(environments_path(envs, envs.other_project)).json()
    assert [e["name"] for e in other] == ["other-only"]


def test_a_bad_visibility_is_refused_naming_the_parameter(envs: Envs) -> None:
    response = envs.get(environments_path(envs), visibility="secret")
    assert response.status_code == 400
    assert "visibility" in response.json()["detail"]


def test_another_organization_cannot_list_a_projects_environments_or_a_teams_projects(
        envs: Envs) -> None:
    assert envs.get(environments_path(envs), token=envs.eve).status_code == 404
    team_path = f"/teams/{envs.h.organization_slug}/{envs.team}/projects/"
    assert envs.get(team_path, token=envs.eve).status_code == 404
    # Naming the other organization in the URL does not reach our project either.
    assert envs.get(f"/projects/rivals/{envs.h.project_slug}/environments/",
                    token=envs.eve).status_code == 404


def test_the_stream_narrows_to_an_environment_and_a_period(envs: Envs) -> None:
    assert envs.stream() == ["Alpha", "Beta", "Gamma"]
    assert envs.stream(environment="staging") == ["Beta", "Gamma"]
    assert envs.stream(environment="production") == ["Alpha", "Gamma"]
    assert envs.stream(statsPeriod="24h") == ["Alpha", "Gamma"]
    assert envs.stream(statsPeriod="7d") == ["Alpha", "Beta", "Gamma"]
    # Both: Gamma's staging event is 10 days old, Beta's 3 days.
    assert envs.stream(environment="staging", statsPeriod="7d") == ["Beta"]
    assert envs.stream(environment="staging", statsPeriod="24h") == []
    assert envs.stream(environment="nowhere") == []


def test_a_bad_period_is_refused_with_what_to_send(envs: Envs) -> None:
    response = envs.get(f"/projects/{envs.h.organization_slug}/{envs.h.project_slug}"
                        "/issues/", statsPeriod="a week")
    assert response.status_code == 400
    assert "statsPeriod" in response.json()["detail"]


def test_a_team_lists_its_projects(envs: Envs) -> None:
    response = envs.get(f"/teams/{envs.h.organization_slug}/{envs.team}/projects/")
    assert response.status_code == 200, response.text
    assert [p["slug"] for p in response.json()] == [envs.h.project_slug]
    assert envs.get(f"/teams/{envs.h.organization_slug}/nosuchteam/projects/"
                    ).status_code == 404


def test_an_issues_latest_event_within_an_environment_and_period(envs: Envs) -> None:
    """What the issue page asks when an environment or a period is chosen (issue.js's
    chosenEvent): the issue's newest event matching ``environment:"…" timestamp:-…``."""
    gamma = envs.issues["Gamma"]

    def latest(query: str) -> list[str]:
        response = envs.get(f"/issues/{gamma}/events/", query=query, limit="1")
        assert response.status_code == 200, response.text
        return [next(t["value"] for t in e["tags"] if t["key"] == "environment")
                for e in response.json()]

    assert latest('environment:"production"') == ["production"]
    assert latest('environment:"staging"') == ["staging"]
    assert latest('environment:"staging" timestamp:-7d') == []
    assert latest('environment:"staging" timestamp:-30d') == ["staging"]
    assert latest("timestamp:-24h") == ["production"]


def test_a_custom_range_keeps_the_issues_with_an_event_between_start_and_end(
        envs: Envs) -> None:
    now = dt.datetime.now(dt.UTC)

    def between(start: dt.timedelta, end: dt.timedelta, **params: str) -> list[str]:
        return envs.stream(start=(now - start).isoformat(), end=(now - end).isoformat(),
                           **params)

    # Two to four days ago: only Beta's event (Alpha and Gamma were seen since, not then).
    assert between(dt.timedelta(days=4), dt.timedelta(days=2)) == ["Beta"]
    assert between(dt.timedelta(days=11), dt.timedelta(days=9)) == ["Gamma"]
    assert between(dt.timedelta(days=11), dt.timedelta(days=2)) == ["Beta", "Gamma"]
    assert between(dt.timedelta(hours=2), dt.timedelta(0)) == ["Alpha", "Gamma"]
    assert between(dt.timedelta(days=11), dt.timedelta(days=2),
                   environment="production") == []
    refused = envs.get(f"/projects/{envs.h.organization_slug}/{envs.h.project_slug}"
                       "/issues/", start=now.isoformat())
    assert refused.status_code == 400 and "end" in refused.json()["detail"]
